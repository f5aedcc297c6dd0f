// The results as markdown tables: one row per scenario and target, the ratios of the pairs
// (RATIO_PAIRS: project/baseline, socket/TCP, redis/project, project/nchan), each replica of a
// replicas run, the slow-client comparison, and a verdict per target (`targets` below).
import type { Machine } from './proc.js';
import { isShared, type Scenario, type Settings, type TargetName } from './scenarios.js';
import { completeness, f1, f2, int, mb, pct } from './format.js';
import { stormMarkdown, stormVerdict, type StormResult } from './storm.js';

/** Whose CPU is measured: the app (every replica), nginx (master + workers), Mosquitto, redis-server. */
export type CpuPart = 'app' | 'nginx' | 'broker' | 'redis';

/** One replica of a run with several: its share of the streams and what they cost it. */
export interface ReplicaResult {
  name: string;
  /** Its open streams at the end of the window (its /metrics `sse_clients`). */
  streams: number;
  /** Whether it held the ingest lease, and so ran the MQTT ingest session and the appends. */
  ingest: boolean;
  /** Telemetry events it wrote to its streams over the window (its `sse_events_delivered_total`). */
  delivered: number;
  cpuMicros: number;
  rssBefore: number;
  rssIdle: number;
}

export interface RunResult {
  scenario: Scenario;
  target: TargetName;
  clients: number;
  streams: number;
  failed: number;
  slowClients: number;
  published: number;
  /** Events the fast (reading) clients should have received in the window. */
  expected: number;
  delivered: number;
  duplicates: number;
  /** Fast clients' streams the server ended during the run. */
  dropped: number;
  minPerClient: number;
  /** Every event written to a client in the window (fast + slow): the divisor for CPU. */
  deliveredAll: number;
  cpuMicros: Record<CpuPart, number>;
  p50: number;
  p99: number;
  max: number;
  rssBefore: number;
  rssIdle: number;
  /** App RSS with the first half of the streams open, and how many that was. */
  rssHalf: number;
  halfStreams: number;
  rssPeak: number;
  evictedSlow: number;
  evictedDeadline: number;
  conflated: number;
  /** Seconds from the moment the slow clients stopped reading until the app had evicted them all. */
  evictionSeconds?: number;
  loadgenCores: number;
  windowSeconds: number;
  /** Only with several replicas. */
  replicas?: ReplicaResult[];
}

export const perEvent = (r: RunResult, part: CpuPart | 'total') =>
  (part === 'total' ? r.cpuMicros.app + r.cpuMicros.nginx + r.cpuMicros.broker + r.cpuMicros.redis : r.cpuMicros[part]) / Math.max(1, r.deliveredAll);
export const replicaPerEvent = (r: ReplicaResult) => r.cpuMicros / Math.max(1, r.delivered);
export const rssPerStreamKB = (r: RunResult) => (r.rssIdle - r.rssBefore) / Math.max(1, r.streams) / 1024;
/** What one more idle stream costs: RSS growth over the second half of the streams. */
export const rssMarginalKB = (r: RunResult) => (r.rssIdle - r.rssHalf) / Math.max(1, r.streams - r.halfStreams) / 1024;


/**
 * Of several rounds of the same plan (the same runs in the same order), each run's median by
 * total CPU per delivery (the lower middle one of an even count): a real run, not averaged.
 */
export function medianRuns(rounds: readonly (readonly RunResult[])[]): RunResult[] {
  const first = rounds[0] ?? [];
  return first.map((_, i) => {
    const runs = rounds.map((round) => round[i]!).sort((a, b) => perEvent(a, 'total') - perEvent(b, 'total'));
    return runs[Math.floor((runs.length - 1) / 2)]!;
  });
}

/** Each round's total CPU per delivery and p99 per run, and the ratios of the pairs within each round. */
function roundsTable(rounds: readonly (readonly RunResult[])[]): string[] {
  if (rounds.length < 2) return [];
  const out = ['', `Rounds (the runs shown above are each run's median of ${rounds.length} by total CPU per delivery; rounds interleaved, so the two runs of a ratio are measured close together each time: quote the median of the per-round ratios, last column):`, ''];
  out.push(`| scenario | target | ${rounds.map((_, i) => `round ${i + 1}`).join(' | ')} | **median** |`);
  out.push(`|---|---|${rounds.map(() => '---:').join('|')}|---:|`);
  for (let i = 0; i < rounds[0]!.length; i += 1) {
    const r = rounds[0]![i]!;
    const runs = rounds.map((round) => round[i]!);
    const cells = runs.map((x) => `${f2(perEvent(x, 'total'))} µs, ${f1(x.p99)} ms`);
    out.push(`| ${r.scenario.name} | ${r.target} | ${cells.join(' | ')} | **${f2(median(runs.map((x) => perEvent(x, 'total'))))} µs, ${f1(median(runs.map((x) => x.p99)))} ms** |`);
  }
  // A ratio per round, from the two runs of that round; its median is the figure to quote.
  for (const [over, under] of RATIO_PAIRS) {
    for (const o of rounds[0]!.filter((r) => r.target === over)) {
      if (!find(rounds[0]!, o.scenario.name, under)) continue;
      const pairs = rounds.map((round) => [find(round, o.scenario.name, over)!, find(round, o.scenario.name, under)!] as const);
      const ratioOf = ([a, b]: readonly [RunResult, RunResult]) => perEvent(a, 'total') / perEvent(b, 'total');
      const diffOf = ([a, b]: readonly [RunResult, RunResult]) => a.p99 - b.p99;
      const cell = (ratio: number, diff: number) => `${f2(ratio)} ×, ${diff >= 0 ? '+' : '−'}${f1(Math.abs(diff))} ms`;
      out.push(`| ${o.scenario.name} | ${over} ÷ ${under} | ${pairs.map((p) => cell(ratioOf(p), diffOf(p))).join(' | ')} | **${cell(median(pairs.map(ratioOf)), median(pairs.map(diffOf)))}** |`);
    }
  }
  return out;
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The pairs the report compares, as `over` ÷ `under`. */
const RATIO_PAIRS: readonly (readonly [TargetName, TargetName])[] = [
  ['project', 'baseline'],
  ['project', 'project-tcp'],
  ['redis', 'project'],
  ['redis', 'redis-tcp'],
  ['project', 'nchan'],
];

function find(results: readonly RunResult[], scenario: string, target: TargetName): RunResult | undefined {
  return results.find((r) => r.scenario.name === scenario && r.target === target);
}

export function markdown(results: RunResult[], settings: Settings, machine: Machine, command: string, started: Date, storms: readonly StormResult[] = [], rounds: readonly (readonly RunResult[])[] = []): string {
  const out: string[] = [];
  out.push(`## ${started.toISOString().replace(/\.\d+Z$/, 'Z')} — \`${command}\``);
  out.push('');
  out.push(
    `Machine: ${machine.cores} cores, ${machine.model}, ${machine.memGiB} GiB RAM, node ${machine.node}, ` +
      `Linux ${machine.kernel}, nginx ${machine.nginx}, mosquitto ${machine.mosquitto}, redis ${machine.redis}. ` +
      `Publisher QoS ${settings.qos}; ${settings.seconds} s measured after ${settings.warmupSeconds} s warm-up; ` +
      `client counts × ${settings.scale}. Everything on 127.0.0.1 (clients from 127.0.0.2+, ≤ 50 per address).`,
  );
  out.push('');
  if (results.length > 0) {
    out.push('| scenario | target | streams | delivered / expected | dup | app µs/ev | nginx µs/ev | broker µs/ev | redis µs/ev | **total µs/ev** | p50 ms | **p99 ms** | max ms | app RSS idle−before | **KB/stream** | KB/stream, 2nd half |');
    out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of results) {
      out.push(
        `| ${r.scenario.name} | ${r.target} | ${int(r.streams)}${r.failed ? ` (${r.failed} failed)` : ''}${r.slowClients ? ` (${r.slowClients} slow)` : ''} ` +
          `| ${int(r.delivered)} / ${int(r.expected)} = ${pct(completeness(r))} | ${r.duplicates} ` +
          `| ${f2(perEvent(r, 'app'))} | ${f2(perEvent(r, 'nginx'))} | ${f2(perEvent(r, 'broker'))} | ${isShared(r.target) ? f2(perEvent(r, 'redis')) : '–'} | **${f2(perEvent(r, 'total'))}** ` +
          `| ${f1(r.p50)} | **${f1(r.p99)}** | ${f1(r.max)} | ${mb(r.rssIdle)}−${mb(r.rssBefore)} MB | **${f1(rssPerStreamKB(r))}** | ${f1(rssMarginalKB(r))} |`,
      );
    }
  }

  out.push(...ratios(results, 'project', 'baseline', 'Project ÷ baseline (lower is better):'));
  out.push(...ratios(results, 'project', 'project-tcp', 'Unix socket ÷ TCP loopback: the project with nginx reaching it over its socket against over TCP (lower is better):'));
  out.push(...ratios(results, 'redis', 'project', 'Redis ÷ project: the shared log against the embedded service (lower is better; the total includes Redis):'));
  out.push(...ratios(results, 'redis', 'redis-tcp', 'Unix socket ÷ TCP loopback with the shared log: nginx reaching each replica over its own socket against over TCP, as compose\'s --scale does (lower is better):'));
  out.push(...ratios(results, 'project', 'nchan', 'Project ÷ nchan: the proxied design against fan-out inside nginx (lower is better; nchan\'s "app" is its MQTT → HTTP publisher bridge):'));
  out.push(...roundsTable(rounds));

  const replicated = results.filter((r) => r.replicas);
  if (replicated.length > 0) {
    out.push('');
    out.push('Per replica (each replica process on its own: streams and deliveries from its /metrics, CPU and RSS from /proc):');
    out.push('');
    out.push('| scenario | replica | streams | delivered | **CPU µs/ev** | RSS idle−before | KB/stream |');
    out.push('|---|---|---:|---:|---:|---:|---:|');
    for (const r of replicated) {
      for (const p of r.replicas!) {
        out.push(
          `| ${r.scenario.name} | ${p.name}${p.ingest ? ' (ingest)' : ''} | ${int(p.streams)} | ${int(p.delivered)} | **${f2(replicaPerEvent(p))}** ` +
            `| ${mb(p.rssIdle)}−${mb(p.rssBefore)} MB | ${f1((p.rssIdle - p.rssBefore) / Math.max(1, p.streams) / 1024)} |`,
        );
      }
    }
  }

  const slow = results.filter((r) => r.slowClients > 0);
  if (slow.length > 0) {
    out.push('');
    out.push('Slow clients (they stop reading when the warm-up starts; the load goes on after the window until the app has evicted them;');
    out.push('until then a stalled reader fills the kernel socket buffers on both sides of nginx, up to tcp_wmem\'s maximum each, before the app\'s writes block):');
    out.push('');
    out.push('| scenario | target | slow / all | others delivered | others p99 ms (without slow clients) | app RSS idle → peak | evicted slow / deadline | evicted after | conflated |');
    out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of slow) {
      const ref = r.scenario.reference ? find(results, r.scenario.reference, r.target) : undefined;
      out.push(
        `| ${r.scenario.name} | ${r.target} | ${r.slowClients} / ${r.streams} | ${pct(completeness(r))} ` +
          `| ${f1(r.p99)} (${ref ? f1(ref.p99) : '–'}) | ${mb(r.rssIdle)} → ${mb(r.rssPeak)} MB | ${r.evictedSlow} / ${r.evictedDeadline} | ${r.evictionSeconds === undefined ? '–' : `${f1(r.evictionSeconds)} s`} | ${int(r.conflated)} |`,
      );
    }
  }

  out.push(...stormMarkdown(storms));

  const verdicts = [...targets(results), ...storms.map(stormVerdict)];
  if (verdicts.length > 0) {
    out.push('');
    out.push('Targets:');
    out.push('');
    for (const v of verdicts) out.push(`- ${v.met ? '**met**' : '**NOT met**'}: ${v.text}`);
  }
  out.push('');
  return out.join('\n');
}

/** `over` ÷ `under` per scenario both ran, as table lines (none when no scenario has both). */
function ratios(results: RunResult[], over: TargetName, under: TargetName, title: string): string[] {
  const pairs = results.filter((r) => r.target === over).flatMap((o) => {
    const u = find(results, o.scenario.name, under);
    return u ? [[o, u] as const] : [];
  });
  if (pairs.length === 0) return [];
  const ratio = (x: number, y: number) => f2(x / y);
  const out = ['', title, ''];
  out.push('| scenario | app CPU/ev | nginx CPU/ev | broker CPU/ev | **total CPU/ev** | p99 | p99 difference | KB/stream |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [o, u] of pairs) {
    out.push(
      `| ${o.scenario.name} | ${ratio(perEvent(o, 'app'), perEvent(u, 'app'))} | ${ratio(perEvent(o, 'nginx'), perEvent(u, 'nginx'))} ` +
        `| ${ratio(perEvent(o, 'broker'), perEvent(u, 'broker'))} | **${ratio(perEvent(o, 'total'), perEvent(u, 'total'))}** ` +
        `| ${ratio(o.p99, u.p99)} | ${o.p99 >= u.p99 ? '+' : '−'}${f1(Math.abs(o.p99 - u.p99))} ms | ${ratio(rssPerStreamKB(o), rssPerStreamKB(u))} |`,
    );
  }
  return out;
}

export interface Verdict {
  met: boolean;
  text: string;
}

export function targets(results: RunResult[]): Verdict[] {
  const out: Verdict[] = [];
  const capacity = find(results, 'capacity', 'project');
  if (capacity) {
    const full = capacity.scenario.clients >= 10_000;
    out.push({
      met: full && capacity.streams >= 10_000 && completeness(capacity) === 1 && capacity.duplicates === 0,
      text: `capacity: ${int(capacity.streams)} streams through nginx, ${pct(completeness(capacity))} delivered, ${capacity.duplicates} duplicates${full ? '' : ' (scaled run)'}`,
    });
    out.push({
      met: rssPerStreamKB(capacity) <= 10,
      text:
        `capacity: app memory ${f1(rssPerStreamKB(capacity))} KB per idle stream (≤ 10): RSS growth over all streams ÷ streams; ` +
        `the second half of them cost ${f1(rssMarginalKB(capacity))} KB each`,
    });
  }
  for (const [name, limit, p99] of [['dashboard', 0.5, 100], ['broadcast', 0.65, 60], ['capacity', 0.5, Number.POSITIVE_INFINITY]] as const) {
    const p = find(results, name, 'project');
    const b = find(results, name, 'baseline');
    if (p && b) {
      const ratio = perEvent(p, 'total') / perEvent(b, 'total');
      out.push({ met: ratio <= limit, text: `${name}: server CPU per delivery ${f2(ratio)} × the baseline (≤ ${limit}; ${f2(perEvent(p, 'total'))} vs ${f2(perEvent(b, 'total'))} µs)` });
    }
    if (p && Number.isFinite(p99)) out.push({ met: p.p99 <= p99, text: `${name}: p99 device → client ${f1(p.p99)} ms (≤ ${p99})` });
  }
  const embedded = find(results, 'dashboard', 'project');
  const nchan = find(results, 'dashboard', 'nchan');
  if (embedded && nchan) {
    out.push({
      met: perEvent(embedded, 'total') <= perEvent(nchan, 'total') && embedded.p99 <= 12,
      text: `dashboard: server CPU per delivery ${f2(perEvent(embedded, 'total'))} µs vs nchan's ${f2(perEvent(nchan, 'total'))} at p99 ${f1(embedded.p99)} ms (≤ nchan's, at ≤ 12 ms)`,
    });
  }
  const off = find(results, 'coalesce-off', 'project');
  if (off && nchan) out.push({ met: off.p99 <= 1.5 * nchan.p99, text: `dashboard with coalescing off: p99 ${f1(off.p99)} ms vs nchan's ${f1(nchan.p99)} ms (≤ 1.5 ×)` });
  const shared = find(results, 'dashboard', 'redis');
  if (embedded && shared) {
    const ratio = perEvent(shared, 'total') / perEvent(embedded, 'total');
    out.push({
      met: ratio <= 1.2,
      text: `dashboard: server CPU per delivery with the shared log ${f2(ratio)} × embedded (≤ 1.2; ${f2(perEvent(shared, 'total'))} µs with Redis's ${f2(perEvent(shared, 'redis'))} vs ${f2(perEvent(embedded, 'total'))} µs)`,
    });
    out.push({ met: shared.p99 <= embedded.p99 + 5, text: `dashboard: p99 with the shared log ${f1(shared.p99)} ms vs ${f1(embedded.p99)} ms embedded (≤ +5 ms)` });
  }
  for (const r of results.filter((x) => isShared(x.target))) {
    out.push({
      met: completeness(r) === 1 && r.duplicates === 0 && r.failed === 0 && r.dropped === 0,
      text:
        `${r.scenario.name} with the shared log${r.target === 'redis-tcp' ? ' over TCP' : ''}: ${pct(completeness(r))} delivered, ${r.duplicates} duplicates` +
        ` (${int(r.streams)} of ${int(r.clients)} streams open, ${r.dropped} cut)`,
    });
  }
  for (const r of results.filter((x) => x.slowClients > 0)) {
    const ref = r.scenario.reference ? find(results, r.scenario.reference, r.target) : undefined;
    if (ref) out.push({ met: r.p99 <= ref.p99 * 1.2, text: `${r.scenario.name}: others' p99 ${f1(r.p99)} ms vs ${f1(ref.p99)} ms without slow clients (≤ +20 %)` });
    const evicted = r.evictedSlow + r.evictedDeadline;
    const when = r.evictionSeconds === undefined ? '' : `, the last ${f1(r.evictionSeconds)} s after they stopped reading`;
    out.push({ met: evicted >= r.slowClients, text: `${r.scenario.name}: ${evicted} of ${r.slowClients} stalled clients evicted and counted (${r.evictedSlow} over the byte bound, ${r.evictedDeadline} past the write deadline${when})` });
    out.push({
      met: completeness(r) === 1 && r.dropped === 0,
      text: `${r.scenario.name}: the reading clients got ${pct(completeness(r))} of their events, ${r.dropped} of them cut`,
    });
  }
  return out;
}
