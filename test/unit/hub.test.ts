// The hub's write path on real sockets: what bytes each client gets, in which HTTP framing, and
// how events are batched into writes. A plain Node http server on 127.0.0.1 stands in for Koa;
// raw TCP clients read the exact bytes, chunk boundaries included.
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { POSITION_EVENT } from '../../src/protocol.js';
import { ALL_TYPES, TYPE_BIT } from '../../src/sse/event.js';
import { encodeRetry } from '../../src/sse/frame.js';
import { Pieces } from '../../src/sse/chunk.js';
import { MemoryLog } from '../../src/log/memory.js';
import type { EventLog } from '../../src/log/log.js';
import { Hub } from '../../src/sse/hub.js';
import { Snapshots } from '../../src/sse/snapshot.js';
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

  /** A hub on a real server; `writesPerSecond` tiny makes every batch wait the whole `coalesceMs` (once there is traffic). */
  async function setup(coalesceMs: number, heartbeatMs = 60_000, writesPerSecond = 100, log?: EventLog): Promise<{ hub: Hub; open: (version: '1.0' | '1.1', query?: string) => Promise<Raw> }> {
    const h = new Hub({ replaySize: 100, clientBufferBytes: 1 << 20, heartbeatMs, writeDeadlineMs: 120_000, coalesceMs, writesPerSecond, metrics, ...(log && { log }) });
    if (heartbeatMs < 60_000) h.start();
    hub = h;
    server = createServer((req, res) => {
      const devices = new URL(req.url ?? '/', 'http://x').searchParams.get('device');
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.flushHeaders();
      h.attach(res, { devices: devices ? new Set([devices]) : null, mask: ALL_TYPES }, h.head, [[encodeRetry(1000)]]);
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

  it('writes each event at once while events are further apart than the write interval', async () => {
    // 10 events a second against a bound of 20 writes a second: no window at all.
    const { hub: h, open } = await setup(2_000, 60_000, 20);
    const all = await open('1.1');
    for (let seq = 1; seq <= 5; seq += 1) {
      h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq });
      expect(h.coalescingWindow()).toBe(0);
      await eventually(() => all.bytes().includes(`"seq":${seq}`), `event ${seq}`, 1_000);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(dechunk(all.bytes()).chunks).toHaveLength(6); // the opening, then one write per event
  });

  it('holds events that arrive within the interval after a write, and sends them in one write per client', async () => {
    // One write every 2 s at most: the first event goes at once, the next ones wait for the interval.
    const { hub: h, open } = await setup(2_000, 60_000, 0.5);
    const all = await open('1.1');
    const pump = await open('1.1', '?device=pump-1');
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await eventually(() => all.bytes().includes('"seq":1'), 'the first event', 1_500);
    // Published in separate turns of the event loop, within the interval that write began.
    for (let seq = 2; seq <= 5; seq += 1) {
      h.publish('telemetry', seq % 2 ? 'pump-1' : 'fan-1', TYPE_BIT.telemetry, { seq });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await eventually(() => all.bytes().includes('"seq":5'), 'the batch', 5_000);
    await eventually(() => pump.bytes().includes('"seq":5'), 'the filtered batch', 5_000);
    const allChunks = dechunk(all.bytes()).chunks;
    expect(allChunks).toHaveLength(3); // the opening, the first event, the batch
    expect(parseAll(allChunks[2]!).events.map((e) => JSON.parse(e.data).seq)).toEqual([2, 3, 4, 5]);
    const pumpChunks = dechunk(pump.bytes()).chunks;
    expect(pumpChunks).toHaveLength(3);
    expect(parseAll(pumpChunks[2]!).events.map((e) => JSON.parse(e.data).seq)).toEqual([3, 5]);
  });

  /** A hub on a clock the test moves. */
  function clocked(coalesceMs: number, writesPerSecond: number, log?: EventLog): { hub: Hub; at: (ms: number) => void } {
    let t = 1_000_000;
    const h = new Hub({ replaySize: 100, clientBufferBytes: 1 << 20, heartbeatMs: 60_000, writeDeadlineMs: 120_000, coalesceMs, writesPerSecond, metrics, now: () => t, ...(log && { log }) });
    hub = h;
    return { hub: h, at: (ms) => (t += ms) };
  }

  const flushed = () => new Promise((resolve) => setImmediate(resolve));

  it('holds a batch only until 1/W has passed since the last write, and nothing after a quiet spell', async () => {
    const { hub: h, at } = clocked(2_000, 20);
    expect(h.coalescingWindow(), 'nothing written yet').toBe(0);
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await flushed();
    expect(h.coalescingWindow(), 'right after a write: the whole interval').toBe(50);
    at(10);
    expect(h.coalescingWindow(), 'only what is left of it').toBe(40);
    at(40);
    expect(h.coalescingWindow(), 'the interval is over').toBe(0);
    at(5_000);
    expect(h.coalescingWindow()).toBe(0);
  });

  it('does not hold a second time what a log that paces its deliveries at the write interval hands over', async () => {
    /** The shared log's pacing, on the embedded log: it says it hands entries over at least 50 ms apart. */
    class PacedLog extends MemoryLog {
      override readonly pacingMs = 50;
    }
    const window = async () => (await metrics.coalesceWindow.get()).values[0]?.value;
    for (const [log, held] of [
      [new PacedLog({ replaySize: 100 }), 0],
      [new MemoryLog({ replaySize: 100 }), 0.02],
    ] as const) {
      // A bound of 20 writes a second: right after a write, a batch would wait 50 ms; a paced
      // batch comes about an interval after the last one.
      const { hub: h, at } = clocked(2_000, 20, log);
      h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
      await flushed();
      at(30);
      h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 2 });
      expect(await window(), log.pacingMs > 0 ? 'paced: written in the next turn' : 'not paced: held for the rest of the interval').toBe(held);
      h.stop();
    }
    // A clump from the paced log (batches at one instant): written half an interval apart.
    const { hub: h } = clocked(2_000, 20, new PacedLog({ replaySize: 100 }));
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await flushed();
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 2 });
    expect(await window(), 'right after a write: half the interval').toBe(0.025);
  });

  it('never holds a batch past the latency budget, whatever the write bound asks, and not at all without coalescing', async () => {
    // A bound of 1 write a second would hold a batch up to a second; the budget is 30 ms.
    const { hub: h } = clocked(30, 1);
    h.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await flushed();
    expect(h.coalescingWindow()).toBe(30);
    const { hub: off } = clocked(0, 1);
    off.publish('telemetry', 'pump-1', TYPE_BIT.telemetry, { seq: 1 });
    await flushed();
    expect(off.coalescingWindow()).toBe(0);
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

  it('heartbeats carry the position of the last flushed batch, never of events still waiting for their window', async () => {
    const { hub: h, open } = await setup(1_500, 100, 0.001);
    const raw = await open('1.1', '?device=quiet');
    h.publish('telemetry', 'noisy', TYPE_BIT.telemetry, { seq: 1 });
    await eventually(() => h.head === 1 && raw.bytes().includes(`id: ${h.idOf(1)}\ndata: {}`), 'a heartbeat naming seq 1');
    // Within the coalescing window of that flush: held, and not yet a position.
    h.publish('telemetry', 'noisy', TYPE_BIT.telemetry, { seq: 2 });
    const before = raw.bytes().length;
    await eventually(() => raw.bytes().subarray(before).includes(': keepalive'), 'another heartbeat');
    const held = raw.bytes().subarray(before).toString('utf8');
    expect(held).toContain(`id: ${h.idOf(1)}`);
    expect(held).not.toContain(`id: ${h.idOf(2)}`);
    await eventually(() => raw.bytes().includes(`id: ${h.idOf(2)}\ndata: {}`), 'a heartbeat naming seq 2 once it was flushed', 5_000);
    const parsed = parseAll(dechunk(raw.bytes()).chunks.join(''));
    expect(parsed.events.every((e) => e.type === POSITION_EVENT), 'the filtered client was sent no noisy event').toBe(true);
    expect(parsed.lastEventId).toBe(h.idOf(2));
  });

  it('tells a filtered client its position once its filter has skipped a quarter of the replay window', async () => {
    const { hub: h, open } = await setup(0);
    const quiet = await open('1.1', '?device=quiet');
    const all = await open('1.1');
    for (let seq = 1; seq <= 24; seq += 1) h.publish('telemetry', 'noisy', TYPE_BIT.telemetry, { seq });
    await eventually(() => all.bytes().includes('"seq":24}'), 'the first 24 on the unfiltered stream');
    expect(quiet.bytes().toString()).not.toContain('event: position');
    h.publish('telemetry', 'noisy', TYPE_BIT.telemetry, { seq: 25 });
    await eventually(() => quiet.bytes().includes(`event: position\nid: ${h.idOf(25)}\ndata: {}\n\n`), 'a position block at 25 skipped (replay 100 / 4)');
    expect(all.bytes().toString(), 'a client that got every event needs none').not.toContain('event: position');
    const parsed = parseAll(dechunk(quiet.bytes()).chunks.join(''));
    expect(parsed.lastEventId).toBe(h.idOf(25));
  });
});

describe('shared snapshots', () => {
  const metrics = createMetrics();
  const filterAll = { devices: null, mask: ALL_TYPES };

  function setup() {
    const hub = new Hub({ replaySize: 50, clientBufferBytes: 1 << 20, heartbeatMs: 60_000, writeDeadlineMs: 1_000, coalesceMs: 0, writesPerSecond: 100, metrics });
    const state = { version: 0, builds: 0, now: 0 };
    const source = {
      get version() {
        return state.version;
      },
      upstream: () => ({ mqtt: 'up' as const }),
      data: (_upstream: unknown, devices: ReadonlySet<string> | null) => {
        state.builds += 1;
        state.now += 10; // every build takes 10 ms of the fake clock
        return [Buffer.from(JSON.stringify({ v: state.version, devices: devices ? [...devices] : null }))];
      },
    };
    const snapshots = new Snapshots(hub, source, undefined, () => state.now);
    const publish = (device: string, bit = TYPE_BIT.telemetry) => {
      state.version += 1;
      return hub.publish(bit === TYPE_BIT.status ? 'status' : 'telemetry', device, bit, { device });
    };
    return { hub, state, snapshots, publish };
  }
  const text = (parts: (readonly (Buffer | string)[])[]) => parseAll(parts.flat().map(String).join('')).events;

  it('shares a recent snapshot taken at a position P, followed by exactly the events after P that the filter passes', () => {
    const { hub, state, snapshots, publish } = setup();
    publish('a');
    publish('b');
    const first = snapshots.open(filterAll);
    expect(first.seq).toBe(2);
    expect(first.after).toBe(2);
    expect(text(first.parts)).toEqual([{ type: 'snapshot', data: JSON.stringify({ v: 2, devices: null }), lastEventId: hub.idOf(2) }]);
    const e3 = publish('c', TYPE_BIT.status);
    const e4 = publish('d');
    state.now += 50; // within ten build times (100 ms)
    const second = snapshots.open(filterAll);
    expect(state.builds, 'shared, not rebuilt').toBe(1);
    expect(second.seq).toBe(2);
    expect(second.after).toBe(4);
    expect(second.parts[0], 'the same frame, not a copy').toBe(first.parts[0]);
    expect(text(second.parts).map((e) => e.lastEventId)).toEqual([hub.idOf(2), hub.idOf(3), hub.idOf(4)]);
    expect(second.parts[1]).toEqual([e3.frame, e4.frame]);
    const statusOnly = snapshots.open({ devices: null, mask: TYPE_BIT.status });
    expect(statusOnly.parts[1]).toEqual([e3.frame]);
    expect(statusOnly.after).toBe(4);
  });

  it('takes a new snapshot when the shared one is too old or its position left the replay window, and builds device filters fresh', () => {
    const { hub, state, snapshots, publish } = setup();
    publish('a');
    snapshots.open(filterAll);
    publish('b');
    state.now += 200;
    const aged = snapshots.open(filterAll);
    expect(state.builds).toBe(2);
    expect(aged).toMatchObject({ seq: 2, after: 2 });
    expect(aged.parts[1]).toEqual([]);
    for (let i = 0; i < 60; i += 1) publish('n');
    expect(hub.covers(2)).toBe(false);
    const moved = snapshots.open(filterAll);
    expect(state.builds).toBe(3);
    expect(moved).toMatchObject({ seq: 62, after: 62 });
    // Unchanged state: shared however old.
    state.now += 10_000;
    expect(snapshots.open(filterAll).seq).toBe(62);
    expect(state.builds).toBe(3);
    const filtered = snapshots.open({ devices: new Set(['a']), mask: ALL_TYPES });
    expect(state.builds).toBe(4);
    expect(filtered).toMatchObject({ seq: 62, after: 62 });
    expect(JSON.parse(text(filtered.parts)[0]!.data).devices).toEqual(['a']);
  });
});

describe('opening pieces', () => {
  it('cuts parts into pieces of at most the given size, as views, in order, skipping empty parts', () => {
    const parts = [[Buffer.from('abc'), Buffer.alloc(0)], [], [Buffer.from('defghij')], [Buffer.from('k')]];
    const pieces = new Pieces(parts);
    const out: string[] = [];
    for (let i = 0; i < 10 && !pieces.done; i += 1) {
      const { parts: got, bytes } = pieces.next(4);
      const joined = got.map(String).join('');
      expect(Buffer.byteLength(joined)).toBe(bytes);
      out.push(joined);
    }
    expect(out).toEqual(['abcd', 'efgh', 'ijk']);
    // Strings are never cut: a piece ends before one that does not fit, or is that string alone.
    const strings = new Pieces([['ab', 'cdé', Buffer.from('xy')], ['0123456789']]);
    const cut: [string, number][] = [];
    for (let i = 0; i < 10 && !strings.done; i += 1) {
      const { parts: got, bytes } = strings.next(4);
      cut.push([got.map(String).join(''), bytes]);
    }
    expect(cut).toEqual([['ab', 2], ['cdé', 4], ['xy', 2], ['0123456789', 10]]);
    expect(new Pieces([[], [Buffer.alloc(0)]]).done, 'nothing to write').toBe(true);
    const big = Buffer.alloc(10, 1);
    const view = new Pieces([[big]]).next(4).parts[0] as Buffer;
    expect(view.buffer, 'a view into the shared buffer').toBe(big.buffer);
  });
});
