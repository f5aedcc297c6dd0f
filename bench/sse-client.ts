// A minimal SSE-over-HTTP/1.1 client on a raw socket (TLS when given a CA, as nginx serves): status line, chunked transfer decoding,
// and an incremental SSE parser that only builds strings for complete events. Kept small and
// allocation-light so that one load process can hold thousands of streams without becoming
// the bottleneck. Line endings: LF and CRLF (what the services and nginx send); a lone CR,
// which the spec also allows, is not handled.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls';
import { StringDecoder } from 'node:string_decoder';

export interface StreamTarget {
  host: string;
  port: number;
  path: string;
  localAddress?: string;
  /** The CA to verify the server with: HTTPS (HTTP/1.1 over TLS). Without: plain HTTP. */
  ca?: string;
  /** Sent as Last-Event-ID: a reconnect, as EventSource makes it. */
  lastEventId?: string;
}

export interface StreamHandlers {
  /** The 200 head and the first body bytes arrived: the server holds the stream. */
  opened(stream: SseStream): void;
  /** `now`: performance.timeOrigin + performance.now() when the bytes were read. */
  event(type: string, data: string, now: number): void;
  /** Not opened: an error status, a refused connection, a `busy` stream, a timeout. */
  failed(stream: SseStream, reason: string): void;
  /** An opened stream ended (by either side). */
  closed(stream: SseStream): void;
}

/**
 * One TLS context per CA for the whole process: given `ca` itself, every connect would parse the
 * PEM and build a certificate store again, which cost the load generator more than the handshake.
 */
const contexts = new Map<string, SecureContext>();
function contextFor(ca: string): SecureContext {
  let context = contexts.get(ca);
  if (!context) {
    context = createSecureContext({ ca });
    contexts.set(ca, context);
  }
  return context;
}

// Where the chunked decoder is within the body.
const Chunk = { Size: 0, Data: 1, Crlf: 2 } as const;

export class SseStream {
  readonly socket: Socket;
  isOpen = false;
  /** The last `id:` and `retry:` the stream carried (what EventSource reconnects with). */
  lastEventId: string;
  retryMs: number | undefined;
  isClosed = false;
  private head: string | undefined = '';
  private chunked = false;
  private chunkState: number = Chunk.Size;
  private chunkLeft = 0;
  private sizeLine = '';
  private readonly decoder = new StringDecoder('utf8');
  private rest = '';
  private type = '';
  private data: string | undefined;

  constructor(
    target: StreamTarget,
    private readonly handlers: StreamHandlers,
  ) {
    this.lastEventId = target.lastEventId ?? '';
    const where = { host: target.host, port: target.port, ...(target.localAddress ? { localAddress: target.localAddress } : {}) };
    // Written before the handshake ends, the request waits in the TLS socket until it has.
    const socket = target.ca ? tlsConnect({ ...where, secureContext: contextFor(target.ca), ALPNProtocols: ['http/1.1'] }) : connect(where);
    this.socket = socket;
    socket.setNoDelay(true);
    socket.write(
      `GET ${target.path} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n` +
        `${target.lastEventId ? `Last-Event-ID: ${target.lastEventId}\r\n` : ''}\r\n`,
    );
    socket.on('data', (buf: Buffer) => this.onData(buf));
    socket.on('error', (err) => this.end(err.message));
    socket.on('close', () => this.end('connection closed'));
  }

  close(): void {
    this.socket.destroy();
  }

  private end(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.isOpen) this.handlers.closed(this);
    else this.handlers.failed(this, reason);
  }

  private onData(buf: Buffer): void {
    const now = performance.timeOrigin + performance.now();
    let at = 0;
    if (this.head !== undefined) {
      this.head += buf.toString('latin1');
      const endOfHead = this.head.indexOf('\r\n\r\n');
      if (endOfHead < 0) return;
      const head = this.head.slice(0, endOfHead);
      at = buf.length - (this.head.length - endOfHead - 4);
      this.head = undefined;
      if (!/^HTTP\/1\.[01] 200 /.test(head)) {
        this.end(head.split('\r\n', 1)[0] ?? 'no status line');
        this.socket.destroy();
        return;
      }
      this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
      if (at === buf.length) return;
    }
    if (this.chunked) this.dechunk(buf, at, now);
    else this.text(this.decoder.write(at === 0 ? buf : buf.subarray(at)), now);
  }

  private dechunk(buf: Buffer, from: number, now: number): void {
    let i = from;
    while (i < buf.length) {
      if (this.chunkState === Chunk.Size) {
        const nl = buf.indexOf(10, i);
        if (nl < 0) {
          this.sizeLine += buf.toString('latin1', i);
          return;
        }
        this.sizeLine += buf.toString('latin1', i, nl);
        i = nl + 1;
        const size = Number.parseInt(this.sizeLine, 16); // stops at ';' extensions and the CR
        this.sizeLine = '';
        if (size === 0) {
          this.socket.destroy(); // the last chunk: the server ended the stream
          return;
        }
        this.chunkLeft = size;
        this.chunkState = Chunk.Data;
      } else if (this.chunkState === Chunk.Data) {
        const n = Math.min(this.chunkLeft, buf.length - i);
        this.text(this.decoder.write(buf.subarray(i, i + n)), now);
        i += n;
        this.chunkLeft -= n;
        if (this.chunkLeft === 0) this.chunkState = Chunk.Crlf;
      } else {
        const nl = buf.indexOf(10, i);
        if (nl < 0) return;
        i = nl + 1;
        this.chunkState = Chunk.Size;
      }
    }
  }

  private text(chunk: string, now: number): void {
    if (!this.isOpen) {
      this.isOpen = true;
      this.handlers.opened(this);
    }
    const text = this.rest === '' ? chunk : this.rest + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      if (end === start) {
        // Blank line: dispatch (an event without data is not dispatched, as in browsers).
        if (this.data !== undefined) this.handlers.event(this.type || 'message', this.data, now);
        this.type = '';
        this.data = undefined;
      } else if (text.charCodeAt(start) !== 58 /* ':' comment */) {
        const colon = text.indexOf(':', start);
        const hasValue = colon >= 0 && colon < end;
        const field = hasValue ? text.slice(start, colon) : text.slice(start, end);
        let valueStart = hasValue ? colon + 1 : end;
        if (valueStart < end && text.charCodeAt(valueStart) === 32) valueStart += 1;
        if (field === 'data') {
          const value = text.slice(valueStart, end);
          this.data = this.data === undefined ? value : `${this.data}\n${value}`;
        } else if (field === 'event') {
          this.type = text.slice(valueStart, end);
        } else if (field === 'id') {
          this.lastEventId = text.slice(valueStart, end);
        } else if (field === 'retry') {
          const value = text.slice(valueStart, end);
          if (/^\d+$/.test(value)) this.retryMs = Number(value);
        }
      }
      start = nl + 1;
    }
    this.rest = start === text.length ? '' : text.slice(start);
  }
}
