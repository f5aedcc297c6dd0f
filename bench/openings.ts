// The `openings` scenario: what strangers' requests cost the service at 100,000 known devices
// (the documented maximum). Not a comparison with the baseline: the built service alone, on
// 127.0.0.1, against a plain Mosquitto, talked to directly (nginx's per-address limits would
// shape the load; this measures the service). Every step is bounded in clients, time and bytes.
//
//   1. 100,000 devices each send one telemetry message; telemetry then flows at RATE msg/s.
//   2. One client opens /events and reads: snapshot build time (the service's histogram) and
//      the opening's bytes on the wire.
//   3. STALLED clients open /events and never read: app RSS with them open, and after they close.
//   4. OPENS clients open /events at once and read their whole snapshot, while a separate
//      process probes /healthz every PROBE_MS: its p50/p99/max.
//   5. LISTERS clients walk GET /api/devices page by page for LIST_SECONDS: /healthz again.
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { ManagedProcess, Mosquitto, ROOT, SERVICE_ENTRY, baseAppEnv, freePort, waitReady } from './harness.js';
import { rssBytes, type Machine } from './proc.js';

export const OPENINGS = 'openings';

const DEVICES = 100_000;
const RATE = 1_000;
const STALLED = 100;
const OPENS = 50;
const LISTERS = 20;
const LIST_SECONDS = 10;
const PROBE_MS = 10;
const STEP_TIMEOUT_MS = 180_000;

export interface ProbeStats {
  count: number;
  p50: number;
  p99: number;
  max: number;
  failed: number;
}

export interface OpeningsResult {
  devices: number;
  populateSeconds: number;
  buildMs: { mean: number; count: number };
  openingBytes: number;
  firstOpeningMs: number;
  rss: { idle: number; stalledPeak: number; stalledEnd: number; closed: number };
  stalledHeld: number;
  /** Stalled clients cut by the service within the 10 s: queue past its byte bound, or past the write deadline. */
  evicted: { slow: number; deadline: number };
  probeIdle: ProbeStats;
  probeOpens: ProbeStats & { allOpenedMs: number; opened: number };
  probeLists: ProbeStats & { pages: number; seconds: number };
}

const log = (line: string) => process.stdout.write(`${line}\n`);

async function metricsText(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
}

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = STEP_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`openings: timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A stream on a raw socket: counts body bytes and notes when the snapshot event is complete. */
function openStream(port: number, read: boolean): { socket: Socket; done: Promise<{ ms: number; bytes: number }> } {
  const started = performance.now();
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  socket.write('GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n');
  if (!read) {
    socket.pause();
    return { socket, done: Promise.resolve({ ms: 0, bytes: 0 }) };
  }
  const done = new Promise<{ ms: number; bytes: number }>((resolve, reject) => {
    let bytes = 0;
    let from = -1; // where the snapshot's head was seen, in the current buffer; -1 before it
    let head = Buffer.alloc(0); // the start of the stream, until the snapshot's head is seen
    let lastByte = 0;
    const onData = (b: Buffer) => {
      bytes += b.length;
      let search = b;
      let start = 0;
      if (from < 0) {
        // The head comes in the first bytes; keep them until it is there.
        head = Buffer.concat([head, b]);
        const at = head.indexOf('event: snapshot');
        if (at < 0) return;
        from = at;
        search = head;
        start = at;
      }
      // The snapshot's data is one line of JSON: the first blank line after its head ends it
      // (chunk framing is CRLF-delimited and cannot make one).
      const end = (lastByte === 0x0a && search[start] === 0x0a) || search.indexOf('\n\n', start) >= 0;
      lastByte = search[search.length - 1] ?? 0;
      if (end) {
        socket.off('data', onData);
        resolve({ ms: performance.now() - started, bytes });
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('a stream closed before its snapshot was complete')));
  });
  return { socket, done };
}

/** /healthz, one request at a time every PROBE_MS, from another process (the bench's own load must not delay it). */
function startProbe(port: number): { stop: () => Promise<ProbeStats> } {
  const code = `
    const http = require('node:http');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const times = []; let failed = 0; let stopping = false;
    process.on('message', () => { stopping = true; });
    const one = () => new Promise((resolve) => {
      const t = performance.now();
      const req = http.get({ host: '127.0.0.1', port: ${port}, path: '/healthz', agent, timeout: 30000 }, (res) => {
        res.resume(); res.on('end', () => { if (res.statusCode === 200) times.push(performance.now() - t); else failed++; resolve(); });
      });
      req.on('error', () => { failed++; resolve(); });
      req.on('timeout', () => req.destroy());
    });
    (async () => {
      while (!stopping) { await one(); await new Promise((r) => setTimeout(r, ${PROBE_MS})); }
      process.send({ times, failed }, () => process.exit(0));
    })();`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return {
    stop: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error('the /healthz probe did not report'));
        }, 40_000);
        child.once('message', (m: { times: number[]; failed: number }) => {
          clearTimeout(timer);
          const sorted = [...m.times].sort((a, b) => a - b);
          const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
          resolve({ count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? Number.NaN, failed: m.failed });
        });
        child.send('stop');
      }),
  };
}

/** Telemetry at RATE msg/s over all devices, in 10 ms ticks, until stopped. */
function flow(client: MqttClient): () => void {
  let seq = 1;
  let device = 0;
  const timer = setInterval(() => {
    for (let i = 0; i < RATE / 100; i += 1) {
      seq += 1;
      device = (device + 7_919) % DEVICES;
      client.publish(`devices/${deviceId(device)}/telemetry`, payload(seq), { qos: 0 });
    }
  }, 10);
  return () => clearInterval(timer);
}

const deviceId = (i: number) => `sensor-${String(i).padStart(6, '0')}`;
const payload = (seq: number) => JSON.stringify({ ts: Date.now(), seq, metrics: { temperature: 20 + (seq % 100) / 10, humidity: 40 + (seq % 7), battery: 90 - (seq % 30) } });

export async function runOpenings(): Promise<OpeningsResult> {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  try {
    const broker = await Mosquitto.start();
    cleanups.push(() => broker.stop());
    const port = await freePort();
    const app = new ManagedProcess('app', process.execPath, [SERVICE_ENTRY], {
      cwd: ROOT,
      detached: true,
      env: {
        ...baseAppEnv(port, broker.url),
        LOG_LEVEL: 'warn',
        // One publisher plays every device: no admission or per-device rate limit in the way.
        DEVICE_ADMIT_RATE: '0',
        DEVICE_MAX_MSG_RATE: '0',
      },
    });
    cleanups.push(() => app.stop('SIGTERM', 5_000));
    await waitReady(app, `http://127.0.0.1:${port}/readyz`, 20_000);
    const pid = app.pid!;

    log(`openings: ${DEVICES.toLocaleString('en-US')} devices report in`);
    const publisher = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
    cleanups.push(() => publisher.endAsync(true));
    const populateStarted = performance.now();
    for (let i = 0; i < DEVICES; i += 1) {
      publisher.publish(`devices/${deviceId(i)}/telemetry`, payload(1), { qos: 0 });
      if (i % 2_000 === 1_999) await sleep(20);
    }
    await until(async () => metric(await metricsText(port), 'devices_known') >= DEVICES, 'every device known');
    const populateSeconds = (performance.now() - populateStarted) / 1000;
    const stopFlow = flow(publisher);
    cleanups.push(stopFlow);
    await sleep(2_000);
    const probeIdle = await (async () => {
      const probe = startProbe(port);
      await sleep(3_000);
      return probe.stop();
    })();
    const idle = rssBytes(pid);

    log('openings: one reading client');
    const first = openStream(port, true);
    const firstOpening = await first.done;
    first.socket.destroy();
    const text = await metricsText(port);
    const buildSum = metric(text, 'sse_snapshot_build_seconds_sum{kind="shared"}');
    const buildCount = metric(text, 'sse_snapshot_build_seconds_count{kind="shared"}');

    log(`openings: ${STALLED} clients that never read`);
    const stalled = Array.from({ length: STALLED }, () => openStream(port, false).socket);
    let stalledPeak = 0;
    let stalledHeld = 0;
    for (let i = 0; i < 50; i += 1) {
      await sleep(200);
      stalledPeak = Math.max(stalledPeak, rssBytes(pid));
    }
    const afterStall = await metricsText(port);
    stalledHeld = metric(afterStall, 'sse_clients');
    const evictedSlow = metric(afterStall, 'sse_disconnects_total{reason="slow"}') || 0;
    const evictedDeadline = metric(afterStall, 'sse_disconnects_total{reason="deadline"}') || 0;
    const stalledEnd = rssBytes(pid);
    for (const socket of stalled) socket.destroy();
    await until(async () => metric(await metricsText(port), 'sse_clients') === 0, 'the stalled clients closed', 30_000);
    await sleep(5_000);
    const closed = rssBytes(pid);

    log(`openings: ${OPENS} streams open at once while /healthz is probed`);
    const probeOpensRun = startProbe(port);
    await sleep(500);
    const opensStarted = performance.now();
    const opens = Array.from({ length: OPENS }, () => openStream(port, true));
    const settled = await Promise.allSettled(opens.map((o) => o.done));
    const allOpenedMs = performance.now() - opensStarted;
    await sleep(500);
    const probeOpens = { ...(await probeOpensRun.stop()), allOpenedMs, opened: settled.filter((s) => s.status === 'fulfilled').length };
    for (const o of opens) o.socket.destroy();
    await until(async () => metric(await metricsText(port), 'sse_clients') === 0, 'the opened streams closed', 30_000);

    log(`openings: ${LISTERS} clients walk GET /api/devices for ${LIST_SECONDS} s while /healthz is probed`);
    const probeListsRun = startProbe(port);
    await sleep(500);
    let pages = 0;
    const listUntil = performance.now() + LIST_SECONDS * 1000;
    await Promise.all(
      Array.from({ length: LISTERS }, async (_, k) => {
        let after: string | null = deviceId((k * 4_999) % DEVICES);
        while (performance.now() < listUntil) {
          const res = await fetch(`http://127.0.0.1:${port}/api/devices?limit=1000${after ? `&after=${after}` : ''}`, { signal: AbortSignal.timeout(30_000) });
          const page = (await res.json()) as { next: string | null };
          pages += 1;
          after = page.next;
        }
      }),
    );
    const probeLists = { ...(await probeListsRun.stop()), pages, seconds: LIST_SECONDS };

    return {
      devices: DEVICES,
      populateSeconds,
      buildMs: { mean: (buildSum / buildCount) * 1000, count: buildCount },
      openingBytes: firstOpening.bytes,
      firstOpeningMs: firstOpening.ms,
      rss: { idle, stalledPeak, stalledEnd, closed },
      stalledHeld,
      evicted: { slow: evictedSlow, deadline: evictedDeadline },
      probeIdle,
      probeOpens,
      probeLists,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  }
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');
const probe = (p: ProbeStats) => `${ms(p.p50)} / **${ms(p.p99)}** / ${ms(p.max)} ms (${p.count} probes${p.failed ? `, ${p.failed} failed` : ''})`;

export function openingsMarkdown(r: OpeningsResult, m: Machine, command: string, started: Date): string {
  const worstP99 = Math.max(r.probeIdle.p99, r.probeOpens.p99, r.probeLists.p99);
  const lines = [
    `## ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC — \`${command}\`, scenario \`${OPENINGS}\``,
    '',
    `Machine: ${m.cores} cores, ${m.model}, ${m.memGiB} GiB RAM, node ${m.node}. The built service alone on 127.0.0.1 with a plain Mosquitto; ` +
      `${r.devices.toLocaleString('en-US')} devices, telemetry at ${RATE} msg/s throughout; /healthz probed from another process every ${PROBE_MS} ms.`,
    '',
    '| measure | value |',
    '|---|---:|',
    `| devices known (all reported in after) | ${r.devices.toLocaleString('en-US')} (${r.populateSeconds.toFixed(1)} s) |`,
    `| shared snapshot build, mean of ${r.buildMs.count} | **${ms(r.buildMs.mean)} ms** |`,
    `| opening on the wire (retry, snapshot, chunk framing) | ${mb(r.openingBytes)} |`,
    `| one reading client: request → whole snapshot | ${ms(r.firstOpeningMs)} ms |`,
    `| app RSS idle → peak with ${STALLED} clients that never read | ${mb(r.rss.idle)} → **${mb(r.rss.stalledPeak)}** (${mb(r.rss.stalledEnd)} at 10 s) |`,
    `| … of them, within 10 s: cut past the byte bound / past the write deadline / still open | ${r.evicted.slow} / ${r.evicted.deadline} / ${r.stalledHeld} |`,
    `| app RSS 5 s after they closed | ${mb(r.rss.closed)} |`,
    `| /healthz p50 / p99 / max, telemetry only | ${probe(r.probeIdle)} |`,
    `| /healthz p50 / p99 / max, ${OPENS} streams opening at once | ${probe(r.probeOpens)} |`,
    `| … all ${OPENS} had their whole snapshot after | ${ms(r.probeOpens.allOpenedMs)} ms (${r.probeOpens.opened}/${OPENS}) |`,
    `| /healthz p50 / p99 / max, ${LISTERS} clients walking GET /api/devices | ${probe(r.probeLists)} |`,
    `| … pages of 1,000 served | ${r.probeLists.pages} in ${r.probeLists.seconds} s (${(r.probeLists.pages / r.probeLists.seconds).toFixed(0)}/s) |`,
    '',
    'Targets:',
    '',
    `- **${worstP99 <= 100 ? 'met' : 'NOT met'}**: /healthz p99 ≤ 100 ms in every phase (worst ${ms(worstP99)} ms)`,
    `- **${r.rss.stalledPeak - r.rss.idle <= 200 * 1024 * 1024 ? 'met' : 'NOT met'}**: ${STALLED} clients that never read add ≤ 200 MB of RSS (added ${mb(r.rss.stalledPeak - r.rss.idle)}; each holds one 64 KiB piece and its bounded queue, the snapshot is shared; RSS is a high-water mark: ${mb(r.rss.closed)} after they closed)`,
    '',
  ];
  return lines.join('\n');
}
