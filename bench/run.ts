// npm run bench: the native stack and the textbook baseline under the same load, one scenario
// and target at a time, measured from /proc and by the clients themselves. See bench/README.md.
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BENCH_OUT, ROOT } from './harness.js';
import { Histogram } from './histogram.js';
import { cpuDelta, hardOpenFilesLimit, machine, openFilesLimit, rssBytes, sampleCpu, cpuMicros } from './proc.js';
import type { LoadReply, LoadRequest, LoadStats, PublisherReply, PublisherRequest } from './protocol.js';
import { markdown, perEvent, completeness, rssMarginalKB, rssPerStreamKB, type RunResult } from './report.js';
import { readSettings, type Scenario, type Settings, type TargetName } from './scenarios.js';
import { appCounters, serviceOverrides, startTarget, type Target } from './target.js';

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

const log = (line: string) => process.stdout.write(`${line}\n`);
const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

// --- child processes over IPC ------------------------------------------------------------

class Child<Req, Rep extends { type: string }> {
  readonly proc: ChildProcess;
  private readonly waiting: { type: string; resolve: (r: Rep) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | undefined;

  constructor(readonly name: string, file: string) {
    this.proc = fork(join(BENCH_OUT, file), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (message: Rep) => {
      if (message.type === 'error') {
        this.fail(new Error(`${name}: ${(message as unknown as { message: string }).message}`));
        return;
      }
      const i = this.waiting.findIndex((w) => w.type === message.type);
      if (i >= 0) this.waiting.splice(i, 1)[0]!.resolve(message);
    });
    this.proc.on('exit', (code, signal) => this.fail(new Error(`${name} exited (code ${code}, signal ${signal})`)));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  request<T extends Rep['type']>(message: Req, reply: T, timeoutMs: number): Promise<Extract<Rep, { type: T }>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no "${reply}" within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({
        type: reply,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r as Extract<Rep, { type: T }>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send(message as object);
    });
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

type Load = Child<LoadRequest, LoadReply>;
type Publisher = Child<PublisherRequest, PublisherReply>;

function mergeStats(all: LoadStats[]): LoadStats & { hist: Histogram } {
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

// --- one scenario against one target -----------------------------------------------------

const cleanups = new Set<() => Promise<void>>();

async function runOne(scenario: Scenario, targetName: TargetName, settings: Settings): Promise<RunResult> {
  const label = `${scenario.name}/${targetName}`.padEnd(20);
  const phase = (text: string) => log(`${label} ${text}`);
  const started = Date.now();
  const children: Child<never, { type: string }>[] = [];
  let target: Target | undefined;
  const cleanup = async () => {
    for (const child of children) child.kill();
    await target?.stop();
  };
  cleanups.add(cleanup);
  try {
    target = await startTarget(targetName, scenario.appEnv);
    const nofile = target.nginxWorkerNofile();
    phase(
      `up: mosquitto :${target.broker.port}, ${targetName} :${target.appPort}, nginx :${target.nginx.port}` +
        (nofile < 2 * scenario.clients + 100 ? `  WARNING: nginx workers may open only ${nofile} files` : ''),
    );

    const publisher: Publisher = new Child('publisher', 'publisher.js');
    children.push(publisher as never);
    const ready = await publisher.request(
      { type: 'start', url: target.broker.url, username: target.users.device.username, password: target.users.device.password, devices: scenario.devices, qos: settings.qos },
      'ready',
      60_000,
    );
    await sleep(500);
    const rssBefore = rssBytes(target.appPid);

    // Streams, spread over load processes, opened in two halves: the app's RSS after the first
    // half includes the one-off growth of its heap under a connection storm, so the second half
    // shows what one more idle stream costs.
    const processes = Math.min(MAX_LOAD_PROCESSES, Math.ceil(scenario.clients / CLIENTS_PER_LOAD_PROCESS));
    const loads: Load[] = [];
    const connectStarted = Date.now();
    for (let i = 0; i < processes; i += 1) {
      const load: Load = new Child(`load-${i}`, 'load.js');
      children.push(load as never);
      loads.push(load);
    }
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
              port: target!.nginx.port,
              path: '/events',
              first: half === 0 ? first : first + split,
              count: half === 0 ? split : count - split,
              slowFraction: scenario.slowFraction,
              devices: scenario.devices,
              perAddress: CLIENTS_PER_ADDRESS,
            },
            'connected',
            120_000,
          );
        }),
      );
    await openHalf(0);
    await sleep(2_000);
    const rssHalf = rssBytes(target.appPid);
    const halfStreams = (await Promise.all(loads.map((l) => l.request({ type: 'stats' }, 'stats', 10_000)))).reduce((n, r) => n + r.stats.opened, 0);
    const opened = await openHalf(1); // replies are cumulative per load process
    const streams = opened.reduce((n, r) => n + r.opened, 0);
    const failed = opened.reduce((n, r) => n + r.failed, 0);
    phase(
      `${streams.toLocaleString('en-US')} streams open through nginx in ${elapsed(connectStarted)}` +
        `, ${scenario.devices} device(s) connected in ${(ready.ms / 1000).toFixed(1)} s` +
        (failed ? `; ${failed} FAILED: ${[...new Set(opened.flatMap((r) => r.failures))].join('; ')}` : ''),
    );
    await sleep(2_000); // let the opening's garbage and buffers settle before reading RSS
    const rssIdle = rssBytes(target.appPid);

    let rssPeak = rssIdle;
    const rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(target!.appPid))), 250);
    let stalledAt = 0;
    try {
      if (scenario.slowFraction > 0) {
        stalledAt = Date.now();
        const stalled = await Promise.all(loads.map((l) => l.request({ type: 'stall' }, 'stalled', 10_000)));
        phase(`${stalled.reduce((n, r) => n + r.count, 0)} clients stop reading`);
      }
      if (settings.warmupSeconds > 0) {
        await publisher.request({ type: 'publish', rate: scenario.rate, seconds: settings.warmupSeconds, window: 0 }, 'published', settings.warmupSeconds * 1000 + 30_000);
      }

      // The measurement window: from the first measured publish until the last one is delivered.
      const loadPids = [publisher.pid, ...loads.map((l) => l.pid)];
      const loadCpu0 = loadPids.reduce((n, pid) => n + cpuMicros(pid), 0);
      const cpu0 = sampleCpu(target.pids);
      const t0 = Date.now();
      phase(`warm-up ${settings.warmupSeconds} s done; measuring ${settings.seconds} s at ${scenario.rate} msg/s`);
      const published = await publisher.request(
        { type: 'publish', rate: scenario.rate, seconds: settings.seconds, window: 1 },
        'published',
        settings.seconds * 1000 + 30_000,
      );
      const collect = async () =>
        mergeStats((await Promise.all(loads.map((l) => l.request({ type: 'stats' }, 'stats', 10_000)))).map((r) => r.stats));
      let stats = await collect();
      const fast = stats.opened - stats.slowClients;
      const expected = published.count * fast;
      const drainStarted = Date.now();
      while (stats.fast.received + stats.fast.duplicates < expected && Date.now() - drainStarted < DRAIN_TIMEOUT_MS) {
        await sleep(100);
        stats = await collect();
      }
      const cpu = cpuDelta(cpu0, sampleCpu(target.pids));
      const windowSeconds = (Date.now() - t0) / 1000;
      const loadgenCores = (loadPids.reduce((n, pid) => n + cpuMicros(pid), 0) - loadCpu0) / 1e6 / windowSeconds;
      const counters = targetName === 'project' ? await appCounters(target.appPort) : {};

      const result: RunResult = {
        scenario,
        target: targetName,
        clients: scenario.clients,
        streams,
        failed,
        slowClients: stats.slowClients,
        published: published.count,
        expected,
        delivered: stats.fast.received,
        duplicates: stats.fast.duplicates,
        dropped: stats.closedFast,
        minPerClient: stats.fast.minPerClient,
        deliveredAll: stats.fast.received + stats.slow.received,
        cpuMicros: { app: cpu['app'] ?? 0, nginx: cpu['nginx'] ?? 0, broker: cpu['broker'] ?? 0 },
        p50: stats.hist.quantileMs(0.5),
        p99: stats.hist.quantileMs(0.99),
        max: stats.hist.maxMs,
        rssBefore,
        rssIdle,
        rssHalf,
        halfStreams,
        rssPeak,
        evictedSlow: counters['sse_disconnects_total{reason="slow"}'] ?? 0,
        evictedDeadline: counters['sse_disconnects_total{reason="deadline"}'] ?? 0,
        conflated: counters['sse_events_conflated_total'] ?? 0,
        loadgenCores,
        windowSeconds,
      };
      if (result.slowClients > 0 && targetName === 'project') {
        await awaitEviction(result, publisher, target.appPort, stalledAt, scenario.rate, phase);
        result.dropped = (await collect()).closedFast;
        result.rssPeak = rssPeak;
      }
      phase(
        `${(completeness(result) * 100).toFixed(2)} % of ${expected.toLocaleString('en-US')} delivered` +
          `${result.duplicates ? `, ${result.duplicates} dup` : ''}${result.dropped ? `, ${result.dropped} streams cut` : ''}` +
          `; ${perEvent(result, 'total').toFixed(2)} µs CPU/event (app ${perEvent(result, 'app').toFixed(2)}, nginx ${perEvent(result, 'nginx').toFixed(2)}, broker ${perEvent(result, 'broker').toFixed(2)})` +
          `; p50/p99/max ${result.p50.toFixed(1)}/${result.p99.toFixed(1)}/${result.max.toFixed(1)} ms` +
          `; ${rssPerStreamKB(result).toFixed(1)} KB/stream (${rssMarginalKB(result).toFixed(1)} for the second half)` +
          (result.slowClients ? `; evicted ${result.evictedSlow} slow + ${result.evictedDeadline} deadline, RSS peak ${(rssPeak / 2 ** 20).toFixed(0)} MB` : '') +
          `; load generator ${loadgenCores.toFixed(2)} cores; ${elapsed(started)}`,
      );
      return result;
    } finally {
      clearInterval(rssTimer);
      await Promise.all(loads.map((l) => l.request({ type: 'close' }, 'closed', 10_000).catch(() => undefined)));
      await publisher.request({ type: 'stop' }, 'stopped', 10_000).catch(() => undefined);
    }
  } finally {
    await cleanup();
    cleanups.delete(cleanup);
  }
}

/**
 * Keeps publishing (outside the measured window) until the app reports every stalled client
 * evicted, bounded by EVICTION_TIMEOUT_MS; records when that happened and the final counters.
 */
async function awaitEviction(
  result: RunResult,
  publisher: Publisher,
  appPort: number,
  stalledAt: number,
  rate: number,
  phase: (text: string) => void,
): Promise<void> {
  const evicted = () => result.evictedSlow + result.evictedDeadline;
  let lastReport = Date.now();
  while (evicted() < result.slowClients && Date.now() - stalledAt < EVICTION_TIMEOUT_MS) {
    await publisher.request({ type: 'publish', rate, seconds: EVICTION_STEP_SECONDS, window: 0 }, 'published', EVICTION_STEP_SECONDS * 1000 + 30_000);
    const counters = await appCounters(appPort);
    result.evictedSlow = counters['sse_disconnects_total{reason="slow"}'] ?? 0;
    result.evictedDeadline = counters['sse_disconnects_total{reason="deadline"}'] ?? 0;
    result.conflated = counters['sse_events_conflated_total'] ?? 0;
    if (Date.now() - lastReport >= 10_000) {
      lastReport = Date.now();
      phase(`waiting for eviction: ${evicted()} of ${result.slowClients} after ${elapsed(stalledAt)} of stalling`);
    }
  }
  if (evicted() >= result.slowClients) result.evictionSeconds = (Date.now() - stalledAt) / 1000;
  phase(
    `${evicted()} of ${result.slowClients} stalled clients evicted` +
      (result.evictionSeconds !== undefined ? ` ${result.evictionSeconds.toFixed(0)} s after they stopped reading` : ` within ${EVICTION_TIMEOUT_MS / 1000} s`) +
      `; ${result.conflated.toLocaleString('en-US')} telemetry events conflated meanwhile`,
  );
}

// --- main ---------------------------------------------------------------------------------

/** Streams need file descriptors: re-run under the hard limit if the soft one is lower. */
function ensureOpenFiles(): void {
  const hard = hardOpenFilesLimit();
  const soft = openFilesLimit('self');
  if (soft >= Math.min(hard, 65_536) || process.env['BENCH_NOFILE_RAISED']) return;
  const limit = Number.isFinite(hard) ? String(hard) : '65536';
  const child = spawnSync('bash', ['-c', `ulimit -n ${limit} && exec "$@"`, 'bash', process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_NOFILE_RAISED: '1' },
  });
  process.exit(child.status ?? 1);
}

async function main(): Promise<void> {
  ensureOpenFiles();
  const resultsFile = join(ROOT, 'bench', 'RESULTS.md');
  const settings = readSettings(process.env, resultsFile);
  const started = new Date();
  const m = machine();
  const knobs = ['BENCH_SCENARIOS', 'BENCH_TARGETS', 'BENCH_SCALE', 'BENCH_SECONDS', 'BENCH_WARMUP', 'BENCH_QOS']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${process.env[k]}`)
    .concat(Object.entries(serviceOverrides()).map(([k, v]) => `${k}=${v}`));
  const command = [...knobs, 'npm run bench'].join(' ');
  log(`bench: ${m.cores} cores (${m.model}), ${m.memGiB} GiB, node ${m.node}, open files ${openFilesLimit('self')}`);

  // A slow-client scenario needs its reference run (the same load without slow clients).
  const plan: [Scenario, TargetName][] = [];
  for (const scenario of settings.scenarios) {
    const ref = scenario.reference;
    if (ref && !settings.scenarios.some((s) => s.name === ref)) {
      const base = readSettings({ ...process.env, BENCH_SCENARIOS: ref }, resultsFile).scenarios[0]!;
      for (const t of scenario.targets) if (settings.targets.includes(t)) plan.push([base, t]);
    }
    for (const t of scenario.targets) if (settings.targets.includes(t)) plan.push([scenario, t]);
  }

  const results: RunResult[] = [];
  for (const [scenario, target] of plan) results.push(await runOne(scenario, target, settings));

  const table = markdown(results, settings, m, command, started);
  log('');
  log(table);
  if (settings.record) {
    if (!existsSync(settings.resultsFile)) {
      await writeFile(settings.resultsFile, '# Benchmark results\n\nAppended by `npm run bench` (see bench/README.md); newest last.\n\n');
    }
    const previous = await readFile(settings.resultsFile, 'utf8');
    await appendFile(settings.resultsFile, `${previous.endsWith('\n\n') ? '' : '\n'}${table}\n`);
    log(`appended to ${settings.resultsFile}`);
  }
}

let stopping = false;
async function stopAll(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
  }
  process.exit(code);
}
process.on('SIGINT', () => void stopAll(130));
process.on('SIGTERM', () => void stopAll(143));

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await stopAll(1);
  },
);
