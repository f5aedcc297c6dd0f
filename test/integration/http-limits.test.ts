import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { eventually } from '../helpers/wait.js';

// The service's own port (what nginx normally shields): a request must arrive whole within
// HTTP_REQUEST_TIMEOUT_MS, head and body, or it is cut with a JSON 408; a stream, whose request
// arrived long ago, is not cut. The bound is short here so that no test waits 30 s.

const BOUND_MS = 1_500;
const TOKEN = 'http-limits-token-0123456789';
let broker: Mosquitto;
let svc: RunningService;

beforeAll(async () => {
  broker = await Mosquitto.start();
  svc = await startService({
    MQTT_URL: broker.url, ...isolation('http-limits'), COMMAND_TOKEN: TOKEN,
    HTTP_REQUEST_TIMEOUT_MS: String(BOUND_MS), SSE_HEARTBEAT_MS: '300',
  });
});

afterAll(async () => {
  await svc?.stop();
  await broker?.stop();
});

interface Trickle {
  socket: Socket;
  answer: () => string;
  /** When the server closed the connection, measured from the first byte sent. */
  closedAfterMs: Promise<number>;
  stop(): void;
}

/** Sends `head` at once (if given), then `drip` one byte a second, for as long as the server listens. */
function trickle(head: string, drip: string): Trickle {
  const socket = connect({ port: svc.port, host: '127.0.0.1' });
  let answer = '';
  let timer: NodeJS.Timeout | undefined;
  const startedAt = Date.now();
  socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closedAfterMs = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - startedAt)));
  socket.once('connect', () => {
    socket.write(head);
    let i = 0;
    timer = setInterval(() => {
      if (socket.destroyed || !socket.writable) return clearInterval(timer);
      socket.write(drip[i % drip.length]!);
      i += 1;
    }, 1_000);
  });
  void closedAfterMs.then(() => clearInterval(timer));
  return { socket, answer: () => answer, closedAfterMs, stop: () => { clearInterval(timer); socket.destroy(); } };
}

describe('request time bound on the service port', () => {
  it('cuts a body trickled a byte per second with a JSON 408 within the bound', async () => {
    const body = JSON.stringify({ name: 'ping', params: { pad: 'x'.repeat(200) } });
    const t = trickle(
      `POST /api/devices/d1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
      body,
    );
    try {
      const closedAfter = await t.closedAfterMs;
      expect(t.answer()).toMatch(/^HTTP\/1\.1 408 /);
      expect(t.answer()).toContain('{"error":"request_timeout"');
      // Node checks every BOUND_MS / 10: cut at the bound, not before, and not much after.
      expect(closedAfter).toBeGreaterThanOrEqual(BOUND_MS - 50);
      expect(closedAfter).toBeLessThan(BOUND_MS + 1_000);
    } finally {
      t.stop();
    }
  });

  it('closes a connection whose body still trickles after the answer (a 401 before the body) within the bound', async () => {
    const t = trickle(
      'POST /api/devices/d1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n',
      '{',
    );
    try {
      await eventually(() => t.answer().includes('"error":"unauthorized"'), 'the 401, before the body is read');
      const closedAfter = await t.closedAfterMs;
      expect(closedAfter).toBeLessThan(BOUND_MS + 1_000);
      expect(t.answer().match(/^HTTP\/1\.1 /gm)).toHaveLength(1);
      expect(t.answer()).toMatch(/^HTTP\/1\.1 401 /);
    } finally {
      t.stop();
    }
  });

  it('cuts a request head trickled a byte per second the same way', async () => {
    const t = trickle('GET /api/devices HTTP/1.1\r\nHost: x\r\n', 'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa');
    try {
      const closedAfter = await t.closedAfterMs;
      expect(t.answer()).toMatch(/^HTTP\/1\.1 408 /);
      expect(closedAfter).toBeLessThan(BOUND_MS + 1_000);
    } finally {
      t.stop();
    }
  });

  it('keeps a stream open well past the bound: only receiving the request is bounded', async () => {
    const controller = new AbortController();
    const res = await fetch(`${svc.url}/events`, { signal: controller.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const openedAt = Date.now();
    let lastChunkAt = 0;
    let ended = false;
    const reading = (async () => {
      for (;;) {
        const { done } = await reader.read().catch(() => ({ done: true }));
        if (done) break;
        lastChunkAt = Date.now();
      }
      ended = true;
    })();
    try {
      // Heartbeats keep coming at 3 × the bound: the connection was not cut.
      await eventually(() => lastChunkAt - openedAt > 3 * BOUND_MS, 'a heartbeat at 3 × the bound', 4 * BOUND_MS + 2_000);
      expect(ended).toBe(false);
    } finally {
      controller.abort();
      await reading;
    }
  });
});

describe('bytes the parser refuses behind an open stream', () => {
  it('close the stream; no HTTP error response is written into the middle of its body', async () => {
    const socket = connect({ port: svc.port, host: '127.0.0.1' });
    let bytes = '';
    socket.on('data', (chunk) => (bytes += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    try {
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write('GET /events HTTP/1.1\r\nHost: a\r\n\r\n');
      await eventually(() => bytes.includes('event: snapshot') && bytes.includes('\n\n\r\n'), 'the stream opened');
      const streamed = bytes.length;
      // A malformed request pipelined after it: Node's parser refuses it (clientError).
      socket.write('GARBAGE\u0001\r\n\r\n');
      await closed;
      expect(bytes.slice(0, 9)).toBe('HTTP/1.1 ');
      expect(bytes.slice(streamed), 'nothing but stream bytes after the stream began').not.toContain('HTTP/1.1 ');
    } finally {
      socket.destroy();
    }
  });
});
