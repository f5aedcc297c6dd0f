// Bounds on what strangers holding the device login can cost: how fast new device ids are taken
// in, and how much of the shared event stream one device's telemetry, alerts and status may take.

/** A token bucket: `rate` tokens a second, at most `burst` saved up. Rate 0 means no limit. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  take(now: number): boolean {
    if (this.rate === 0) return true;
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private refill(now: number): void {
    if (now > this.at) this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
  }
}

export interface ThrottleOptions {
  /** Telemetry events a second each device may publish; 0 = no limit. */
  rate: number;
  burst: number;
  /** Publish the device's newest telemetry now: its budget allows again. */
  flush(device: string): void;
  /** Every telemetry message held back (and later replaced or published late). */
  onThrottled(): void;
  now?: () => number;
}

/**
 * Per-device telemetry budget. Excess telemetry is conflated: the device state still takes every
 * value, but the stream gets only the newest one, once the budget allows. It is the event throttle
 * with one key per device (the store holds the newest value, so nothing needs keeping here).
 */
export class TelemetryThrottle {
  private readonly events: EventThrottle<null>;

  constructor(options: ThrottleOptions) {
    this.events = new EventThrottle<null>({
      rate: options.rate,
      burst: options.burst,
      flush: (device) => options.flush(device),
      onThrottled: () => options.onThrottled(),
      ...(options.now && { now: options.now }),
    });
  }

  get heldCount(): number {
    return this.events.heldCount;
  }

  /** True: publish this message now. False: held; the newest value goes out later. */
  admit(device: string): boolean {
    return this.events.admit(device, TELEMETRY);
  }

  /** Publishes every held device whose budget allows again. */
  tick(): void {
    this.events.tick();
  }

  forget(device: string): void {
    this.events.forget(device);
  }

  stop(): void {
    this.events.stop();
  }
}

const TELEMETRY: HeldEvent<null> = { key: 'telemetry', rank: 0, value: null };

/** Held back per device at most: beyond it the oldest held, least severe goes (it is in the state). */
const MAX_HELD_PER_DEVICE = 16;

/** What an event throttle holds: `key` conflates (newer replaces older), `rank` orders eviction. */
export interface HeldEvent<T> {
  key: string;
  rank: number;
  value: T;
}

export interface EventThrottleOptions<T> {
  /** Alerts + status changes a second each device may publish; 0 = no limit. */
  rate: number;
  burst: number;
  /** Publish one held event of the device: its budget allows again. */
  flush(device: string, value: T): void;
  /** Every event held back (and later replaced or published late). */
  onThrottled(value: T): void;
  now?: () => number;
}

/**
 * Per-device budget for the stream's alerts and status changes. The device's state takes every
 * one (alarms, recent alerts, current status: the snapshot loses nothing); the stream gets, over
 * the budget, only the newest event of each key (the caller's conflation rule: per device the
 * newest status; per alert type and severity the newest alert, so a severity change is never
 * hidden), in the order those newest ones arrived, as the budget allows. One shared timer, as for
 * telemetry; at most MAX_HELD_PER_DEVICE keys held per device.
 */
export class EventThrottle<T> {
  /** Bounded by the device store: forget() drops a device's bucket with it. */
  private readonly buckets = new Map<string, TokenBucket>();
  /** Per device, held events by key in arrival order of the newest of each. */
  private readonly held = new Map<string, Map<string, HeldEvent<T>>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private readonly tickMs: number;

  constructor(private readonly options: EventThrottleOptions<T>) {
    this.now = options.now ?? Date.now;
    this.tickMs = options.rate > 0 ? Math.min(1_000, Math.max(20, Math.round(1_000 / options.rate))) : 1_000;
  }

  get heldCount(): number {
    let n = 0;
    for (const events of this.held.values()) n += events.size;
    return n;
  }

  /** True: publish this event now. False: held; the newest of its key goes out later. */
  admit(device: string, event: HeldEvent<T>): boolean {
    if (this.options.rate === 0) return true;
    const now = this.now();
    let events = this.held.get(device);
    if (!events && this.bucket(device, now).take(now)) return true;
    if (!events) this.held.set(device, (events = new Map()));
    events.delete(event.key);
    if (events.size >= MAX_HELD_PER_DEVICE) {
      let victim: HeldEvent<T> | undefined;
      for (const e of events.values()) if (!victim || e.rank < victim.rank) victim = e;
      events.delete(victim!.key);
    }
    events.set(event.key, event);
    this.options.onThrottled(event.value);
    this.timer ??= setInterval(() => this.tick(), this.tickMs).unref();
    return false;
  }

  private bucket(device: string, now: number): TokenBucket {
    let bucket = this.buckets.get(device);
    if (!bucket) {
      bucket = new TokenBucket(this.options.rate, this.options.burst, now);
      this.buckets.set(device, bucket);
    }
    return bucket;
  }

  /** Publishes, per held device, as many of its held events as its budget allows, oldest first. */
  tick(): void {
    const now = this.now();
    for (const [device, events] of this.held) {
      const bucket = this.bucket(device, now);
      for (const [key, event] of events) {
        if (!bucket.take(now)) break;
        events.delete(key);
        this.options.flush(device, event.value);
      }
      if (events.size === 0) this.held.delete(device);
    }
    if (this.held.size === 0) this.stopTimer();
  }

  forget(device: string): void {
    this.buckets.delete(device);
    this.held.delete(device);
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  stop(): void {
    this.stopTimer();
    this.held.clear();
  }
}
