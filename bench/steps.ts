// The steps of one fan-out run (one scenario against one target), in the order run.ts takes them:
// start the system, connect the devices, open the streams, stall the slow clients, warm up,
// measure the window, wait for evictions, report, close.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Child, type Load, type Publisher } from './child.js';
import { Histogram } from './histogram.js';
import { DynsecAdmin, newDevicePassword, provisionDevices } from './harness.js';
import { cpuDelta, cpuMicros, sampleCpu, type CpuSample, type PidGroups } from './proc.js';
import { DEVICE_PREFIX, type LoadStats } from './protocol.js';
import { completeness } from './format.js';
import { perEvent, replicaPerEvent, rssMarginalKB, rssPerStreamKB, type ReplicaResult, type RunResult } from './report.js';
import { isShared, type Scenario, type Settings, type TargetName } from './scenarios.js';
import { appCounters, appCountersEach, appRss, appRssEach, startTarget, sumCounters, type Target } from './target.js';

/** Streams per load process (at most MAX_LOAD_PROCESSES): reading is spread over processes. */
const CLIENTS_PER_LOAD_PROCESS = 1_000;
const MAX_LOAD_PROCESSES = 4;
/** Clients per loopback source address: half nginx's per-address limit (100 by default). */
const CLIENTS_PER_ADDRESS = 50;
const DRAIN_TIMEOUT_MS = 5_000;
/**
 * After the window of a slow-client run, the load goes on (unmeasured) until the app has evicted
 * every stalled client, for at most this long after they stopped reading. A stalled reader behind
 * nginx first fills the kernel's socket buffers on both sides of nginx (up to tcp_wmem's maximum
 * each, 4 MiB on stock Linux) before the app's own writes block and its deadline starts.
 */
const EVICTION_TIMEOUT_MS = 150_000;
const EVICTION_STEP_SECONDS = 2;

export const log = (line: string) => process.stdout.write(`${line}\n`);
export const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
const sum = (values: readonly number[]) => values.reduce((n, v) => n + v, 0);

/** One scenario against one target: its progress lines, and everything it started, to stop. */
export class Run {
  readonly label: string;
  readonly started = Date.now();
  target: Target | undefined;
  private readonly children: Child<never, { type: string }>[] = [];

  constructor(readonly scenario: Scenario, readonly targetName: TargetName, readonly settings: Settings) {
    this.label = `${scenario.name}/${targetName}`.padEnd(20);
  }

  phase(text: string): void {
    log(`${this.label} ${text}`);
  }

  /** Forks a bench process (load.js, publisher.js) that stop() kills. */
  fork<Req, Rep extends { type: string }>(name: string, file: string): Child<Req, Rep> {
    const child = new Child<Req, Rep>(name, file);
    this.children.push(child as never);
    return child;
  }

  async stop(): Promise<void> {
    for (const child of this.children) child.kill();
    await this.target?.stop();
  }
}

/** Broker, Redis (the redis target), app(s) and nginx; warns when nginx's workers may run out of file descriptors. */
export async function startSystem(run: Run): Promise<Target> {
  const target = await startTarget(run.targetName, run.scenario.appEnv, run.scenario.replicas ?? 1);
  run.target = target;
  const nofile = target.nginxWorkerNofile();
  run.phase(
    `up: mosquitto :${target.broker.port}${target.redis ? `, redis-server :${target.redis.port}` : ''}` +
      `, ${target.apps.map((a) => `${a.name} :${a.port}`).join(', ')}, nginx :${target.nginx.port}` +
      (nofile < 2 * run.scenario.clients + 100 ? `  WARNING: nginx workers may open only ${nofile} files` : ''),
  );
  return target;
}

export interface Devices {
  publisher: Publisher;
  /** How long the publisher took to connect every device. */
  connectMs: number;
  /** App RSS with the devices connected and no stream open (all replicas), and per replica. */
  rssBefore: number;
  rssBeforeEach: number[];
}

export async function connectDevices(run: Run, target: Target): Promise<Devices> {
  // Every device its own login on the project broker, made before the clock of the connect starts.
  const passwords = new Map(Array.from({ length: run.scenario.devices }, (_, i) => [`${DEVICE_PREFIX}${i}`, newDevicePassword()] as const));
  const admin = await DynsecAdmin.connect({ url: target.broker.url, ...target.users.admin });
  try {
    await provisionDevices(admin, passwords);
  } finally {
    await admin.close();
  }
  const publisher: Publisher = run.fork('publisher', 'publisher.js');
  const ready = await publisher.request(
    { type: 'start', url: target.broker.url, passwords: Object.fromEntries(passwords), devices: run.scenario.devices, qos: run.settings.qos },
    'ready',
    60_000,
  );
  await sleep(500);
  const rssBeforeEach = appRssEach(target);
  return { publisher, connectMs: ready.ms, rssBefore: sum(rssBeforeEach), rssBeforeEach };
}

export interface Streams {
  loads: Load[];
  streams: number;
  failed: number;
  /** App RSS with the first half of the streams open, and how many that was. */
  rssHalf: number;
  halfStreams: number;
  /** App RSS with every stream open and idle (all replicas), and per replica. */
  rssIdle: number;
  rssIdleEach: number[];
}

/**
 * Streams, spread over load processes, opened in two halves: the app's RSS after the first half
 * includes the one-off growth of its heap under a connection storm, so the second half shows what
 * one more idle stream costs.
 */
export async function openStreams(run: Run, target: Target, devices: Devices): Promise<Streams> {
  const { scenario } = run;
  const processes = Math.min(MAX_LOAD_PROCESSES, Math.ceil(scenario.clients / CLIENTS_PER_LOAD_PROCESS));
  const loads: Load[] = [];
  const ca = readFileSync(target.nginx.tls.caCert, 'utf8');
  const connectStarted = Date.now();
  for (let i = 0; i < processes; i += 1) loads.push(run.fork(`load-${i}`, 'load.js'));
  const openHalf = async (half: 0 | 1) =>
    Promise.all(
      loads.map((load, i) => {
        const first = Math.floor((scenario.clients * i) / processes);
        const count = Math.floor((scenario.clients * (i + 1)) / processes) - first;
        const split = Math.floor(count / 2);
        return load.request(
          {
            type: 'connect',
            host: '127.0.0.1',
            port: target.nginx.port,
            path: '/events',
            // nginx serves HTTPS only (its plain port redirects): the streams verify its certificate.
            ca,
            first: half === 0 ? first : first + split,
            count: half === 0 ? split : count - split,
            slowFraction: scenario.slowFraction,
            devices: scenario.devices,
            perAddress: CLIENTS_PER_ADDRESS,
            reconnect: scenario.storm === true,
          },
          'connected',
          120_000,
        );
      }),
    );
  await openHalf(0);
  await sleep(2_000);
  const rssHalf = appRss(target);
  const halfStreams = (await Promise.all(loads.map((l) => l.request({ type: 'stats' }, 'stats', 10_000)))).reduce((n, r) => n + r.stats.opened, 0);
  const opened = await openHalf(1); // replies are cumulative per load process
  const streams = opened.reduce((n, r) => n + r.opened, 0);
  const failed = opened.reduce((n, r) => n + r.failed, 0);
  run.phase(
    `${streams.toLocaleString('en-US')} streams open through nginx in ${elapsed(connectStarted)}` +
      `, ${scenario.devices} device(s) connected in ${(devices.connectMs / 1000).toFixed(1)} s` +
      (failed ? `; ${failed} FAILED: ${[...new Set(opened.flatMap((r) => r.failures))].join('; ')}` : ''),
  );
  await sleep(2_000); // let the opening's garbage and buffers settle before reading RSS
  const rssIdleEach = appRssEach(target);
  return { loads, streams, failed, rssHalf, halfStreams, rssIdle: sum(rssIdleEach), rssIdleEach };
}

/** The app's highest RSS (all replicas), sampled every 250 ms from `initial` on until stop(). */
export function watchRssPeak(target: Target, initial: number): { peak: () => number; stop: () => void } {
  let peak = initial;
  const timer = setInterval(() => (peak = Math.max(peak, appRss(target))), 250);
  return { peak: () => peak, stop: () => clearInterval(timer) };
}

/** Makes the scenario's slow clients stop reading; returns when they did (0: no slow clients). */
export async function stallSlowClients(run: Run, loads: Load[]): Promise<number> {
  if (run.scenario.slowFraction <= 0) return 0;
  const stalledAt = Date.now();
  const stalled = await Promise.all(loads.map((l) => l.request({ type: 'stall' }, 'stalled', 10_000)));
  run.phase(`${stalled.reduce((n, r) => n + r.count, 0)} clients stop reading`);
  return stalledAt;
}

/** Unmeasured traffic before the window. */
export async function warmUp(run: Run, publisher: Publisher): Promise<void> {
  const { settings } = run;
  if (settings.warmupSeconds > 0) {
    await publisher.request({ type: 'publish', rate: run.scenario.rate, seconds: settings.warmupSeconds, window: 0 }, 'published', settings.warmupSeconds * 1000 + 30_000);
  }
}

export type MergedStats = LoadStats & { hist: Histogram };

function mergeStats(all: LoadStats[]): MergedStats {
  const hist = new Histogram();
  for (const s of all) hist.merge(s.fast.latency);
  const sum = (f: (s: LoadStats) => number) => all.reduce((acc, s) => acc + f(s), 0);
  return {
    clients: sum((s) => s.clients),
    slowClients: sum((s) => s.slowClients),
    opened: sum((s) => s.opened),
    failed: sum((s) => s.failed),
    failures: all.flatMap((s) => s.failures),
    closedFast: sum((s) => s.closedFast),
    closedSlow: sum((s) => s.closedSlow),
    open: sum((s) => s.open),
    reopened: sum((s) => s.reopened),
    retriesFailed: sum((s) => s.retriesFailed),
    fast: {
      received: sum((s) => s.fast.received),
      duplicates: sum((s) => s.fast.duplicates),
      minPerClient: Math.min(...all.map((s) => s.fast.minPerClient)),
      latency: hist.toData(),
    },
    slow: { received: sum((s) => s.slow.received), duplicates: sum((s) => s.slow.duplicates) },
    hist,
  };
}

/** Every load process's counts so far, summed. */
export async function collectStats(loads: Load[]): Promise<MergedStats> {
  return mergeStats((await Promise.all(loads.map((l) => l.request({ type: 'stats' }, 'stats', 10_000)))).map((r) => r.stats));
}

export interface Window {
  published: number;
  /** Events the reading clients should have received. */
  expected: number;
  stats: MergedStats;
  cpu: CpuSample;
  seconds: number;
  loadgenCores: number;
  /** The service's own counters at the end of the window, summed over its replicas (not the baseline). */
  counters: Record<string, number>;
  /** Per app process: its CPU, and its counters at the start and the end of the window (not the baseline). */
  apps: { cpu: number; before: Record<string, number>; after: Record<string, number> }[];
}

/** The measurement window: from the first measured publish until the last one is delivered. */
export async function measureWindow(run: Run, target: Target, publisher: Publisher, loads: Load[]): Promise<Window> {
  const { settings } = run;
  const loadPids = [publisher.pid, ...loads.map((l) => l.pid)];
  const service = run.targetName !== 'baseline' && run.targetName !== 'nchan';
  const loadCpu0 = loadPids.reduce((n, pid) => n + cpuMicros(pid), 0);
  const perApp: PidGroups = Object.fromEntries(target.apps.map((a) => [a.name, () => [a.pid]]));
  const before = service ? await appCountersEach(target) : [];
  const cpu0 = sampleCpu(target.pids);
  const appCpu0 = sampleCpu(perApp);
  const t0 = Date.now();
  run.phase(`warm-up ${settings.warmupSeconds} s done; measuring ${settings.seconds} s at ${run.scenario.rate} msg/s`);
  const published = await publisher.request(
    { type: 'publish', rate: run.scenario.rate, seconds: settings.seconds, window: 1 },
    'published',
    settings.seconds * 1000 + 30_000,
  );
  let stats = await collectStats(loads);
  const fast = stats.opened - stats.slowClients;
  const expected = published.count * fast;
  const drainStarted = Date.now();
  while (stats.fast.received + stats.fast.duplicates < expected && Date.now() - drainStarted < DRAIN_TIMEOUT_MS) {
    await sleep(100);
    stats = await collectStats(loads);
  }
  const cpu = cpuDelta(cpu0, sampleCpu(target.pids));
  const appCpu = cpuDelta(appCpu0, sampleCpu(perApp));
  const seconds = (Date.now() - t0) / 1000;
  const loadgenCores = (loadPids.reduce((n, pid) => n + cpuMicros(pid), 0) - loadCpu0) / 1e6 / seconds;
  const after = service ? await appCountersEach(target) : [];
  const counters = sumCounters(after);
  const apps = after.map((a, i) => ({ cpu: appCpu[target.apps[i]!.name] ?? 0, before: before[i] ?? {}, after: a }));
  return { published: published.count, expected, stats, cpu, seconds, loadgenCores, counters, apps };
}

const DELIVERED = 'sse_events_delivered_total{event="telemetry"}';

/** Per replica, when there are several: what nginx gave it, what it delivered, what that cost. */
function replicaResults(target: Target, devices: Devices, streams: Streams, window: Window): ReplicaResult[] | undefined {
  if (target.apps.length < 2) return undefined;
  return window.apps.map((a, i) => ({
    name: target.apps[i]!.name,
    streams: a.after['sse_clients'] ?? 0,
    ingest: a.after['ingest_leader'] === 1,
    delivered: (a.after[DELIVERED] ?? 0) - (a.before[DELIVERED] ?? 0),
    cpuMicros: a.cpu,
    rssBefore: devices.rssBeforeEach[i] ?? 0,
    rssIdle: streams.rssIdleEach[i] ?? 0,
  }));
}

export function toResult(run: Run, target: Target, devices: Devices, streams: Streams, window: Window, rssPeak: number): RunResult {
  const { stats, cpu, counters } = window;
  const replicas = replicaResults(target, devices, streams, window);
  return {
    scenario: run.scenario,
    target: run.targetName,
    clients: run.scenario.clients,
    streams: streams.streams,
    failed: streams.failed,
    slowClients: stats.slowClients,
    published: window.published,
    expected: window.expected,
    delivered: stats.fast.received,
    duplicates: stats.fast.duplicates,
    dropped: stats.closedFast,
    minPerClient: stats.fast.minPerClient,
    deliveredAll: stats.fast.received + stats.slow.received,
    cpuMicros: { app: cpu['app'] ?? 0, nginx: cpu['nginx'] ?? 0, broker: cpu['broker'] ?? 0, redis: cpu['redis'] ?? 0 },
    p50: stats.hist.quantileMs(0.5),
    p99: stats.hist.quantileMs(0.99),
    max: stats.hist.maxMs,
    rssBefore: devices.rssBefore,
    rssIdle: streams.rssIdle,
    rssHalf: streams.rssHalf,
    halfStreams: streams.halfStreams,
    rssPeak,
    evictedSlow: counters['sse_disconnects_total{reason="slow"}'] ?? 0,
    evictedDeadline: counters['sse_disconnects_total{reason="deadline"}'] ?? 0,
    conflated: counters['sse_events_conflated_total'] ?? 0,
    loadgenCores: window.loadgenCores,
    windowSeconds: window.seconds,
    ...(replicas ? { replicas } : {}),
  };
}

/**
 * Keeps publishing (outside the measured window) until the app reports every stalled client
 * evicted, bounded by EVICTION_TIMEOUT_MS; records when that happened and the final counters.
 */
export async function awaitEviction(run: Run, result: RunResult, publisher: Publisher, appPort: number, stalledAt: number): Promise<void> {
  const evicted = () => result.evictedSlow + result.evictedDeadline;
  const rate = run.scenario.rate;
  let lastReport = Date.now();
  while (evicted() < result.slowClients && Date.now() - stalledAt < EVICTION_TIMEOUT_MS) {
    await publisher.request({ type: 'publish', rate, seconds: EVICTION_STEP_SECONDS, window: 0 }, 'published', EVICTION_STEP_SECONDS * 1000 + 30_000);
    const counters = await appCounters(appPort);
    result.evictedSlow = counters['sse_disconnects_total{reason="slow"}'] ?? 0;
    result.evictedDeadline = counters['sse_disconnects_total{reason="deadline"}'] ?? 0;
    result.conflated = counters['sse_events_conflated_total'] ?? 0;
    if (Date.now() - lastReport >= 10_000) {
      lastReport = Date.now();
      run.phase(`waiting for eviction: ${evicted()} of ${result.slowClients} after ${elapsed(stalledAt)} of stalling`);
    }
  }
  if (evicted() >= result.slowClients) result.evictionSeconds = (Date.now() - stalledAt) / 1000;
  run.phase(
    `${evicted()} of ${result.slowClients} stalled clients evicted` +
      (result.evictionSeconds !== undefined ? ` ${result.evictionSeconds.toFixed(0)} s after they stopped reading` : ` within ${EVICTION_TIMEOUT_MS / 1000} s`) +
      `; ${result.conflated.toLocaleString('en-US')} telemetry events conflated meanwhile`,
  );
}

/** The run's one-line summary. */
export function reportRun(run: Run, result: RunResult, rssPeak: number): void {
  run.phase(
    `${(completeness(result) * 100).toFixed(2)} % of ${result.expected.toLocaleString('en-US')} delivered` +
      `${result.duplicates ? `, ${result.duplicates} dup` : ''}${result.dropped ? `, ${result.dropped} streams cut` : ''}` +
      `; ${perEvent(result, 'total').toFixed(2)} µs CPU/event (app ${perEvent(result, 'app').toFixed(2)}, nginx ${perEvent(result, 'nginx').toFixed(2)}, broker ${perEvent(result, 'broker').toFixed(2)}` +
      `${isShared(result.target) ? `, redis ${perEvent(result, 'redis').toFixed(2)}` : ''})` +
      `; p50/p99/max ${result.p50.toFixed(1)}/${result.p99.toFixed(1)}/${result.max.toFixed(1)} ms` +
      `; ${rssPerStreamKB(result).toFixed(1)} KB/stream (${rssMarginalKB(result).toFixed(1)} for the second half)` +
      (result.slowClients ? `; evicted ${result.evictedSlow} slow + ${result.evictedDeadline} deadline, RSS peak ${(rssPeak / 2 ** 20).toFixed(0)} MB` : '') +
      `; load generator ${result.loadgenCores.toFixed(2)} cores; ${elapsed(run.started)}`,
  );
  for (const r of result.replicas ?? []) {
    run.phase(
      `  ${r.name}${r.ingest ? ' (ingest)' : ''}: ${r.streams.toLocaleString('en-US')} streams, ${r.delivered.toLocaleString('en-US')} delivered` +
        `, ${replicaPerEvent(r).toFixed(2)} µs CPU/event, RSS ${(r.rssBefore / 2 ** 20).toFixed(0)} → ${(r.rssIdle / 2 ** 20).toFixed(0)} MB`,
    );
  }
}

/** Closes every stream and disconnects the devices; failures here do not fail the run. */
export async function closeClients(loads: Load[], publisher: Publisher): Promise<void> {
  await Promise.all(loads.map((l) => l.request({ type: 'close' }, 'closed', 10_000).catch(() => undefined)));
  await publisher.request({ type: 'stop' }, 'stopped', 10_000).catch(() => undefined);
}
