// A device's recent past, as the stream carried it: its readings (downsampled to at most the
// points asked for, min and max per time bucket so that spikes survive), its status changes, its
// alerts and its commands, from what the log retains (the shared log's retention, or the embedded
// replay window). The answer names the last log position it covers, so a page that charts it and
// then takes the live stream adds each reading once: those at or before it are in the answer.
import type { HubEvent } from '../sse/event.js';

/** The most points per metric an answer may hold, and the default. */
export const MAX_HISTORY_POINTS = 2_000;
export const DEFAULT_HISTORY_POINTS = 600;
/** How far back one answer may reach, whatever the retention (24 h). */
export const MAX_HISTORY_WINDOW_MS = 24 * 3600 * 1000;
export const DEFAULT_HISTORY_WINDOW_MS = 15 * 60 * 1000;
/** Metrics one question may name. */
export const MAX_HISTORY_METRICS = 16;
/** Alerts, status changes and commands kept in one answer (the newest). */
const MAX_MARKS = 500;

export interface HistoryQuery {
  device: string;
  /** Device time (epoch ms) of the window's start and end. */
  from: number;
  to: number;
  /** Only these metrics; every one when undefined. */
  metrics: ReadonlySet<string> | undefined;
  points: number;
}

export interface Series {
  /** Device timestamps (epoch ms), ascending. */
  t: number[];
  v: number[];
}

export interface History {
  device: string;
  from: number;
  to: number;
  /** The id of the last log entry the answer covers (null before the first); the stream's later events are not in it. */
  until: string | null;
  /** Device time of the oldest entry of this device the log still holds (null: none). */
  oldest: number | null;
  /** Whether some metric had more readings in the window than `points` and was thinned. */
  downsampled: boolean;
  metrics: Record<string, Series>;
  status: { ts: number | null; state: string }[];
  alerts: unknown[];
  commands: unknown[];
}

interface Telemetry {
  ts: number;
  metrics: Record<string, number>;
}

/** The data of an entry's frame: its one `data:` line (the log writes JSON on one line). */
function dataOf(event: HubEvent): unknown {
  const frame = event.frame.toString('utf8');
  const at = frame.indexOf('\ndata: ');
  if (at < 0) return undefined;
  const end = frame.indexOf('\n', at + 7);
  return JSON.parse(frame.slice(at + 7, end < 0 ? undefined : end)) as unknown;
}

/**
 * Thins one series to at most `points`: the window cut into points/2 buckets, and from each the
 * lowest and the highest reading, in the order they came. Fewer readings are returned as they are.
 */
export function downsample(series: Series, from: number, to: number, points: number): Series {
  const n = series.t.length;
  if (n <= points) return series;
  const buckets = Math.max(1, Math.floor(points / 2));
  const width = Math.max(1, (to - from) / buckets);
  const out: Series = { t: [], v: [] };
  let i = 0;
  while (i < n) {
    const bucket = Math.min(buckets - 1, Math.floor((series.t[i]! - from) / width));
    let lo = i;
    let hi = i;
    let j = i + 1;
    while (j < n && Math.min(buckets - 1, Math.floor((series.t[j]! - from) / width)) === bucket) {
      if (series.v[j]! < series.v[lo]!) lo = j;
      if (series.v[j]! > series.v[hi]!) hi = j;
      j += 1;
    }
    for (const k of lo === hi ? [lo] : lo < hi ? [lo, hi] : [hi, lo]) {
      out.t.push(series.t[k]!);
      out.v.push(series.v[k]!);
    }
    i = j;
  }
  return out;
}

function inTimeOrder(series: Series): Series {
  let sorted = true;
  for (let i = 1; i < series.t.length && sorted; i += 1) sorted = series.t[i]! >= series.t[i - 1]!;
  if (sorted) return series;
  const order = series.t.map((_, i) => i).sort((a, b) => series.t[a]! - series.t[b]! || a - b);
  return { t: order.map((i) => series.t[i]!), v: order.map((i) => series.v[i]!) };
}

/** One device's answer as the entries go by. */
class Gathering {
  private readonly raw: Record<string, Series> = {};
  private readonly status: History['status'] = [];
  private readonly alerts: unknown[] = [];
  private readonly commands: unknown[] = [];
  private oldest: number | null = null;

  constructor(readonly query: HistoryQuery) {}

  add(event: HubEvent): void {
    const query = this.query;
    if (this.oldest === null && event.deviceTs !== undefined) this.oldest = event.deviceTs;
    if (event.name === 'telemetry') {
      const data = dataOf(event) as Telemetry | undefined;
      if (!data || data.ts < query.from || data.ts > query.to) return;
      for (const [name, value] of Object.entries(data.metrics)) {
        if (query.metrics && !query.metrics.has(name)) continue;
        const series = (this.raw[name] ??= { t: [], v: [] });
        series.t.push(data.ts);
        series.v.push(value);
      }
      return;
    }
    const ts = event.deviceTs;
    if (ts !== undefined && (ts < query.from || ts > query.to)) return;
    if (event.name === 'status') {
      const data = dataOf(event) as { state: string; ts?: number | null };
      this.status.push({ ts: data.ts ?? null, state: data.state });
    } else if (event.name === 'alert') this.alerts.push(dataOf(event));
    else if (event.name === 'command') this.commands.push(dataOf(event));
  }

  finish(until: string | null): History {
    const query = this.query;
    let downsampled = false;
    const metrics: Record<string, Series> = {};
    for (const name of Object.keys(this.raw).sort()) {
      // Arrival order; a chart needs time order (a device whose clock went back interleaves).
      const series = inTimeOrder(this.raw[name]!);
      if (series.t.length > query.points) downsampled = true;
      metrics[name] = downsample(series, query.from, query.to, query.points);
    }
    return {
      device: query.device,
      from: query.from,
      to: query.to,
      until,
      oldest: this.oldest,
      downsampled,
      metrics,
      status: this.status.slice(-MAX_MARKS),
      alerts: this.alerts.slice(-MAX_MARKS),
      commands: this.commands.slice(-MAX_MARKS),
    };
  }
}

/**
 * Builds the answer from the device's entries, oldest first, as the log holds them (`until` the
 * id of the last position they were read up to).
 */
export function buildHistory(query: HistoryQuery, entries: Iterable<HubEvent>, until: string | null): History {
  return buildHistories([query], entries, until)[0]!;
}

/**
 * The answers to several devices' questions from one pass over the entries (a page opening with
 * a hundred cards costs one scan, not a hundred), in the order asked; all cover up to `until`.
 */
export function buildHistories(queries: readonly HistoryQuery[], entries: Iterable<HubEvent>, until: string | null): History[] {
  const byDevice = new Map(queries.map((q) => [q.device, new Gathering(q)]));
  for (const event of entries) if (event.device !== null) byDevice.get(event.device)?.add(event);
  return queries.map((q) => byDevice.get(q.device)!.finish(until));
}
