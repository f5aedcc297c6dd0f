import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { DisconnectReason } from '../metrics.js';
import { body, type SharedBody } from './chunk.js';
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
 * One open stream. Once the response head is out, event bytes go straight to the socket as
 * ready-made HTTP chunks (see chunk.ts), so a batch shared by every client is one buffer and one
 * write each. While the socket is behind (a write was not accepted whole), events wait in a queue
 * where telemetry is conflated to the newest value per device and everything else is kept in
 * order. A queue past the byte limit closes the stream: the browser reconnects and resumes from
 * its Last-Event-ID. The response object only ends the stream (its last-chunk follows ours).
 */
export class SseClient {
  /** Events up to this seq were already sent in the opening (snapshot or replay). */
  after: number;
  behindSince = 0;
  private queue: (HubEvent | undefined)[] | undefined;
  private queuedBytes = 0;
  private latestTelemetry: Map<string, number> | undefined;
  private ended = false;
  private readonly socket: Socket | null;
  /** Whether the response uses chunked transfer coding (HTTP/1.1) or ends with the connection. */
  private readonly chunked: boolean;

  /** `res` must have its head flushed already (res.flushHeaders()). */
  constructor(
    readonly res: ServerResponse,
    readonly filter: Filter,
    after: number,
    private readonly hooks: ClientHooks,
  ) {
    this.after = after;
    this.socket = res.socket;
    this.chunked = res.chunkedEncoding;
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

  /** Everything held in this process for the client: our queue plus what the socket has not handed to the kernel. */
  get backlogBytes(): number {
    return this.queuedBytes + (this.socket?.writableLength ?? 0);
  }

  matches(event: HubEvent): boolean {
    return event.seq > this.after && matchesFilter(this.filter, event);
  }

  /**
   * Sends events (already filtered, in seq order); `shared` holds exactly these events' frames,
   * when the hub has them to share between clients.
   */
  send(events: readonly HubEvent[], shared?: SharedBody): void {
    if (this.ended || events.length === 0) return;
    if (this.queue) {
      for (const event of events) this.enqueue(event);
      if (this.queuedBytes > this.hooks.bufferLimit) this.close('slow');
      return;
    }
    for (const event of events) this.hooks.delivered(event);
    this.writeBody(shared ? shared.framed(this.chunked) : body(events.map((e) => e.frame), this.chunked));
  }

  /** SSE bytes of this client's own (the opening), in one write. */
  write(parts: readonly Buffer[]): void {
    this.writeBody(body(parts, this.chunked));
  }

  /** Bytes shared by every client (a heartbeat), framed for this one. */
  writeShared(shared: SharedBody): void {
    this.writeBody(shared.framed(this.chunked));
  }

  /**
   * Framed body bytes: a heartbeat, a batch, an opening. A single write is never cut for size
   * (it is bounded by the replay buffer or one batch, and shared batches are not copied per
   * client); what counts against the bound is what piles up behind it while the socket does not
   * drain.
   */
  private writeBody(bytes: Buffer): void {
    if (this.ended) return;
    const socket = this.socket;
    if (socket === null || socket.destroyed) {
      this.close('client');
      return;
    }
    if (!socket.write(bytes)) this.fallBehind(socket);
  }

  private fallBehind(socket: Socket): void {
    this.queue = [];
    this.behindSince = this.hooks.now();
    socket.once('drain', this.onDrain);
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
    this.socket?.off('drain', this.onDrain);
    if (graceful) this.res.end();
    else if (reason !== 'client') this.res.destroy();
    this.hooks.closed(this, reason);
  }
}
