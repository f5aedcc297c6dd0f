import { encodeJsonEvent } from '../sse/frame.js';
import { ReplayBuffer } from '../sse/replay.js';
import { eventId, newEpoch, type EventLog, type LogEntry, type NewEntry } from './log.js';

export interface MemoryLogOptions {
  /** How many entries are kept for resumes (SSE_REPLAY_SIZE); 0 keeps none. */
  replaySize: number;
  /** Bytes of encoded frames kept at most, whatever the count. */
  replayMaxBytes?: number;
  /** The epoch; by default a fresh one per process (time base36 + 6 hex), so ids never repeat across restarts. */
  epoch?: string;
  now?: () => number;
}

/**
 * The embedded log: one process's memory. Positions count from 1, the epoch is this process's
 * instance id (a restart is a new log), history is the replay window. An append is numbered,
 * encoded once, kept and handed to every subscriber before it returns, so a reader that looks
 * at the head right after an append sees it.
 */
export class MemoryLog implements EventLog {
  readonly mode = 'memory' as const;
  readonly pacingMs: number = 0;
  readonly epoch: string;
  private pos = 0;
  private readonly history: ReplayBuffer;
  private readonly subscribers: ((entries: readonly LogEntry[]) => void)[] = [];

  constructor(options: MemoryLogOptions) {
    this.epoch = options.epoch ?? newEpoch((options.now ?? Date.now)());
    this.history = new ReplayBuffer(options.replaySize, options.replayMaxBytes);
  }

  get head(): number {
    return this.pos;
  }

  get retainedAfter(): number {
    return this.history.retainedAfter;
  }

  append(entry: NewEntry): void {
    if (entry.name === undefined) return;
    this.pos += 1;
    const logged: LogEntry = {
      seq: this.pos,
      name: entry.name,
      device: entry.device,
      bit: entry.bit,
      frame: encodeJsonEvent(entry.name, eventId(this.epoch, this.pos), entry.data),
      deviceTs: entry.deviceTs,
    };
    this.history.push(logged);
    const batch = [logged];
    for (const fn of this.subscribers) fn(batch);
  }

  onEntries(fn: (entries: readonly LogEntry[]) => void): void {
    this.subscribers.push(fn);
  }

  covers(after: number): boolean {
    return after <= this.pos && this.history.covers(after);
  }

  range(after: number): Iterable<LogEntry> {
    return this.history.after(after);
  }
}
