// @ts-check
// A fixed-size ring of (ts, value) points per metric, and the sparkline drawn from it.
// Typed arrays keep 500 devices × a few metrics × 300 points at a few MB with no GC churn.

export const RING_CAPACITY = 300;
export const SPARK_WINDOW_MS = 5 * 60_000;
/** The sparkline's SVG viewBox is 0 0 SPARK_W SPARK_H, stretched to the card's width. */
const SPARK_W = 100;
const SPARK_H = 24;
const SPARK_PAD = 2;

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
 * The `points` attribute of a polyline showing the last SPARK_WINDOW_MS of the ring, ending at its
 * newest point. The window is anchored on the data, not the wall clock, so a quiet device's line
 * does not need redrawing every second.
 * @param {Ring} ring
 * @returns {string}
 */
export function sparklinePoints(ring) {
  const n = ring.length;
  if (n === 0) return '';
  const cap = ring.ts.length;
  const end = ring.lastTs();
  const from = end - SPARK_WINDOW_MS;

  // Find the first point inside the window, and the value range of the visible points.
  let first = 0;
  while (first < n - 1 && /** @type {number} */ (ring.ts[(ring.start + first) % cap]) < from) first++;
  let min = Infinity;
  let max = -Infinity;
  for (let k = first; k < n; k++) {
    const v = /** @type {number} */ (ring.values[(ring.start + k) % cap]);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const span = max - min;
  const yScale = span > 0 ? (SPARK_H - 2 * SPARK_PAD) / span : 0;
  const xScale = SPARK_W / SPARK_WINDOW_MS;

  if (first === n - 1) {
    // A single point: a short flat stub at the right edge, so something is visible.
    return `${SPARK_W - 4},${SPARK_H / 2} ${SPARK_W},${SPARK_H / 2}`;
  }
  const parts = new Array(n - first);
  for (let k = first; k < n; k++) {
    const i = (ring.start + k) % cap;
    const x = (/** @type {number} */ (ring.ts[i]) - from) * xScale;
    const v = /** @type {number} */ (ring.values[i]);
    const y = span > 0 ? SPARK_H - SPARK_PAD - (v - min) * yScale : SPARK_H / 2;
    parts[k - first] = `${x.toFixed(1)},${y.toFixed(1)}`;
  }
  return parts.join(' ');
}
