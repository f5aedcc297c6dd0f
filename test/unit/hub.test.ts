// The hub's write path on real sockets: what bytes each client gets, in which HTTP framing, and
// how events are batched into writes. A plain Node http server on 127.0.0.1 stands in for Koa;
// raw TCP clients read the exact bytes, chunk boundaries included.
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { ALL_TYPES, TYPE_BIT } from '../../src/sse/event.js';
import { encodeRetry } from '../../src/sse/frame.js';
import { Hub } from '../../src/sse/hub.js';
import { parseAll } from '../helpers/sse-parser.js';
import { eventually } from '../helpers/wait.js';

interface Raw {
  socket: Socket;
  bytes: () => Buffer;
}

/** Splits an HTTP/1.1 response into its head and the payload of each chunk, strictly. */
function dechunk(response: Buffer): { head: string; chunks: string[]; complete: boolean } {
  const end = response.indexOf('\r\n\r\n');
  const head = response.subarray(0, end).toString('latin1');
  const chunks: string[] = [];
  let at = end + 4;
  for (;;) {
    const nl = response.indexOf('\r\n', at);
    if (nl < 0) return { head, chunks, complete: at === response.length };
    const sizeText = response.subarray(at, nl).toString('latin1');
    expect(sizeText, `chunk size line at byte ${at}`).toMatch(/^[0-9a-f]+$/);
    const size = Number.parseInt(sizeText, 16);
    if (size === 0) return { head, chunks, complete: true };
    if (nl + 2 + size + 2 > response.length) return { head, chunks, complete: false };
    chunks.push(response.subarray(nl + 2, nl + 2 + size).toString('utf8'));
    expect(response.subarray(nl + 2 + size, nl + 4 + size).toString('latin1'), 'CRLF after chunk data').toBe('\r\n');
    at = nl + 4 + size;
  }
}

describe('hub write path', () => {
  let server: Server | undefined;
  let hub: Hub | undefined;
  const sockets: Socket[] = [];

  afterEach(async () => {
    hub?.stop();
    for (const s of sockets.splice(0)) s.destroy();
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
    server = undefined;
    hub = undefined;
  });

  const metrics = createMetrics();

  async function setup(coalesceMs: number): Promise<{ hub: Hub; open: (version: '1.0' | '1.1', query?: string) => Promise<Raw> }> {
    const h = new Hub({ replaySize: 100, clientBufferBytes: 1 << 20, heartbeatMs: 60_000, writeDeadlineMs: 120_000, coalesceMs, metrics });
    hub = h;
    server = createServer((req, res) => {
      const devices = new URL(req.url ?? '/', 'http://x').searchParams.get('device');
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.flushHeaders();
      h.attach(res, { devices: devices ? new Set([devices]) : null, mask: ALL_TYPES }, h.head, [encodeRetry(1000)]);
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const open = async (version: '1.0' | '1.1', query = ''): Promise<Raw> => {
      const socket = connect({ host: '127.0.0.1', port });
      sockets.push(socket);
      const parts: Buffer[] = [];
      socket.on('data', (b: Buffer) => parts.push(b));
      socket.write(`GET /events${query} HTTP/${version}\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`);
      const raw = { socket, bytes: () => Buffer.concat(parts) };
      await eventually(() => raw.bytes().includes('retry: 1000'), 'the stream opening');
      return raw;
    };
    return { hub: h, open };
  }

  it('frames HTTP/1.1 streams as chunks and HTTP/1.0 streams as plain bytes, both parseable', async () => {
    const { hub: h, open } = await setup(0);
    const v11 = await open('1.1');
    const v10 = await open('1.0');
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { device: 'pump-1', seq: 1, text: 'a\r\nb\0c' });
    await eventually(() => v11.bytes().includes('seq') && v10.bytes().includes('seq'), 'the event on both streams');

    const chunked = dechunk(v11.bytes());
    expect(chunked.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(chunked.head.toLowerCase()).toContain('transfer-encoding: chunked');
    expect(chunked.complete).toBe(true);
    const fromChunks = parseAll(chunked.chunks.join(''));
    expect(fromChunks.retry).toBe(1000);
    expect(fromChunks.events.map((e) => [e.type, JSON.parse(e.data)])).toEqual([
      ['telemetry', { device: 'pump-1', seq: 1, text: 'a\r\nb\0c' }],
    ]);

    const plain = v10.bytes().toString('utf8');
    const end = plain.indexOf('\r\n\r\n');
    expect(plain.slice(0, end).toLowerCase()).not.toContain('transfer-encoding');
    const fromPlain = parseAll(plain.slice(end + 4));
    expect(fromPlain.events).toEqual(fromChunks.events);
  });

  it('observes device-to-client latency only for events written to some stream', async () => {
    const { hub: h, open } = await setup(0);
    const pump = await open('1.1', '?device=pump-1');
    const count = async () => (await metrics.deliveryLatency.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    const before = await count();
    h.publish('telemetry', 'fan-1', TYPE_BIT.telemetry, { seq: 1 }, Date.now());
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 2 }, Date.now());
    await eventually(() => pump.bytes().includes('"seq":2'), 'the pump event');
    h.publish('telemetry', 'fan-1', TYPE_BIT.telemetry, { seq: 3 }, Date.now());
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(await count(), 'only the pump event reached a stream').toBe(before + 1);
  });

  it('writes a lone event at once, and events arriving during the coalescing window in one write per client', async () => {
    // A window far longer than any scheduling hiccup: the assertions are about structure, not speed.
    const { hub: h, open } = await setup(2_000);
    const all = await open('1.1');
    const pump = await open('1.1', '?device=pump-1');
    const started = Date.now();
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await eventually(() => all.bytes().includes('"seq":1'), 'the first event');
    expect(Date.now() - started, 'a lone event is not held for the window').toBeLessThan(1_500);

    // Published in separate turns of the event loop, but within the window of that write: held,
    // then all of them in one chunk.
    for (let seq = 2; seq <= 5; seq += 1) {
      h.publish('telemetry', seq % 2 ? 'pump-1' : 'fan-1', TYPE_BIT.telemetry, { seq });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await eventually(() => all.bytes().includes('"seq":5'), 'the burst', 5_000);
    await eventually(() => pump.bytes().includes('"seq":5'), 'the filtered burst', 5_000);
    const allChunks = dechunk(all.bytes()).chunks;
    expect(allChunks).toHaveLength(3); // the opening, the lone event, the burst
    expect(parseAll(allChunks[2]!).events.map((e) => JSON.parse(e.data).seq)).toEqual([2, 3, 4, 5]);
    const pumpChunks = dechunk(pump.bytes()).chunks;
    expect(pumpChunks).toHaveLength(3);
    expect(parseAll(pumpChunks[2]!).events.map((e) => JSON.parse(e.data).seq)).toEqual([3, 5]);
  });

  it('sends every event once, in order, with ids, whatever the batching', async () => {
    const { hub: h, open } = await setup(5);
    const raw = await open('1.1');
    for (let seq = 1; seq <= 300; seq += 1) {
      h.publish('telemetry', `d${seq % 7}`, TYPE_BIT.telemetry, { seq });
      if (seq % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 3));
    }
    await eventually(() => raw.bytes().includes('"seq":300}'), 'the last event', 5_000);
    const { chunks } = dechunk(raw.bytes());
    const events = parseAll(chunks.join('')).events;
    expect(events.map((e) => JSON.parse(e.data).seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const ids = events.map((e) => Number(e.lastEventId.split('-')[1]));
    for (let i = 1; i < ids.length; i += 1) expect(ids[i]).toBeGreaterThan(ids[i - 1]!);
    expect(chunks.length, 'bursts are batched').toBeLessThan(300);
  });
});
