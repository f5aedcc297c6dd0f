// The `storm` scenario's window: every stream cut at once by an nginx restart while telemetry
// flows, the clients reconnecting as EventSource does (after the stream's jittered `retry:`, with
// Last-Event-ID). Measured: the time until every stream is open again, what was delivered over
// the whole window (the replay covers the gap, or it does not), and the CPU the reconnects cost.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Load, Publisher } from './child.js';
import { completeness, f1, int, pct } from './format.js';
import { cpuMicros, cpuDelta, sampleCpu } from './proc.js';
import type { Verdict } from './report.js';
import { collectStats, type Run } from './steps.js';
import type { Target } from './target.js';

/** Telemetry before the cut, and the whole window: long enough for the storm to end inside it. */
const CUT_AFTER_MS = 5_000;
const PUBLISH_SECONDS = 30;
/** The longest the bench waits for every stream to be back (the target is 15 s). */
const RECOVERY_TIMEOUT_MS = 60_000;
const POLL_MS = 100;
const DRAIN_TIMEOUT_MS = 10_000;

export interface StormResult {
  target: string;
  streams: number;
  /** From the cut (nginx's SIGTERM) until every stream was open again; undefined: not within the timeout. */
  recoveryMs: number | undefined;
  /** Half of the streams back (the median client's outage). */
  halfMs: number | undefined;
  reopened: number;
  /** Reconnect attempts that failed (refused while nginx was down, or cut again). */
  retriesFailed: number;
  published: number;
  expected: number;
  delivered: number;
  duplicates: number;
  /** CPU from the cut until recovery: the app, and the new nginx (master and workers, since its start). */
  appCpuMs: number;
  nginxCpuMs: number;
  /**
   * The load generator's CPU over the same time (its client side of every TLS handshake and its
   * parsing): it shares the machine's cores with what it measures.
   */
  loadgenCpuMs: number;
}

export async function stormWindow(run: Run, target: Target, publisher: Publisher, loads: Load[], streams: number): Promise<StormResult> {
  const publishing = publisher.request({ type: 'publish', rate: run.scenario.rate, seconds: PUBLISH_SECONDS, window: 1 }, 'published', PUBLISH_SECONDS * 1000 + 30_000);
  // Awaited below; a failure before that (the run is stopped, its publisher killed) is not unhandled.
  publishing.catch(() => undefined);
  await sleep(CUT_AFTER_MS);
  const before = await collectStats(loads);
  const measured = { app: () => target.apps.map((a) => a.pid), load: () => loads.map((l) => l.pid) };
  const cpu0 = sampleCpu(measured);
  const cut = Date.now();
  run.phase(`${before.open.toLocaleString('en-US')} streams open; restarting nginx`);
  await target.restartProxy();
  run.phase(`nginx back in ${Date.now() - cut} ms; waiting for the streams`);
  let recoveryMs: number | undefined;
  let halfMs: number | undefined;
  let stats = before;
  let lastReport = Date.now();
  while (Date.now() - cut < RECOVERY_TIMEOUT_MS) {
    stats = await collectStats(loads);
    const back = stats.reopened - before.reopened;
    if (halfMs === undefined && back >= streams / 2) halfMs = Date.now() - cut;
    if (back >= streams && stats.open >= streams) {
      recoveryMs = Date.now() - cut;
      break;
    }
    if (Date.now() - lastReport >= 5_000) {
      lastReport = Date.now();
      run.phase(`${back.toLocaleString('en-US')} of ${streams.toLocaleString('en-US')} streams back after ${((Date.now() - cut) / 1000).toFixed(1)} s`);
    }
    await sleep(POLL_MS);
  }
  const spent = cpuDelta(cpu0, sampleCpu(measured));
  const appCpu = spent['app'] ?? 0;
  const nginxCpu = (target.pids['nginx']?.() ?? []).reduce((n, pid) => n + cpuMicros(pid), 0);
  const published = await publishing;
  const expected = published.count * streams;
  const drainStarted = Date.now();
  stats = await collectStats(loads);
  while (stats.fast.received + stats.fast.duplicates < expected && Date.now() - drainStarted < DRAIN_TIMEOUT_MS) {
    await sleep(POLL_MS);
    stats = await collectStats(loads);
  }
  return {
    target: run.targetName,
    streams,
    recoveryMs,
    halfMs,
    reopened: stats.reopened - before.reopened,
    retriesFailed: stats.retriesFailed - before.retriesFailed,
    published: published.count,
    expected,
    delivered: stats.fast.received,
    duplicates: stats.fast.duplicates,
    appCpuMs: appCpu / 1000,
    nginxCpuMs: nginxCpu / 1000,
    loadgenCpuMs: (spent['load'] ?? 0) / 1000,
  };
}

const s1 = (ms: number | undefined) => (ms === undefined ? '–' : `${f1(ms / 1000)} s`);

/** Every stream back within 15 s, every event delivered once (the replay covers the outage). */
export function stormVerdict(r: StormResult): Verdict {
  const full = r.streams >= 10_000;
  return {
    met: full && r.recoveryMs !== undefined && r.recoveryMs <= 15_000 && r.delivered === r.expected && r.duplicates === 0,
    text: `storm/${r.target}: ${int(r.streams)} streams back ${r.recoveryMs === undefined ? 'NOT within 60 s' : `in ${f1(r.recoveryMs / 1000)} s`} (≤ 15), `
      + `${pct(completeness(r))} delivered, ${r.duplicates} duplicates${full ? '' : ' (scaled run)'}`,
  };
}

export function stormLine(r: StormResult): string {
  return `${int(r.streams)} streams back in ${s1(r.recoveryMs)} (half in ${s1(r.halfMs)}), ${r.retriesFailed} refused retries; `
    + `${pct(completeness(r))} of ${int(r.expected)} delivered, ${r.duplicates} dup; `
    + `CPU until back: app ${(r.appCpuMs / 1000).toFixed(2)} s, nginx ${(r.nginxCpuMs / 1000).toFixed(2)} s, load generator ${(r.loadgenCpuMs / 1000).toFixed(2)} s`;
}

export function stormMarkdown(results: readonly StormResult[]): string[] {
  if (results.length === 0) return [];
  const out = ['', 'Reconnect storm (every stream cut at once by an nginx restart; clients reconnect after the jittered `retry:` with Last-Event-ID):', ''];
  out.push('| target | streams | all back after | half back after | refused retries | delivered / expected | dup | app CPU until back | nginx CPU until back | load generator CPU until back | app CPU per reconnect |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    out.push(
      `| ${r.target} | ${int(r.streams)} | **${s1(r.recoveryMs)}** | ${s1(r.halfMs)} | ${r.retriesFailed} ` +
        `| ${int(r.delivered)} / ${int(r.expected)} = ${pct(completeness(r))} | ${r.duplicates} ` +
        `| ${(r.appCpuMs / 1000).toFixed(2)} s | ${(r.nginxCpuMs / 1000).toFixed(2)} s | ${(r.loadgenCpuMs / 1000).toFixed(2)} s | ${((r.appCpuMs * 1000) / Math.max(1, r.reopened)).toFixed(0)} µs |`,
    );
  }
  return out;
}
