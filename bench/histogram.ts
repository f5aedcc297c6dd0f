// A fixed-bucket latency histogram that several processes fill and one merges: 10 µs buckets
// up to 100 ms, 1 ms buckets up to 120 s, the exact maximum kept aside.

const FINE_US = 10;
const FINE_BUCKETS = 10_000; // 0 .. 100 ms
const COARSE_US = 1_000;
const COARSE_BUCKETS = 119_900; // 100 ms .. 120 s
const FINE_LIMIT_US = FINE_US * FINE_BUCKETS;

export interface HistogramData {
  /** Flat [bucket, count, bucket, count, ...] of the non-empty buckets. */
  buckets: number[];
  count: number;
  maxMs: number;
}

export class Histogram {
  private readonly counts = new Uint32Array(FINE_BUCKETS + COARSE_BUCKETS + 1);
  count = 0;
  maxMs = 0;

  record(ms: number): void {
    const us = ms > 0 ? ms * 1000 : 0;
    const bucket =
      us < FINE_LIMIT_US
        ? Math.floor(us / FINE_US)
        : Math.min(FINE_BUCKETS + Math.floor((us - FINE_LIMIT_US) / COARSE_US), FINE_BUCKETS + COARSE_BUCKETS);
    this.counts[bucket]! += 1;
    this.count += 1;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  toData(): HistogramData {
    const buckets: number[] = [];
    for (let i = 0; i < this.counts.length; i += 1) if (this.counts[i]! > 0) buckets.push(i, this.counts[i]!);
    return { buckets, count: this.count, maxMs: this.maxMs };
  }

  merge(data: HistogramData): void {
    for (let i = 0; i < data.buckets.length; i += 2) this.counts[data.buckets[i]!]! += data.buckets[i + 1]!;
    this.count += data.count;
    if (data.maxMs > this.maxMs) this.maxMs = data.maxMs;
  }

  /** The upper edge of the bucket holding the q-quantile (0 < q ≤ 1), in ms; NaN when empty. */
  quantileMs(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i += 1) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const upperUs = i < FINE_BUCKETS ? (i + 1) * FINE_US : FINE_LIMIT_US + (i - FINE_BUCKETS + 1) * COARSE_US;
        return Math.min(upperUs / 1000, this.maxMs);
      }
    }
    return this.maxMs;
  }
}
