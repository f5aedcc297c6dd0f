// @ts-check
// A fixed-size ring of (ts, value) points per metric, and the sparkline drawn from it.
// Typed arrays keep 500 devices × a few metrics × 300 points at a few MB with no GC churn.

export const RING_CAPACITY = 300;
export const SPARK_WINDOW_MS = 5 * 60_000;
/** The shortest span a sparkline is drawn over. */
const SPARK_MIN_MS = 20_000;
/** The sparkline's SVG viewBox is 0 0 SPARK_W SPARK_H, stretched to the card's width. */
const SPARK_W = 100;
const SPARK_H = 24;
const SPARK_PAD = 2;
/** Width of the stub drawn for a point with no neighbour. */
const STUB = 3;

export class Ring {
  /** @param {number} [capacity] */
  constructor(capacity = RING_CAPACITY) {
    this.ts = new Float64Array(capacity);
    this.values = new Float64Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  /**
   * @param {number} ts
   * @param {number} value
   */
  push(ts, value) {
    const cap = this.ts.length;
    const i = (this.start + this.length) % cap;
    this.ts[i] = ts;
    this.values[i] = value;
    if (this.length < cap) this.length++;
    else this.start = (this.start + 1) % cap;
  }

  /**
   * Marks a break in the history (updates were missed): the line stops at the last point before
   * it and starts again at the next one, instead of drawing a straight line across what is unknown.
   */
  gap() {
    if (this.length === 0 || Number.isNaN(this.values[(this.start + this.length - 1) % this.ts.length])) return;
    this.push(this.lastTs(), Number.NaN);
  }

  clear() {
    this.start = 0;
    this.length = 0;
  }

  /** Timestamp of the newest point, or -Infinity when empty. */
  lastTs() {
    if (this.length === 0) return -Infinity;
    return /** @type {number} */ (this.ts[(this.start + this.length - 1) % this.ts.length]);
  }
}

/**
 * The `d` attribute of a path showing the last SPARK_WINDOW_MS of the ring (less when the ring
 * holds less, down to SPARK_MIN_MS), ending at its newest
 * point; a gap marker (NaN) breaks the line. The window is anchored on the data, not the wall
 * clock, so a quiet device's line does not need redrawing every second.
 * @param {Ring} ring
 * @returns {string}
 */
export function sparklinePath(ring) {
  const n = ring.length;
  if (n === 0) return '';
  const cap = ring.ts.length;
  const end = ring.lastTs();
  /** @param {number} k */
  const tsAt = (k) => /** @type {number} */ (ring.ts[(ring.start + k) % cap]);
  // The line spans what there is, up to the window: a device seen for a minute fills its card
  // rather than drawing a stroke at the right edge of five minutes (SPARK_MIN_MS keeps the first
  // few seconds from being stretched into a zigzag).
  const spanMs = Math.min(SPARK_WINDOW_MS, Math.max(SPARK_MIN_MS, end - tsAt(0)));
  const from = end - spanMs;
  /** @param {number} k */
  const valueAt = (k) => /** @type {number} */ (ring.values[(ring.start + k) % cap]);

  // Find the first point inside the window, and the value range of the visible points.
  let first = 0;
  while (first < n - 1 && tsAt(first) < from) first++;
  let min = Infinity;
  let max = -Infinity;
  let points = 0;
  for (let k = first; k < n; k++) {
    const v = valueAt(k);
    if (Number.isNaN(v)) continue;
    points++;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (points === 0) return '';
  const span = max - min;
  const yScale = span > 0 ? (SPARK_H - 2 * SPARK_PAD) / span : 0;
  const xScale = SPARK_W / spanMs;
  /** @param {number} v */
  const yOf = (v) => (span > 0 ? SPARK_H - SPARK_PAD - (v - min) * yScale : SPARK_H / 2);

  const parts = [];
  let segment = 0;
  let pen = 'M';
  for (let k = first; k < n; k++) {
    const v = valueAt(k);
    if (Number.isNaN(v)) {
      if (segment === 1) parts.push(`h-${STUB}`);
      segment = 0;
      pen = 'M';
      continue;
    }
    parts.push(`${pen}${((tsAt(k) - from) * xScale).toFixed(1)},${yOf(v).toFixed(1)}`);
    segment++;
    pen = 'L';
  }
  // A lone point (at the end, or before a gap): a short flat stub, so something is visible.
  if (segment === 1) parts.push(`h-${STUB}`);
  return parts.join(' ');
}
