// @ts-check
// Joining a history answer with the live stream. Pure functions and plain data, no DOM.
//
// The page asks for history after its stream has opened, so live readings keep arriving while the
// answer is on its way. The answer names the last log entry it covers (`until`): a live reading at
// or before it is already in the answer, one after it is not. Readings that arrive while a device's
// answer is awaited are kept with their event ids (`Pending`), and the chart is rebuilt from the
// answer plus those after `until`: no seam, no point twice.

import { Ring } from './ring.js';

/**
 * @typedef {object} Series
 * @property {number[]} t  device timestamps (epoch ms), ascending
 * @property {number[]} v
 */

/**
 * One device's answer, as GET /api/devices/:id/history and GET /api/history send it.
 * @typedef {object} History
 * @property {string} device
 * @property {number} from
 * @property {number} to
 * @property {string | null} until
 * @property {number | null} oldest
 * @property {boolean} downsampled
 * @property {Record<string, Series>} metrics
 * @property {{ ts: number | null, state: string }[]} status
 * @property {any[]} alerts
 * @property {any[]} commands
 */

/** @typedef {{ id: string, ts: number, metrics: Record<string, number> }} LiveReading */

/**
 * An event id `<epoch>-<position>` as its two parts; null when it is not one.
 * @param {string | null | undefined} id
 * @returns {{ epoch: string, position: number } | null}
 */
export function parseEventId(id) {
  if (typeof id !== 'string') return null;
  const cut = id.lastIndexOf('-');
  const position = Number(id.slice(cut + 1));
  if (cut <= 0 || !/^\d+$/.test(id.slice(cut + 1)) || !Number.isSafeInteger(position)) return null;
  return { epoch: id.slice(0, cut), position };
}

/**
 * Whether the event `id` is after `until` (an answer's end): then it is not in the answer. An
 * event of another epoch (the log was lost and began again) is never in an answer of the old one;
 * an answer that covers nothing (`until` null) covers no event.
 * @param {string} id
 * @param {string | null} until
 */
export function isAfter(id, until) {
  const a = parseEventId(id);
  const u = parseEventId(until);
  if (!a || !u) return true;
  return a.epoch !== u.epoch || a.position > u.position;
}

/**
 * Whether the answer reaches the stream's position `at` (the id of the last event the page had
 * when it asked): a lagging answer would leave out readings the page never got live.
 * @param {string | null} until
 * @param {string | null} at
 */
export function reaches(until, at) {
  const a = parseEventId(at);
  if (!a) return true;
  const u = parseEventId(until);
  return u !== null && u.epoch === a.epoch && u.position >= a.position;
}

/** The most readings kept per device while its answer is awaited (about ten minutes at 1/s). */
export const PENDING_LIMIT = 600;

/** Live readings of devices whose history is on its way, with their event ids. */
export class Pending {
  constructor() {
    /** @type {Map<string, LiveReading[]>} */
    this.byDevice = new Map();
  }

  /** @param {string} device start keeping its readings */
  begin(device) {
    if (!this.byDevice.has(device)) this.byDevice.set(device, []);
  }

  /** @param {string} device */
  awaiting(device) {
    return this.byDevice.has(device);
  }

  /**
   * @param {string} device
   * @param {LiveReading} reading
   */
  add(device, reading) {
    const list = this.byDevice.get(device);
    if (!list) return;
    list.push(reading);
    if (list.length > PENDING_LIMIT) list.shift();
  }

  /**
   * The readings kept for a device that the answer ending at `until` does not hold, and stops
   * keeping them.
   * @param {string} device
   * @param {string | null} until
   * @returns {LiveReading[]}
   */
  take(device, until) {
    const list = this.byDevice.get(device) ?? [];
    this.byDevice.delete(device);
    return list.filter((r) => isAfter(r.id, until));
  }

  /** @param {string} device forget it (the answer failed, or the device is gone) */
  drop(device) {
    this.byDevice.delete(device);
  }

  clear() {
    this.byDevice.clear();
  }
}

/**
 * From when the answer is complete: its window's start, or the oldest entry the log still held
 * when that is later (before it, the log knows nothing).
 * @param {History} h
 */
export function coveredFrom(h) {
  return h.oldest === null ? h.to : Math.max(h.from, h.oldest);
}

/**
 * Rebuilds a ring from a history answer: what it held from before the answer's coverage, then the
 * answer's points, then the live readings after the answer. When what it held stops short of the
 * coverage (the stream was away and the log no longer reaches back), the line breaks there.
 * @param {Ring} ring
 * @param {Series | undefined} series
 * @param {number} from  coveredFrom() of the answer
 * @param {{ ts: number, value: number }[]} later
 */
export function refill(ring, series, from, later) {
  /** @type {number[]} */
  const keptTs = [];
  /** @type {number[]} */
  const keptValues = [];
  let runsIn = false;
  const cap = ring.ts.length;
  for (let k = 0; k < ring.length; k++) {
    const i = (ring.start + k) % cap;
    const ts = /** @type {number} */ (ring.ts[i]);
    const value = /** @type {number} */ (ring.values[i]);
    if (ts < from) {
      keptTs.push(ts);
      keptValues.push(value);
    } else if (!Number.isNaN(value)) runsIn = true;
  }
  ring.clear();
  for (let k = 0; k < keptTs.length; k++) ring.push(/** @type {number} */ (keptTs[k]), /** @type {number} */ (keptValues[k]));
  const answered = (series?.t.length ?? 0) > 0;
  if (keptTs.length > 0 && !runsIn && answered) ring.gap();
  if (series) for (let k = 0; k < series.t.length; k++) ring.push(/** @type {number} */ (series.t[k]), /** @type {number} */ (series.v[k]));
  let last = ring.lastTs();
  for (const p of later) {
    // Readings out of time order (a device clock that stepped back) are left to the live rules.
    if (p.ts < last) continue;
    ring.push(p.ts, p.value);
    last = p.ts;
  }
}

/**
 * The metric values of the live readings, for one metric.
 * @param {LiveReading[]} readings
 * @param {string} name
 */
export function laterOf(readings, name) {
  /** @type {{ ts: number, value: number }[]} */
  const out = [];
  for (const r of readings) {
    const value = r.metrics[name];
    if (typeof value === 'number' && Number.isFinite(value)) out.push({ ts: r.ts, value });
  }
  return out;
}

/**
 * Checks one device's answer from the network; null when it is not one.
 * @param {any} raw
 * @returns {History | null}
 */
export function toHistory(raw) {
  if (!raw || typeof raw !== 'object' || typeof raw.device !== 'string') return null;
  if (typeof raw.from !== 'number' || typeof raw.to !== 'number' || !raw.metrics || typeof raw.metrics !== 'object') return null;
  /** @type {Record<string, Series>} */
  const metrics = {};
  for (const [name, s] of Object.entries(raw.metrics)) {
    const series = /** @type {any} */ (s);
    if (!series || !Array.isArray(series.t) || !Array.isArray(series.v) || series.t.length !== series.v.length) continue;
    metrics[name] = { t: series.t, v: series.v };
  }
  return {
    device: raw.device,
    from: raw.from,
    to: raw.to,
    until: typeof raw.until === 'string' ? raw.until : null,
    oldest: typeof raw.oldest === 'number' ? raw.oldest : null,
    downsampled: raw.downsampled === true,
    metrics,
    status: Array.isArray(raw.status) ? raw.status : [],
    alerts: Array.isArray(raw.alerts) ? raw.alerts : [],
    commands: Array.isArray(raw.commands) ? raw.commands : [],
  };
}

/**
 * Windows a device view offers: a fixed span back from now, or all the log retains.
 * @type {readonly { key: string, label: string, ms: number | null }[]}
 */
export const WINDOWS = Object.freeze([
  { key: '5m', label: '5 min', ms: 5 * 60_000 },
  { key: '15m', label: '15 min', ms: 15 * 60_000 },
  { key: 'all', label: 'All retained', ms: null },
]);

/** How far back "all retained" asks: the service's bound (it answers from what it holds). */
export const MAX_WINDOW_MS = 24 * 3600_000;

/**
 * The narrowest window that shows the moment `at` (device time), given the newest time `now`.
 * @param {number | null} at
 * @param {number} now
 */
export function windowFor(at, now) {
  if (at === null) return /** @type {(typeof WINDOWS)[number]} */ (WINDOWS[0]);
  // A little room on the left, so the moment is not on the chart's edge.
  const back = now - at + 30_000;
  return WINDOWS.find((w) => w.ms !== null && back <= w.ms) ?? /** @type {(typeof WINDOWS)[number]} */ (WINDOWS[2]);
}

/**
 * A device view's route, `#/devices/<id>` with an optional moment `?at=<epoch ms>`; null for any
 * other hash (the grid).
 * @param {string} hash
 * @returns {{ device: string, at: number | null } | null}
 */
export function parseRoute(hash) {
  const m = /^#\/devices\/([^/?]+)(?:\?at=(\d{1,16}))?$/.exec(hash);
  if (!m) return null;
  let device;
  try {
    device = decodeURIComponent(/** @type {string} */ (m[1]));
  } catch {
    return null;
  }
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(device)) return null;
  return { device, at: m[2] === undefined ? null : Number(m[2]) };
}

/**
 * @param {string} device
 * @param {number | null} [at]
 */
export function routeOf(device, at = null) {
  return `#/devices/${encodeURIComponent(device)}${at === null ? '' : `?at=${Math.round(at)}`}`;
}

/**
 * A growing chart series: the answer's points, then live readings, trimmed on the left.
 * Arrays of plain numbers, as uPlot takes them.
 */
export class ChartSeries {
  constructor() {
    /** @type {number[]} */
    this.t = [];
    /** @type {number[]} */
    this.v = [];
  }

  /** @param {Series} s */
  fill(s) {
    this.t = s.t.slice();
    this.v = s.v.slice();
  }

  /**
   * @param {number} ts
   * @param {number} value
   * @returns {boolean} whether it was added (not older than the newest point)
   */
  add(ts, value) {
    const last = this.t.length > 0 ? /** @type {number} */ (this.t[this.t.length - 1]) : -Infinity;
    if (ts < last) return false;
    this.t.push(ts);
    this.v.push(value);
    return true;
  }

  /** @param {number} from drop points before it */
  trim(from) {
    let n = 0;
    while (n < this.t.length && /** @type {number} */ (this.t[n]) < from) n++;
    // Splicing one at a time would be quadratic; drop in chunks.
    if (n > 0) {
      this.t.splice(0, n);
      this.v.splice(0, n);
    }
  }
}

/**
 * Decimals that tell ticks this far apart from each other: 0 for 10, 1 for 0.5, 2 for 0.25.
 * @param {number[]} splits ascending tick values
 */
export function tickDigits(splits) {
  let digits = 0;
  for (let i = 1; i < splits.length; i++) {
    const step = Math.abs(/** @type {number} */ (splits[i]) - /** @type {number} */ (splits[i - 1]));
    if (!(step > 0)) continue;
    // The smallest power of ten that still separates them, allowing for binary fractions.
    while (digits < 6 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6) digits++;
  }
  return digits;
}
