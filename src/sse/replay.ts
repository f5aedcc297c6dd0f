import type { HubEvent } from './event.js';

/**
 * The recent history a reconnecting client can resume from: a ring of the last `capacity`
 * events, also bounded in bytes so a burst of large payloads cannot hold unbounded memory.
 */
export class ReplayBuffer {
  private readonly ring: (HubEvent | undefined)[];
  private start = 0;
  private count = 0;
  private bytes = 0;
  /** Highest seq that was pushed out; a resume from before it cannot be served. */
  private evictedUpTo = 0;

  constructor(
    readonly capacity: number,
    readonly maxBytes = 64 * 1024 * 1024,
  ) {
    this.ring = new Array<HubEvent | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Every event after this seq is still here (0: nothing was ever pushed out). */
  get retainedAfter(): number {
    return this.evictedUpTo;
  }

  get byteSize(): number {
    return this.bytes;
  }

  push(event: HubEvent): void {
    if (this.capacity === 0) {
      this.evictedUpTo = event.seq;
      return;
    }
    while (this.count > 0 && (this.count === this.capacity || this.bytes + event.frame.length > this.maxBytes)) {
      this.evictOldest();
    }
    this.ring[(this.start + this.count) % this.capacity] = event;
    this.count += 1;
    this.bytes += event.frame.length;
  }

  private evictOldest(): void {
    const oldest = this.ring[this.start]!;
    this.ring[this.start] = undefined;
    this.start = (this.start + 1) % this.capacity;
    this.count -= 1;
    this.bytes -= oldest.frame.length;
    this.evictedUpTo = oldest.seq;
  }

  /** An empty buffer whose history starts after `seq`: nothing at or before it can be resumed from here. */
  startAfter(seq: number): void {
    if (this.count === 0) this.evictedUpTo = seq;
  }

  /** Drops the oldest events while `expired` says so. */
  evictWhile(expired: (event: HubEvent) => boolean): void {
    while (this.count > 0 && expired(this.ring[this.start]!)) this.evictOldest();
  }

  private at(i: number): HubEvent {
    return this.ring[(this.start + i) % this.capacity]!;
  }

  /** True when every event after `seq` is still here. */
  covers(seq: number): boolean {
    return seq >= this.evictedUpTo;
  }

  /** Events with a seq greater than `seq`, oldest first. Call only when covers(seq). */
  *after(seq: number): IterableIterator<HubEvent> {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid).seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.count; i += 1) yield this.at(i);
  }
}
