import { randomBytes } from 'node:crypto';
import type { SseEventName } from '../protocol.js';
import type { HubEvent } from '../sse/event.js';
import type { Fold } from './fold.js';

/**
 * One event as the producers hand it to the log: ingest (telemetry, status, alert), the command
 * flow (command) and the bridge (upstream). The log gives it its position.
 */
export interface NewEntry {
  /** The event's name; none for an entry that only moves a device's view (shared log only). */
  readonly name: SseEventName | undefined;
  /** The device it concerns, or null for service-wide events (`upstream`). */
  readonly device: string | null;
  /** Its TYPE_BIT, or ALWAYS. */
  readonly bit: number;
  /** The event's JSON data, encoded once by the log. */
  readonly data: unknown;
  /** The device's own timestamp, for the device → client latency histogram. */
  readonly deviceTs?: number | undefined;
  /** What the entry does to its device's view, for the replicas that fold the shared log. */
  readonly fold?: Fold | undefined;
}

/**
 * An entry as the log delivers it: `seq` is its position, dense and increasing from 1 within one
 * epoch, and its frame is encoded once with the id `<epoch>-<seq>` (the same bytes go to every
 * stream, live or replayed).
 */
export type LogEntry = HubEvent;

/**
 * The ordered log every event goes through before any stream sees it, so that numbering, history
 * and delivery order have one owner and the hub only fans out what the log delivers.
 *
 * Embedded mode (MemoryLog) is one process's memory: append numbers, keeps and delivers in the
 * same call. The shared log (RedisLog) appends asynchronously and delivers what its tail reads,
 * in the same order to every replica; `range` answers from what the tail read and kept.
 */
export interface EventLog {
  readonly mode: 'memory' | 'redis';
  /** Identifies this log's numbering: the prefix of every event id. A new epoch = positions start over. */
  readonly epoch: string;
  /** The position of the newest entry delivered to subscribers; 0 before the first. */
  readonly head: number;
  /**
   * How far apart, under load, the log itself hands entries to subscribers (it gathers that long
   * between calls to its store); 0: each as it comes. A hub whose write interval is no longer
   * does not make them wait a second time.
   */
  readonly pacingMs: number;
  /** Appends one entry: the embedded log delivers it before returning, the shared one once its tail reads it. */
  append(entry: NewEntry): void;
  /** `fn` gets every entry appended from now on, in position order, each exactly once. */
  onEntries(fn: (entries: readonly LogEntry[]) => void): void;
  /** Whether every entry after `after` is still retained (and `after` is not ahead of the head). */
  covers(after: number): boolean;
  /** Every entry after this position is retained: range(retainedAfter) is the whole history. */
  readonly retainedAfter: number;
  /** The retained entries after `after`, oldest first. Call only when covers(after). */
  range(after: number): Iterable<LogEntry>;
}

/** The SSE id of a position in a log: `<epoch>-<pos>`. */
export function eventId(epoch: string, pos: number): string {
  return `${epoch}-${pos}`;
}

const EVENT_ID = /^([0-9a-z]{4,32})-(\d{1,15})$/;

/** The epoch and position an id names, or undefined when it is not an id of this form. */
export function parseEventId(id: string): { epoch: string; pos: number } | undefined {
  const match = EVENT_ID.exec(id);
  return match ? { epoch: match[1]!, pos: Number(match[2]) } : undefined;
}

/** A new log's epoch: time base36 + 6 hex, so epochs never repeat. */
export function newEpoch(now = Date.now()): string {
  return `${now.toString(36)}${randomBytes(3).toString('hex')}`;
}
