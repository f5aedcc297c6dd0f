import type { Server } from 'node:http';
import type { Socket } from 'node:net';

const REASONS: Record<string, [number, string, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers_too_large', 'The request headers are too large.'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'request_timeout', 'The request took too long to arrive.'],
};

/**
 * Requests Node's HTTP parser refuses (oversized headers, malformed lines, bytes that could
 * inject a header) never reach Koa; answer them in the same JSON shape as every other error.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Bytes refused behind a response already under way on this connection (an open stream, a
    // pipelined request): an HTTP answer now would land inside that response's body. Node's own
    // handler makes the same check.
    const current = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (!socket.writable || err.code === 'ECONNRESET' || current?.headersSent === true) {
      socket.destroy();
      return;
    }
    const [status, text, code, message] = REASONS[err.code ?? ''] ??
      [400, 'Bad Request', 'bad_request', 'The request is malformed.'];
    const body = JSON.stringify({ error: code, message });
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
