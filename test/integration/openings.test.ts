// How a stream opens, on raw sockets against the real service and a real Mosquitto: a request
// pipelined behind another one on the same connection, an HTTP/1.0 request, and an opening far
// larger than the client's byte bound sent to a client that never reads.
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { MAX_METRICS } from '../../src/protocol.js';
import { PIECE_BYTES } from '../../src/sse/client.js';
import { telemetry } from '../helpers/mqtt.js';
import { parseAll } from '../helpers/sse-parser.js';
import { SseCollector } from '../helpers/sse-client.js';
import { withBrokerAndService } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

const stage = withBrokerAndService();
const { cleanup, service } = stage;

interface Raw {
  socket: Socket;
  text(): string;
  closed: () => boolean;
}

function raw(port: number, request: string, { read = true } = {}): Raw {
  const socket = connect({ host: '127.0.0.1', port });
  cleanup.push(() => socket.destroy());
  const parts: Buffer[] = [];
  let closed = false;
  socket.on('data', (b: Buffer) => parts.push(b));
  socket.on('close', () => (closed = true));
  socket.on('error', () => undefined);
  socket.write(request);
  if (!read) socket.pause();
  return { socket, text: () => Buffer.concat(parts).toString('utf8'), closed: () => closed };
}

/** The bodies of HTTP/1.1 chunked responses, concatenated: the SSE text of the last response. */
function dechunk(body: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const nl = body.indexOf('\r\n', at);
    if (nl < 0) return out;
    const size = Number.parseInt(body.slice(at, nl), 16);
    if (!(size > 0) || nl + 2 + size > body.length) return out;
    out += body.slice(nl + 2, nl + 2 + size);
    at = nl + 4 + size;
  }
}

const STREAM = 'GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n';

describe('stream openings', () => {
  it('serves a GET /events pipelined right behind another request on the same connection', async () => {
    const svc = await service('pipelined');
    const conn = raw(svc.port, `GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n${STREAM}`);
    await eventually(() => conn.text().includes('event: snapshot'), 'the second response to carry the snapshot', 5_000, () => conn.text());
    const text = conn.text();
    const first = text.indexOf('HTTP/1.1 200');
    const second = text.indexOf('HTTP/1.1 200', first + 1);
    expect(first).toBe(0);
    expect(second, 'two responses, in order').toBeGreaterThan(first);
    expect(text.slice(first, second)).toContain('{"status":"ok"}');
    expect(text.slice(second)).toContain('text/event-stream');
    expect(svc.service.hub.clientCount, 'the stream is open, and counted so').toBe(1);

    await stage.publisher.publishAsync(`${svc.prefix}/pipe-1/telemetry`, telemetry(1, { rpm: 7 }), { qos: 1 });
    await eventually(() => conn.text().includes('"rpm":7'), 'a live event on the pipelined stream', 5_000, () => conn.text().slice(-300));
    const body = text.slice(text.indexOf('\r\n\r\n', second) + 4);
    const events = parseAll(dechunk(body + conn.text().slice(text.length))).events;
    expect(events.map((e) => e.type)).toEqual(['snapshot', 'telemetry']);
  });

  it('counts a stream pipelined behind another stream as closed as soon as the connection closes', async () => {
    // Heartbeats 55 s apart: the write deadline (two of them) cannot be what closes it.
    const svc = await service('pipelined-behind', { SSE_HEARTBEAT_MS: '55000' });
    const conn = raw(svc.port, `${STREAM}${STREAM}`);
    await eventually(() => conn.text().includes('event: snapshot'), 'the first stream open');
    await eventually(() => svc.service.hub.clientCount === 2, 'both streams counted');
    expect(conn.text().match(/HTTP\/1\.1 200/g), 'the second waits for the first to finish').toHaveLength(1);
    conn.socket.destroy();
    await eventually(() => svc.service.hub.clientCount === 0, 'both streams closed with the connection', 3_000);
    const text = await (await fetch(`${svc.url}/metrics`)).text();
    expect(text).toMatch(/^sse_disconnects_total\{reason="client"\} 2$/m);
  });

  it('answers a direct HTTP/1.0 stream with Connection: close and a plain body', async () => {
    const svc = await service('http10');
    const conn = raw(svc.port, 'GET /events HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n');
    await eventually(() => conn.text().includes('event: snapshot'), 'the snapshot');
    const text = conn.text();
    const head = text.slice(0, text.indexOf('\r\n\r\n')).toLowerCase();
    expect(head).toMatch(/^http\/1\.1 200 /);
    expect(head).toContain('connection: close');
    expect(head).not.toContain('keep-alive');
    expect(head).not.toContain('transfer-encoding');
    const events = parseAll(text.slice(text.indexOf('\r\n\r\n') + 4)).events;
    expect(events.map((e) => e.type)).toEqual(['snapshot']);
  });

  it('sends a large opening in pieces as the client reads: one that never reads holds one piece, events queue behind it under the byte bound, the deadline cuts it', async () => {
    // The write deadline is two heartbeats (at least 1 s).
    const svc = await service('pieces', { SSE_HEARTBEAT_MS: '500', SSE_CLIENT_BUFFER_BYTES: '65536', DEVICE_ADMIT_RATE: '0' });
    // 3,000 devices of ~5.4 KB each (MAX_METRICS metrics with long names): a ~16 MB snapshot, far past the
    // 64 KiB byte bound and past what the loopback socket buffers hold.
    const metrics = Object.fromEntries(Array.from({ length: MAX_METRICS }, (_, i) => [`${'m'.repeat(60)}${i}`, 1e15 + i]));
    const devices = 3_000;
    const pad = JSON.stringify(metrics).length;
    for (let i = 0; i < devices; i += 1) {
      stage.publisher.publish(`${svc.prefix}/big-${String(i).padStart(4, '0')}/telemetry`, telemetry(1, metrics), { qos: 0 });
      if (i % 200 === 199) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await eventually(() => svc.service.store.size === devices, 'every device known', 20_000, () => svc.service.store.size);
    expect(svc.service.catalog.byteSize).toBeGreaterThan(devices * pad);

    // Two clients that never read: one for everything, one for telemetry only (no alert matches it).
    raw(svc.port, STREAM, { read: false });
    raw(svc.port, STREAM.replace('/events', '/events?types=telemetry'), { read: false });
    await eventually(() => svc.service.hub.clientCount === 2, 'the stalled streams open');
    let maxBacklog = 0;
    // A reading client at the same time gets the whole snapshot, intact.
    const reader = new SseCollector(`${svc.url}/events`);
    cleanup.push(() => reader.close());
    const snapshot = await reader.waitFor((e) => e.type === 'snapshot', 'the whole snapshot', 20_000);
    expect(snapshot.data.devices).toHaveLength(devices);
    const until = Date.now() + 500;
    while (Date.now() < until) {
      maxBacklog = Math.max(maxBacklog, svc.service.hub.backlogBytes);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    console.info(`opening of ${svc.service.catalog.byteSize} bytes: most held in the process for two clients that never read ${maxBacklog} bytes`);
    expect(maxBacklog, 'each stalled client holds one piece (plus its chunk framing), not the snapshot').toBeLessThanOrEqual(2 * (PIECE_BYTES + 64));
    expect(maxBacklog).toBeGreaterThan(0);

    // 100 alerts of 1 KB (never conflated) queue behind the unfiltered client's opening: past the
    // 64 KiB bound it is cut as slow; the telemetry-only one has nothing queued and stays, until
    // the write deadline. The reader gets them all.
    const message = 'a'.repeat(1_000);
    for (let seq = 1; seq <= 100; seq += 1) {
      stage.publisher.publish(`${svc.prefix}/loud/events`, JSON.stringify({ ts: Date.now(), seq, type: 'load', severity: 'info', message }), { qos: 0 });
    }
    await reader.waitForCount('alert', 100, 10_000);
    const scrape = async () => (await fetch(`${svc.url}/metrics`)).text();
    await eventually(async () => /^sse_disconnects_total\{reason="slow"\} 1$/m.test(await scrape()), 'the unfiltered stalled client cut as slow', 5_000);
    expect(svc.service.hub.clientCount).toBe(2);
    await eventually(async () => /^sse_disconnects_total\{reason="deadline"\} 1$/m.test(await scrape()), 'the other cut at the write deadline', 10_000);
    expect(svc.service.hub.clientCount, 'the reader is still open').toBe(1);
  });
});
