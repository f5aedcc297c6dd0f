import type { ServerResponse } from 'node:http';
import type { DisconnectReason } from '../metrics.js';
import { ALWAYS, type HubEvent } from './event.js';

export interface Filter {
  /** Only these devices, or every device when null. */
  readonly devices: ReadonlySet<string> | null;
  /** OR of TYPE_BITs. */
  readonly mask: number;
}

export function matchesFilter(filter: Filter, event: HubEvent): boolean {
  if (event.bit !== ALWAYS && (filter.mask & event.bit) === 0) return false;
  return filter.devices === null || event.device === null || filter.devices.has(event.device);
}

/** What the hub gives each client so the hot path stays free of closures and label lookups. */
export interface ClientHooks {
  readonly bufferLimit: number;
  now(): number;
  delivered(event: HubEvent): void;
  conflated(): void;
  closed(client: SseClient, reason: DisconnectReason): void;
}

/**
 * One open stream. Writes go straight to the response; while the socket is behind (a write was
 * not accepted whole), events wait in a queue where telemetry is conflated to the newest value per
 * device and everything else is kept in order. A queue past the byte limit closes the stream: the
 * browser reconnects and resumes from its Last-Event-ID.
 */
export class SseClient {
  /** Events up to this seq were already sent in the opening (snapshot or replay). */
  after: number;
  behindSince = 0;
  private queue: (HubEvent | undefined)[] | undefined;
  private queuedBytes = 0;
  private latestTelemetry: Map<string, number> | undefined;
  private ended = false;

  constructor(
    readonly res: ServerResponse,
    readonly filter: Filter,
    after: number,
    private readonly hooks: ClientHooks,
  ) {
    this.after = after;
    this.onDrain = this.onDrain.bind(this);
    this.onClose = this.onClose.bind(this);
    res.on('close', this.onClose);
    res.on('error', this.onClose);
  }

  get isClosed(): boolean {
    return this.ended;
  }

  get isBehind(): boolean {
    return this.queue !== undefined;
  }

  /** Bytes waiting for this client behind what its socket already holds. */
  get queuedBytesCount(): number {
    return this.queuedBytes;
  }

  matches(event: HubEvent): boolean {
    return event.seq > this.after && matchesFilter(this.filter, event);
  }

  /** Sends events (already filtered, in seq order); `joined` is their frames concatenated, when shared. */
  send(events: readonly HubEvent[], joined?: Buffer): void {
    if (this.ended || events.length === 0) return;
    if (this.queue) {
      for (const event of events) this.enqueue(event);
      if (this.queuedBytes > this.hooks.bufferLimit) this.close('slow');
      return;
    }
    for (const event of events) this.hooks.delivered(event);
    if (joined) this.write(joined);
    else this.writeAll(events.map((e) => e.frame));
  }

  /**
   * Raw bytes: the opening, heartbeats, a batch. A single write is never cut for size (it is
   * bounded by the replay buffer or one batch, and its frames are shared, not copied per client);
   * what counts against the bound is what piles up behind it while the socket does not drain.
   */
  write(bytes: Buffer): void {
    if (this.ended) return;
    if (!this.res.write(bytes)) this.fallBehind();
  }

  /** Several buffers in one syscall, without copying them into one per client. */
  writeAll(buffers: readonly Buffer[]): void {
    if (this.ended) return;
    if (buffers.length === 1) return this.write(buffers[0]!);
    this.res.cork();
    let ok = true;
    for (const buffer of buffers) ok = this.res.write(buffer) && ok;
    this.res.uncork();
    if (!ok) this.fallBehind();
  }

  private fallBehind(): void {
    this.queue = [];
    this.behindSince = this.hooks.now();
    this.res.once('drain', this.onDrain);
  }

  private enqueue(event: HubEvent): void {
    const queue = this.queue!;
    if (event.name === 'telemetry' && event.device !== null) {
      this.latestTelemetry ??= new Map();
      const previous = this.latestTelemetry.get(event.device);
      if (previous !== undefined) {
        // Keep seq order: drop the older value and append the newer one at the end.
        this.queuedBytes -= queue[previous]!.frame.length;
        queue[previous] = undefined;
        this.hooks.conflated();
      }
      this.latestTelemetry.set(event.device, queue.length);
    }
    queue.push(event);
    this.queuedBytes += event.frame.length;
  }

  private onDrain(): void {
    const queue = this.queue;
    if (this.ended || !queue) return;
    this.queue = undefined;
    this.latestTelemetry = undefined;
    this.queuedBytes = 0;
    const events = queue.filter((e): e is HubEvent => e !== undefined);
    this.send(events);
  }

  private onClose(): void {
    this.close('client');
  }

  /** Ends the stream: `end` lets written bytes go out; otherwise the socket is dropped at once. */
  close(reason: DisconnectReason, graceful = false): void {
    if (this.ended) return;
    this.ended = true;
    this.queue = undefined;
    this.latestTelemetry = undefined;
    this.res.off('drain', this.onDrain);
    if (graceful) this.res.end();
    else if (reason !== 'client') this.res.destroy();
    this.hooks.closed(this, reason);
  }
}
