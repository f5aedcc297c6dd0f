import type { DisconnectReason, Metrics } from '../metrics.js';
import { SSE_EVENTS, type SseEventName } from '../protocol.js';
import type { Counter, Gauge } from 'prom-client';
import { SseClient, matchesFilter, type ClientHooks, type Filter } from './client.js';
import type { HubEvent } from './event.js';
import { SharedBody, type Bytes } from './chunk.js';
import { encodeJsonEvent, encodePosition, HEARTBEAT } from './frame.js';
import { eventId, parseEventId, type EventLog, type LogEntry } from '../log/log.js';
import { MemoryLog } from '../log/memory.js';
import type { StreamResponse } from './response.js';

export interface HubOptions {
  replaySize: number;
  clientBufferBytes: number;
  heartbeatMs: number;
  /**
   * The most an event waits to be batched with later ones (the coalescing window's ceiling, the
   * latency budget). 0: no coalescing, every turn of the loop writes what it has.
   */
  coalesceMs: number;
  /**
   * The writes per client per second coalescing keeps under: a batch waits only as long as the
   * previous write is nearer than 1/writesPerSecond (see coalescingWindow).
   */
  writesPerSecond: number;
  /** How long a client may stay behind (socket not draining) before it is closed. */
  writeDeadlineMs: number;
  metrics: Metrics;
  now?: () => number;
  /** The epoch of the embedded log the hub creates when it is given none. */
  instanceId?: string;
  /** Where events are numbered and kept; by default an embedded one of `replaySize` entries. */
  log?: EventLog;
}


export type Resume =
  | { kind: 'replay'; events: HubEvent[] }
  | { kind: 'reset'; reason: ResetReason };

/**
 * Why a resume starts over: an id of another process's log (embedded mode: the service restarted)
 * or of a shared log that was lost (`history-lost`: its epoch changed), one newer than the log
 * (`unknown-id`), one that left the retained history (`expired`), or not an id of ours.
 */
export type ResetReason = 'unknown-id' | 'expired' | 'other-instance' | 'history-lost' | 'invalid-id';

const HEARTBEATS = new SharedBody([HEARTBEAT]);

/** The least time between two flushes under load: 1/writesPerSecond, at most the budget, 0 without coalescing. */
export function writeInterval(options: Pick<HubOptions, 'coalesceMs' | 'writesPerSecond'>): number {
  return options.coalesceMs === 0 ? 0 : Math.min(options.coalesceMs, 1_000 / options.writesPerSecond);
}

type LabelCounter = ReturnType<Counter<'event'>['labels']>;

/**
 * The fan-out: every entry the log delivers (numbered, encoded once and kept there) is written
 * to every matching client. Writes are batched: events published in the same turn of the event
 * loop go to each client together, and under load a batch stays open a little longer so that it
 * carries what arrives meanwhile: one write per client per batch rather than one per event. How
 * long follows the load (coalescingWindow): not at all while writes are further apart than the
 * bound's interval, then just until the interval since the last write is over, never past
 * `coalesceMs`.
 */
export class Hub {
  private readonly log: EventLog;
  /** The position of the newest entry the log delivered: everything up to it is in `batch` or written. */
  private delivered: number;
  private last: LogEntry | undefined;
  /** The seq of the newest event written to clients (or passed over by all of them). */
  private flushed = 0;
  /** The heartbeat that carries `flushed`, encoded once per position. */
  private positionBeat: { seq: number; body: SharedBody } | undefined;
  /** A filtered client is told its position after skipping this many events (a quarter of the replay window). */
  private readonly skipLimit: number;
  private readonly clients = new Set<SseClient>();
  private batch: HubEvent[] = [];
  private flushScheduled = false;
  /** When the last batch was written (the hub's clock). */
  private lastFlush = Number.NEGATIVE_INFINITY;
  /** The least time between two writes: 1/writesPerSecond, at most the budget, 0 without coalescing. */
  private readonly interval: number;
  /**
   * The log already hands entries over about `interval` apart (the shared log appends at that
   * pace): its batches are not held for the interval again, only kept half an interval apart, so
   * a clump of them (a catch-up read, two delivery paths at once) is merged (see coalescingWindow).
   */
  private readonly paced: boolean;
  private readonly coalesceWindow: Gauge;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private readonly hooks: ClientHooks;
  private readonly published: Record<SseEventName, LabelCounter>;
  private readonly deliveredCounter: Record<SseEventName, LabelCounter>;
  private readonly pendingDelivered = new Map<SseEventName, number>();

  constructor(private readonly options: HubOptions) {
    this.now = options.now ?? Date.now;
    this.log =
      options.log ??
      new MemoryLog({ replaySize: options.replaySize, now: this.now, ...(options.instanceId !== undefined && { epoch: options.instanceId }) });
    this.delivered = this.log.head;
    this.skipLimit = options.replaySize > 0 ? Math.max(1, Math.floor(options.replaySize / 4)) : Number.POSITIVE_INFINITY;
    const m = options.metrics;
    this.published = labelled(m.eventsPublished);
    this.deliveredCounter = labelled(m.eventsDelivered);
    this.coalesceWindow = m.coalesceWindow;
    this.hooks = {
      bufferLimit: options.clientBufferBytes,
      now: this.now,
      delivered: (event) => this.pendingDelivered.set(event.name, (this.pendingDelivered.get(event.name) ?? 0) + 1),
      conflated: () => m.eventsConflated.inc(),
      closed: (client, reason) => this.onClosed(client, reason),
    };
    this.log.onEntries(this.deliver);
    this.interval = writeInterval(options);
    this.paced = this.interval > 0 && this.log.pacingMs >= this.interval;
  }

  /**
   * How long a batch opened now stays open: until the interval since the last write is over. An
   * event after a quiet spell goes out at once; under load each client gets at most
   * writesPerSecond writes a second whatever the pattern of arrivals (steady or bursty), and no
   * event waits longer than the interval, which the budget caps. Behind a paced log (whose
   * batches already come an interval apart, with the jitter of a round trip) a batch waits only
   * until half an interval has passed since the last write: the log's batches go out as they
   * come, a clump of them is merged, and no client gets more than twice writesPerSecond even
   * then. (Holding to the bound exactly there, as a rate limiter at the log's own rate, queued
   * the jittery batches behind one another: +4 ms at the median in the dashboard benchmark.)
   */
  coalescingWindow(): number {
    const spacing = this.paced ? this.interval / 2 : this.interval;
    return Math.min(this.interval, Math.max(0, this.lastFlush + spacing - this.now()));
  }

  /** The epoch of the log: the prefix of every id this hub hands out. */
  get instanceId(): string {
    return this.log.epoch;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Bytes held in this process for clients that are behind (each bounded by the client buffer limit). */
  get backlogBytes(): number {
    let bytes = 0;
    for (const client of this.clients) bytes += client.backlogBytes;
    return bytes;
  }

  /** The seq of the newest event; `after` for a client that starts from now. */
  get head(): number {
    return this.delivered;
  }

  idOf(seq: number): string {
    return eventId(this.instanceId, seq);
  }

  /**
   * The events after `seq` that match `filter`, oldest first (those still waiting in this turn's
   * batch included), or undefined when some of them left the replay window.
   */
  eventsAfter(seq: number, filter: Filter): HubEvent[] | undefined {
    if (!this.covers(seq)) return undefined;
    const events: HubEvent[] = [];
    for (const event of this.log.range(seq)) {
      if (event.seq > this.delivered) break;
      if (matchesFilter(filter, event)) events.push(event);
    }
    return events;
  }

  /** Everything the log retains that has been delivered, oldest first, and the id of the last of it. */
  retained(): { entries: Iterable<HubEvent>; until: string | null } {
    const delivered = this.delivered;
    const log = this.log;
    function* upTo(): Iterable<HubEvent> {
      for (const event of log.range(log.retainedAfter)) {
        if (event.seq > delivered) return;
        yield event;
      }
    }
    return { entries: upTo(), until: delivered > 0 ? this.idOf(delivered) : null };
  }

  /** Whether a resume from `seq` can still be served. */
  covers(seq: number): boolean {
    return seq <= this.delivered && this.log.covers(seq);
  }

  start(): void {
    this.heartbeat ??= setInterval(() => this.tick(), this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  stop(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Appends to the log and returns the entry as delivered; only for a log that delivers within the append (the embedded one). */
  publish(name: SseEventName, device: string | null, bit: number, data: unknown, deviceTs?: number): HubEvent {
    this.log.append({ name, device, bit, data, deviceTs });
    const pos = this.log.head;
    const last = this.last;
    if (last === undefined || last.seq !== pos) throw new Error(`the ${this.log.mode} log did not deliver position ${pos} within its append`);
    return last;
  }

  /** What the log delivers, in order: counted, then batched for the next flush. */
  private readonly deliver = (entries: readonly LogEntry[]): void => {
    for (const entry of entries) {
      this.published[entry.name].inc();
      this.batch.push(entry);
      this.delivered = entry.seq;
      this.last = entry;
    }
    if (!this.flushScheduled && this.batch.length > 0) {
      this.flushScheduled = true;
      const wait = this.coalescingWindow();
      this.coalesceWindow.set(wait / 1_000);
      if (wait < 1) setImmediate(this.flush);
      else setTimeout(this.flush, wait);
    }
  };

  /** What a client resuming after `lastEventId` should get, if it matches `filter`. */
  resume(lastEventId: string, filter: Filter): Resume {
    const id = parseEventId(lastEventId);
    if (!id) return { kind: 'reset', reason: 'invalid-id' };
    if (id.epoch !== this.instanceId) return { kind: 'reset', reason: this.log.mode === 'redis' ? 'history-lost' : 'other-instance' };
    const seq = id.pos;
    if (seq > this.delivered) return { kind: 'reset', reason: 'unknown-id' };
    const events = this.eventsAfter(seq, filter);
    if (events === undefined) return { kind: 'reset', reason: 'expired' };
    return { kind: 'replay', events };
  }

  /**
   * Registers an open stream whose `opening` (snapshot or replay, sent first, in pieces as the
   * client reads) covers every event up to `after`; it gets everything newer, including events
   * still waiting in this turn's batch.
   */
  attach(res: StreamResponse, filter: Filter, after: number, opening: readonly (readonly Bytes[])[]): SseClient {
    const client = new SseClient(res, filter, after, this.hooks, opening);
    this.clients.add(client);
    return client;
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    const last = batch[batch.length - 1]!.seq;
    this.flushed = last;
    this.lastFlush = this.now();
    if (this.clients.size === 0) return;
    const started = process.hrtime.bigint();
    let shared: SharedBody | undefined;
    const matched: HubEvent[] = [];
    // Which events reached at least one stream: only those have a delivery latency to observe.
    // Tracked per event only for filtered clients; a client that takes the whole batch says all.
    let reachedAll = false;
    let reached: Set<HubEvent> | undefined;
    let position: SharedBody | undefined;
    for (const client of this.clients) {
      if (client.after >= last) continue;
      matched.length = 0;
      let considered = 0;
      for (const event of batch) {
        if (event.seq <= client.after) continue;
        considered += 1;
        if (matchesFilter(client.filter, event)) matched.push(event);
      }
      if (matched.length < considered) {
        // A filter that skips much of the stream would leave the client's last id far behind:
        // tell it where it is before what it skipped fills the replay window.
        client.skipped += considered - matched.length;
        if (client.skipped >= this.skipLimit && !client.isBehind) {
          if (matched.length > 0) client.send(matched);
          if (!client.isBehind) {
            position ??= new SharedBody([encodePosition(this.idOf(last))]);
            client.writeShared(position);
            client.skipped = 0;
          }
          if (!reachedAll) {
            reached ??= new Set();
            for (const event of matched) reached.add(event);
          }
          continue;
        }
      }
      if (matched.length === 0) continue;
      if (matched.length === batch.length) {
        // The common case: every client wants the whole batch, so all share one chunk.
        shared ??= new SharedBody(batch.map((e) => e.frame));
        client.send(batch, shared);
        reachedAll = true;
      } else {
        client.send(matched);
        if (!reachedAll) {
          reached ??= new Set();
          for (const event of matched) reached.add(event);
        }
      }
    }
    const m = this.options.metrics;
    m.fanoutDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    const now = this.now();
    for (const event of batch) {
      if (event.deviceTs !== undefined && (reachedAll || reached?.has(event))) {
        m.deliveryLatency.observe(Math.max(0, now - event.deviceTs) / 1000);
      }
    }
    this.syncDelivered();
  };

  /**
   * The log started over (a shared log that was lost, or that this replica fell behind): nothing
   * of the old numbering is sent any more, and every open stream is closed, so that each resumes
   * with its last id and is told `reset` with the reason, and a fresh snapshot.
   */
  restart(): void {
    this.batch = [];
    this.delivered = this.log.head;
    this.flushed = this.log.head;
    this.positionBeat = undefined;
    this.last = undefined;
    for (const client of [...this.clients]) client.close('restart', true);
  }

  /**
   * An event about this replica itself (its shared log went away or came back): written to every
   * stream now, after what is waiting, under the id of the last position delivered (a resume
   * from it continues exactly), kept in no history.
   */
  announce(name: SseEventName, data: unknown): void {
    this.flush();
    const body = new SharedBody([encodeJsonEvent(name, this.idOf(this.delivered), data)]);
    for (const client of this.clients) if (!client.isBehind && client.after <= this.delivered) client.writeShared(body);
    this.deliveredCounter[name].inc(this.clients.size);
  }

  /** One shared timer for every stream: heartbeats, and closing clients stuck past the deadline. */
  private tick(): void {
    const now = this.now();
    // The heartbeat carries the position of the last flush: an `id:` without `data:` sets the
    // browser's last event id without dispatching anything, so a client whose filter let nothing
    // through for a while still resumes from now, not from its last event. A client that joined
    // later than that flush (its opening is newer) gets a plain one.
    if (this.positionBeat?.seq !== this.flushed) {
      this.positionBeat = { seq: this.flushed, body: new SharedBody([encodePosition(this.idOf(this.flushed), true)]) };
    }
    const beat = this.positionBeat.body;
    for (const client of this.clients) {
      if (!client.isBehind) {
        client.writeShared(client.after > this.flushed ? HEARTBEATS : beat);
        client.skipped = 0;
      } else if (now - client.behindSince > this.options.writeDeadlineMs) client.close('deadline');
    }
    this.syncDelivered();
  }

  private syncDelivered(): void {
    for (const [name, count] of this.pendingDelivered) this.deliveredCounter[name].inc(count);
    this.pendingDelivered.clear();
  }

  private onClosed(client: SseClient, reason: DisconnectReason): void {
    if (this.clients.delete(client)) this.options.metrics.sseDisconnects.inc({ reason });
  }

  /**
   * Closes every open stream within `windowMs`, so reconnects spread out: the window is cut into
   * one slot per stream and each closes at a random moment of its own slot (even load, no clumps,
   * and still no pattern a fleet of clients could synchronise on).
   */
  drain(windowMs: number, random: () => number = Math.random): Promise<void> {
    const clients = [...this.clients];
    if (clients.length === 0) return Promise.resolve();
    const slot = windowMs / clients.length;
    return new Promise((resolve) => {
      let left = clients.length;
      clients.forEach((client, i) => {
        setTimeout(() => {
          client.close('shutdown', true);
          left -= 1;
          if (left === 0) resolve();
        }, Math.floor((i + random()) * slot));
      });
    });
  }
}

function labelled(counter: Counter<'event'>): Record<SseEventName, LabelCounter> {
  return Object.fromEntries(SSE_EVENTS.map((name) => [name, counter.labels(name)])) as Record<SseEventName, LabelCounter>;
}
