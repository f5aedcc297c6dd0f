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
 * One open stream. Writes go straight to the response; while the socket is behind, events wait
 * in a queue where telemetry is conflated to the newest value per device and everything else is
 * kept in order. Unsent bytes past the limit close the stream: the browser resumes on reconnect.
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

  /** Bytes accepted for this client and not yet handed to the kernel. */
  get unsentBytes(): number {
    return this.queuedBytes + this.res.writableLength;
  }

  matches(event: HubEvent): boolean {
    return event.seq > this.after && matchesFilter(this.filter, event);
  }

  /** Sends events (already filtered, in seq order); `joined` is their frames concatenated, when shared. */
  send(events: readonly HubEvent[], joined?: Buffer): void {
    if (this.ended || events.length === 0) return;
    if (this.queue) {
      for (const event of events) this.enqueue(event);
      if (this.unsentBytes > this.hooks.bufferLimit) this.close('slow');
      return;
    }
    const bytes = joined ?? (events.length === 1 ? events[0]!.frame : Buffer.concat(events.map((e) => e.frame)));
    for (const event of events) this.hooks.delivered(event);
    this.write(bytes);
  }

  /** Raw bytes outside the event stream: the opening, heartbeats. */
  write(bytes: Buffer): void {
    if (this.ended) return;
    if (!this.res.write(bytes)) {
      if (this.res.writableLength > this.hooks.bufferLimit) {
        this.close('slow');
        return;
      }
      this.queue = [];
      this.behindSince = this.hooks.now();
      this.res.once('drain', this.onDrain);
    }
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
