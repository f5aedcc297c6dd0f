import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@redis/client';
import type { DeviceView } from '../devices/store.js';
import { redactUrl, type Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { SSE_EVENTS, type SseEventName } from '../protocol.js';
import { ReplayBuffer } from '../sse/replay.js';
import { decodeFold, encodeFold, type Fold } from './fold.js';
import { newEpoch, type EventLog, type LogEntry, type NewEntry } from './log.js';
import { APPEND, CHECKPOINT, INIT, LEASE, RELEASE, TRIM } from './redis-scripts.js';

/** An entry of the stream as this replica takes it: its position, what it does to the view, its event. */
interface Decoded {
  pos: number;
  device: string | null;
  entry?: LogEntry;
  fold?: Fold;
  upstream?: 'up' | 'down';
}

export interface RedisLogOptions {
  url: string;
  /** Every key is `{<prefix>}:…`: one hash tag, one Cluster slot. */
  prefix: string;
  /** Entries kept at most (LOG_MAX_ENTRIES), in Redis and in each replica's cache for resumes. */
  maxEntries: number;
  /** How long entries are kept (LOG_RETENTION_S), in ms. */
  retentionMs: number;
  logger: Logger;
  metrics: Metrics;
  /** How long a blocking read waits for new entries before it looks at the log's meta. */
  blockMs?: number;
  /**
   * Round trips to Redis are what the shared log costs (on loopback, each write's syscall
   * carries the receiving end's work too), not the bytes. Under load, consecutive appends are
   * spaced this far apart so each carries what arrived meanwhile: a quiet log still appends at
   * once (the wait counts from the previous append), a busy one in batches, and a backlog in full
   * batches without waiting. Tail reads follow the appends (a blocking read returns at the next
   * one). The service passes the hub's write interval: each batch the log delivers is then
   * written to the streams at once, instead of waiting a second time for the streams' spacing.
   * 0: only what arrives while an append is in flight goes together.
   */
  lingerMs?: number;
}

/** The device state at a position of the log, as a checkpoint holds it. */
export interface Checkpoint {
  pos: number;
  mqtt: 'up' | 'down';
  devices: DeviceView[];
}

export interface RedisLogHooks {
  /** This replica's view as a checkpoint's JSON at `pos`, e.g. 0 to start a new log with when Redis has none. */
  checkpoint(pos: number): string;
  /** What an entry did to a device, in log order, before its event reaches any stream. */
  fold(device: string, fold: Fold): void;
  /** An `upstream` entry: whether the ingest session has the broker. */
  upstream(mqtt: 'up' | 'down'): void;
  /**
   * The history this replica followed is gone (the log was lost and started over, or entries it
   * never read were trimmed): its view starts again from `checkpoint`, its streams reset.
   */
  restart(checkpoint: Checkpoint): void;
  /** The log became reachable and tailed (true) or not (false). */
  status(up: boolean): void;
}

/** An append refused because this replica no longer holds the ingest lease. */
export class FencedError extends Error {
  constructor() {
    super('this replica no longer holds the ingest lease');
  }
}

interface Pending {
  entries: NewEntry[];
  /** The lease token that must still be held ('' = any replica may append these). */
  token: string;
  keys: string[];
  /** What every caller whose entries are in this one waits for. */
  done: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

type Client = ReturnType<typeof newClient>;

const EVENT_NAMES: ReadonlySet<string> = new Set(SSE_EVENTS);
/** Entries one blocking read takes at most. */
const READ_COUNT = 1_000;
/** Entries one append carries at most. */
const APPEND_MAX = 500;
/**
 * While its appends' replies bring it everything up to its own entries (see appendGroup), the
 * replica that writes nearly everything (the ingest holder, whose appends are fenced) does not read the log: a blocking read would wake
 * at each of its own appends and carry back what it already has. The tail starts reading again
 * this long after the next reply was due (one linger after the last), so an entry another replica
 * appends while this one is quiet waits at most a linger and this long.
 */
const TAIL_REST_MS = 20;
/** Added to the blocking time before a read counts as hung. */
const WATCHDOG_GRACE_MS = 3_000;
/** The longest any other command may take: the scripts are short, a trim at most a few ms. */
const COMMAND_TIMEOUT_MS = 5_000;

class CommandTimeout extends Error {
  constructor(command: string) {
    super(`redis did not answer ${command} within ${COMMAND_TIMEOUT_MS} ms`);
  }
}
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2_000;

/** The wait before retry `attempt` (from 1): doubling from RETRY_MIN_MS up to RETRY_MAX_MS. */
function retryDelay(attempt: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(attempt, 16));
}

/**
 * The shared log on a Redis stream. Positions are dense (`<n>-0`, n from 1), numbered by the
 * append script; the epoch (random, made with the log) is the prefix of every event id.
 *
 * Appends go out in order, one script call at a time, retried until Redis answers (a batch
 * number makes a retry idempotent). Every replica reads the stream with one blocking XREAD on a
 * connection of its own, guarded by a watchdog, and delivers what it reads, in position order:
 * first the fold of each entry (the device view), then the events to the hub. An append's reply
 * delivers the same way, without a read (see deliverOwn). What it took is kept for resumes, as
 * far back as the log's retention.
 */
export class RedisLog implements EventLog {
  readonly mode = 'redis' as const;
  private currentEpoch = '';
  /** The position of the newest entry read (of any kind). */
  private position = 0;
  private cache: ReplayBuffer;
  private readonly subscribers: ((entries: readonly LogEntry[]) => void)[] = [];
  private readonly keys: { meta: string; log: string; state: string; lease: string; writer: string; ingested: string; ingestOrder: string; revoked: string };
  private readonly shas = new Map<string, string>();
  private cmd: Client | undefined;
  private tail: Client | undefined;
  private up = false;
  private closed = false;
  private readonly queue: Pending[] = [];
  private writing = false;
  private batch = 0;
  private loading = false;
  /** When the last append went out (performance.now()). */
  private lastAppend = Number.NEGATIVE_INFINITY;
  private readonly blockMs: number;
  private readonly lingerMs: number;
  /** When an append's reply last delivered (performance.now()): the tail rests meanwhile (see TAIL_REST_MS). */
  private lastOwnDelivery = Number.NEGATIVE_INFINITY;
  /** Counts the starts and ends of loads: the reply of an append sent before or during one must not deliver after it. */
  private loads = 0;
  private loadRun: Promise<void> | undefined;
  private readonly waiters = new Set<{ pos: number; done(ok: boolean): void }>();
  private hooks: RedisLogHooks | undefined;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly options: RedisLogOptions) {
    const p = `{${options.prefix}}`;
    const writer = randomBytes(6).toString('hex');
    this.keys = {
      meta: `${p}:meta`,
      log: `${p}:log`,
      state: `${p}:state`,
      lease: `${p}:lease`,
      writer: `${p}:writer:${writer}`,
      ingested: `${p}:ingested`,
      ingestOrder: `${p}:ingested-order`,
      revoked: `${p}:revoked`,
    };
    this.blockMs = options.blockMs ?? 2_000;
    this.lingerMs = options.lingerMs ?? 5;
    this.cache = this.newCache(0);
  }

  get epoch(): string {
    return this.currentEpoch;
  }

  get head(): number {
    return this.position;
  }

  get pacingMs(): number {
    return this.lingerMs;
  }

  /**
   * Loaded and not loading again: the view, the ids and the cache agree. While a load runs (the
   * first, or after the log restarted) they do not, and a stream opened then would get a snapshot
   * of one state under the position of another.
   */
  get isLoaded(): boolean {
    return this.currentEpoch !== '' && !this.loading;
  }

  /** Reachable, synchronised with the log's meta and tailing it. */
  get isUp(): boolean {
    return this.up;
  }

  /** Entries kept here for resumes. */
  get retainedAfter(): number {
    return this.cache.retainedAfter;
  }

  get cached(): number {
    return this.cache.size;
  }

  onEntries(fn: (entries: readonly LogEntry[]) => void): void {
    this.subscribers.push(fn);
  }

  covers(after: number): boolean {
    return this.currentEpoch !== '' && after <= this.position && this.cache.covers(after);
  }

  range(after: number): Iterable<LogEntry> {
    return this.cache.after(after);
  }

  /**
   * Connects, creates the log if Redis has none, loads the newest checkpoint and the retained
   * entries before it (for resumes), and tails from it. Resolves once the view is current; keeps
   * retrying (and stays not ready) while Redis is away.
   */
  start(hooks: RedisLogHooks): Promise<void> {
    this.hooks = hooks;
    let first: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (first = resolve));
    this.running = this.run(() => first());
    return ready;
  }

  /** Appends one entry; any replica may. Resolves once it is in the log (retried until it is). */
  append(entry: NewEntry): void {
    this.enqueue([entry], '', []).catch((err: Error) => this.options.logger.error({ err: { message: err.message } }, 'log append dropped'));
  }

  /**
   * Appends entries in one step, only while `token` holds the ingest lease (else FencedError),
   * remembering `keys` (the MQTT messages they came from). Resolves once Redis has them all.
   */
  appendFenced(entries: readonly NewEntry[], token: string, keys: readonly string[]): Promise<void> {
    return this.enqueue(entries, token, keys);
  }

  /** The log's newest position, as Redis has it now. */
  async latest(): Promise<number> {
    return Number((await this.command(['HGET', this.keys.meta, 'n'])) ?? 0);
  }

  /** Whether the log already took the MQTT message of this key (a redelivery after a failover). */
  async ingested(key: string): Promise<boolean> {
    return (await this.command(['HEXISTS', this.keys.ingested, key])) === 1;
  }

  /** Takes or extends the ingest lease; true while held. */
  async lease(token: string, ms: number): Promise<boolean> {
    return (await this.script(LEASE, [this.keys.lease], [token, String(ms)])) === 1;
  }

  async release(token: string): Promise<void> {
    await this.script(RELEASE, [this.keys.lease], [token]);
  }

  /** Sign-out, for every replica: the session id stays revoked until `until` (epoch ms), when its token expires anyway. */
  async revokeSession(sid: string, until: number): Promise<void> {
    await this.command(['ZADD', this.keys.revoked, String(until), sid]);
    await this.command(['ZREMRANGEBYSCORE', this.keys.revoked, '-inf', String(Date.now())]);
  }

  /** The session ids revoked and not yet expired, with when each expires. */
  async revokedSessions(): Promise<[string, number][]> {
    const flat = (await this.command(['ZRANGE', this.keys.revoked, String(Date.now()), '+inf', 'BYSCORE', 'WITHSCORES'])) as unknown[];
    const out: [string, number][] = [];
    // RESP3 answers [[member, score], …]; RESP2 a flat [member, score, …].
    if (flat.length > 0 && Array.isArray(flat[0])) for (const [sid, score] of flat as [string, string | number][]) out.push([sid, Number(score)]);
    else for (let i = 0; i + 1 < flat.length; i += 2) out.push([String(flat[i]), Number(flat[i + 1])]);
    return out;
  }

  /** Stores the view at `pos` as the checkpoint replicas start from (kept only if newer). */
  async checkpoint(pos: number, json: string): Promise<boolean> {
    return (await this.script(CHECKPOINT, [this.keys.meta, this.keys.state], [this.currentEpoch, String(pos), json])) === 1;
  }

  /** Applies the age bound while nothing is appended. */
  async trim(): Promise<void> {
    const reply = (await this.script(TRIM, [this.keys.meta, this.keys.log], [String(this.options.maxEntries), String(this.options.retentionMs)])) as [number, string];
    this.countTrim(reply[0], reply[1]);
  }

  /** Resolves true once this replica has read up to `pos`, false after `ms` or when the log restarts. */
  waitFor(pos: number, ms: number): Promise<boolean> {
    if (pos <= this.position) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        pos,
        done: (ok: boolean) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => waiter.done(false), ms);
      this.waiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    for (const waiter of [...this.waiters]) waiter.done(false);
    this.tail?.destroy();
    // Appends still queued get a moment to land.
    const until = Date.now() + 2_000;
    while ((this.writing || this.queue.length > 0) && Date.now() < until && this.up) await sleep(20);
    for (const p of this.queue.splice(0)) p.reject(new Error('log closed'));
    await this.cmd?.close().catch(() => this.cmd?.destroy());
    await this.running;
  }

  // --- connection and tail ---------------------------------------------------------------

  private async run(ready: () => void): Promise<void> {
    let attempt = 0;
    let lastWarn = 0;
    while (!this.closed) {
      try {
        await this.connect();
        await this.sync();
        this.setUp(true);
        attempt = 0;
        ready();
        await this.follow();
      } catch (err) {
        if (this.closed) break;
        this.setUp(false);
        const now = Date.now();
        if (now - lastWarn > 30_000) {
          lastWarn = now;
          this.options.logger.warn({ err: { message: (err as Error).message }, url: redactUrl(this.options.url) }, 'shared log (redis) unavailable; retrying');
        }
        attempt += 1;
        await this.pause(retryDelay(attempt));
      }
    }
    this.setUp(false);
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async connect(): Promise<void> {
    if (!this.cmd) {
      const cmd = newClient(this.options.url);
      this.cmd = cmd;
      cmd.on('end', () => {
        if (this.cmd === cmd || this.cmd === undefined) this.setUp(false);
      });
    }
    if (!this.cmd.isOpen) await this.cmd.connect();
    if (!this.cmd.isReady) throw new Error('redis not ready');
    if (!this.tail || !this.tail.isOpen) {
      this.tail?.destroy();
      this.tail = this.cmd.duplicate();
      this.tail.on('error', () => undefined);
      await this.tail.connect();
    }
  }

  /**
   * Brings this replica in line with the log's meta: creates the log if there is none; on the
   * first sync, or when the epoch changed or the log went back (a Redis restarted from an older
   * file: positions this replica read would be given again to other entries, so the log gets a
   * new epoch), starts over from the checkpoint.
   */
  private async sync(): Promise<void> {
    const hooks = this.hooks!;
    let [epoch, n] = (await this.command(['HMGET', this.keys.meta, 'epoch', 'n'])) as [string | null, string | null];
    // No log (a first start, or a Redis that lost its data): make one, starting from this replica's view.
    if (epoch === null) [epoch, n] = (await this.script(INIT, [this.keys.meta, this.keys.log, this.keys.state], [newEpoch(), hooks.checkpoint(0)])) as [string, string];
    const head = Number(n ?? 0);
    if (epoch === this.currentEpoch && head >= this.position) return;
    if (epoch === this.currentEpoch && head < this.position) {
      // Went back: give it a new epoch (if no other replica did) and start over from that.
      await this.command(['HSET', this.keys.meta, 'epoch', newEpoch()]);
      return this.sync();
    }
    await this.load(epoch);
  }

  /**
   * Starts over at the log's checkpoint: the view, and the retained entries before it for resumes.
   * One load at a time (the tail finding a gap and a sync may both ask); while it runs nothing is
   * delivered, from the tail or from an append's reply, and a reply to an append sent before or
   * during it delivers nothing after it either (`loads` counts both ends).
   */
  private load(epoch: string): Promise<void> {
    this.loadRun ??= (async () => {
      // Until the view is restored, nothing may be served from this replica (see isLoaded).
      this.loading = true;
      this.loads += 1;
      try {
        await this.loadCheckpoint(epoch);
      } finally {
        this.loads += 1;
        this.loading = false;
        this.loadRun = undefined;
      }
    })();
    return this.loadRun;
  }

  private async loadCheckpoint(epoch: string): Promise<void> {
    const raw = (await this.command(['GET', this.keys.state])) as string | null;
    const checkpoint = parseCheckpoint(raw);
    const had = this.currentEpoch !== '';
    if (had) this.options.metrics.logEpochChanges.inc();
    this.currentEpoch = epoch;
    this.position = checkpoint.pos;
    this.cache = this.newCache(checkpoint.pos);
    // What a resume may still ask for: the retained entries up to the checkpoint.
    const before = await this.readRange(Math.max(1, checkpoint.pos - this.options.maxEntries + 1), checkpoint.pos);
    if (before.length > 0) {
      this.cache = this.newCache(before[0]!.seq - 1);
      for (const entry of before) this.cache.push(entry);
    }
    for (const waiter of [...this.waiters]) waiter.done(false);
    this.hooks!.restart(checkpoint);
    this.options.logger.info({ epoch, pos: checkpoint.pos, devices: checkpoint.devices.length, cached: this.cache.size, fresh: !had }, 'shared log loaded');
  }

  private async readRange(from: number, to: number): Promise<LogEntry[]> {
    const out: LogEntry[] = [];
    let start = from;
    while (start <= to) {
      const reply = (await this.command(['XRANGE', this.keys.log, `${start}-0`, `${to}-0`, 'COUNT', String(READ_COUNT)])) as RawEntry[];
      if (reply.length === 0) break;
      for (const raw of reply) {
        const decoded = this.decode(raw);
        if (decoded.entry) out.push(decoded.entry);
        start = decoded.pos + 1;
      }
    }
    return out;
  }

  /** Reads on from the position, until the connection fails or the log restarts under it. */
  private async follow(): Promise<void> {
    while (!this.closed) {
      await this.restWhileAppendsDeliver();
      if (this.closed) break;
      const reply = await this.read();
      if (reply === undefined) {
        // Quiet for a whole block (or the read hung): is this still the log we follow?
        await this.sync();
        continue;
      }
      // No linger here: a blocking read returns at the next append, and the appender's are paced
      // (lingerMs), so reads follow that pace without adding a wait of their own to it.
      this.deliver(reply);
    }
  }

  private async restWhileAppendsDeliver(): Promise<void> {
    for (;;) {
      // The next reply is due one linger after the last: rest until it is late.
      const left = this.lastOwnDelivery + this.lingerMs + TAIL_REST_MS - performance.now();
      if (left < 1 || this.closed) return;
      await sleep(left);
    }
  }

  private async read(): Promise<RawEntry[] | undefined> {
    const tail = this.tail!;
    const call = tail.sendCommand(['XREAD', 'COUNT', String(READ_COUNT), 'BLOCK', String(this.blockMs), 'STREAMS', this.keys.log, `${this.position}-0`]);
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), this.blockMs + WATCHDOG_GRACE_MS)));
    const reply = await Promise.race([call, hung]).finally(() => clearTimeout(timer));
    if (reply === 'hung') {
      // Blocking reads are known to hang after a reconnect: a new connection, and read again.
      call.catch(() => undefined);
      this.options.metrics.redisTailWatchdog.inc();
      this.options.logger.warn({ blockMs: this.blockMs }, 'blocking log read did not return; reconnecting the tail');
      tail.destroy();
      this.tail = undefined;
      await this.connect();
      return undefined;
    }
    return streamEntries(reply);
  }

  /** What the tail read: entries this replica already has (from an append's reply) are passed over unread. */
  private deliver(raw: RawEntry[]): void {
    const items: Decoded[] = [];
    for (const r of raw) if (Number.parseInt(r[0], 10) > this.position) items.push(this.decode(r));
    this.accept(items, 'tail');
  }

  /**
   * Takes entries in position order: each one's fold (the device view), then their events to the
   * hub. Positions already taken are passed over (the tail and an append's reply may both bring
   * one); a position missing means entries this replica never read were trimmed.
   */
  private accept(items: readonly Decoded[], via: 'reply' | 'tail'): void {
    // Loading: the view and the cache are being replaced; the tail reads these again after it.
    if (this.loading) return;
    const hooks = this.hooks!;
    const batch: LogEntry[] = [];
    const from = this.position;
    for (const decoded of items) {
      if (decoded.pos <= this.position) continue;
      if (decoded.pos !== this.position + 1) {
        // Entries this replica never read were trimmed: its view cannot be brought forward.
        this.options.logger.warn({ at: this.position, next: decoded.pos }, 'fell behind the log retention; starting over from the checkpoint');
        void this.load(this.currentEpoch).catch(() => undefined);
        return;
      }
      this.position = decoded.pos;
      if (decoded.fold && decoded.device !== null) hooks.fold(decoded.device, decoded.fold);
      if (decoded.upstream) hooks.upstream(decoded.upstream);
      if (decoded.entry) {
        this.cache.push(decoded.entry);
        batch.push(decoded.entry);
      }
    }
    if (this.position > from) this.options.metrics.logEntriesRead.inc({ via }, this.position - from);
    this.dropExpired();
    if (batch.length > 0) for (const fn of this.subscribers) fn(batch);
    for (const waiter of [...this.waiters]) if (waiter.pos <= this.position) waiter.done(true);
  }

  /** The cache keeps what Redis keeps: entries older than the retention go. */
  private dropExpired(): void {
    const horizon = Date.now() - this.options.retentionMs;
    this.cache.evictWhile((entry) => (entry.loggedAt ?? Infinity) < horizon);
  }

  private decode(raw: RawEntry): Decoded {
    const [id, list] = raw;
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < list.length; i += 2) f[list[i]!] = list[i + 1]!;
    const name = f.e !== undefined && EVENT_NAMES.has(f.e) && f.j !== undefined ? (f.e as SseEventName) : undefined;
    return this.decoded(Number.parseInt(id, 10), f.d ?? null, f.f, name, Number(f.b ?? 0), f.j, f.t === undefined ? undefined : Number(f.t), f.m === undefined ? undefined : Number(f.m));
  }

  /** One entry from its stored fields (JSON as stored), the same whether read from the log or from an append's reply. */
  private decoded(pos: number, device: string | null, fold: string | Fold | undefined, name: SseEventName | undefined, bit: number, json: string | undefined, deviceTs: number | undefined, loggedAt: number | undefined): Decoded {
    const out: Decoded = { pos, device };
    if (fold) out.fold = typeof fold === 'string' ? decodeFold(fold, name, json) : fold;
    if (name !== undefined && json !== undefined) {
      if (name === 'upstream') {
        const mqtt = (JSON.parse(json) as { mqtt?: unknown }).mqtt;
        if (mqtt === 'up' || mqtt === 'down') out.upstream = mqtt;
      }
      out.entry = {
        seq: pos,
        name,
        device,
        bit,
        // The data was encoded once by the appender: one line of JSON.
        frame: Buffer.from(`event: ${name}\nid: ${this.currentEpoch}-${pos}\ndata: ${json}\n\n`, 'utf8'),
        deviceTs,
        loggedAt,
      };
    }
    return out;
  }

  private setUp(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    this.hooks?.status(up);
  }

  // --- appends ---------------------------------------------------------------------------

  private enqueue(entries: readonly NewEntry[], token: string, keys: readonly string[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('log closed'));
    // Appends under one token that no write has taken yet would go in one group anyway: they join
    // the last one queued and share its promise (one per message was a tenth of the holder's cost).
    const last = this.queue[this.queue.length - 1];
    if (last !== undefined && last.token === token && last.entries.length + entries.length <= APPEND_MAX) {
      for (const e of entries) last.entries.push(e);
      for (const k of keys) last.keys.push(k);
      return last.done;
    }
    let resolve: () => void = () => undefined;
    let reject: (err: Error) => void = () => undefined;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.queue.push({ entries: [...entries], token, keys: [...keys], done, resolve, reject });
    if (!this.writing) void this.write();
    return done;
  }

  /** One append in flight at a time, in queue order; consecutive appends under the same token go together. */
  private async write(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        // Right after another append: gather what arrives meanwhile (see lingerMs), unless a full
        // append is already waiting (the pace must not cap how fast the log takes a backlog).
        // Never early: a timer measures from the event loop's cached clock and may fire before
        // the wait is over, and appends that come early on average would run ahead of the hub's
        // bound, which then holds their batches after all.
        for (;;) {
          const wait = this.lingerMs - (performance.now() - this.lastAppend);
          if (wait <= 0 || this.fullAppendQueued()) break;
          await sleep(Math.ceil(wait));
        }
        this.lastAppend = performance.now();
        const token = this.queue[0]!.token;
        const group: Pending[] = [];
        let size = 0;
        while (this.queue.length > 0 && this.queue[0]!.token === token && (group.length === 0 || size + this.queue[0]!.entries.length <= APPEND_MAX)) {
          const next = this.queue.shift()!;
          group.push(next);
          size += next.entries.length;
        }
        await this.appendGroup(group, token);
      }
    } finally {
      this.writing = false;
    }
  }

  /** Whether the first append is already complete: APPEND_MAX entries under its token, or entries under another token behind them. */
  private fullAppendQueued(): boolean {
    const token = this.queue[0]?.token;
    let size = 0;
    for (const p of this.queue) {
      if (p.token !== token) return true;
      size += p.entries.length;
      if (size >= APPEND_MAX) return true;
    }
    return false;
  }

  private async appendGroup(group: Pending[], token: string): Promise<void> {
    this.batch += 1;
    const batch = String(this.batch);
    const entries = group.flatMap((p) => p.entries);
    const keys = group.flatMap((p) => p.keys).join(' ');
    const fields: string[] = [];
    for (const e of entries) {
      fields.push(e.name ?? '', e.device ?? '', e.name ? String(e.bit) : '', e.name ? JSON.stringify(e.data) : '', e.deviceTs === undefined ? '' : String(e.deviceTs), e.fold ? encodeFold(e.fold, e.name, e.data) : '');
    }
    let attempt = 0;
    for (;;) {
      const started = performance.now();
      try {
        if (this.currentEpoch === '') throw new Error('the log is not loaded yet');
        const epoch = this.currentEpoch;
        const loads = this.loads;
        const reply = (await this.script(
          APPEND,
          [this.keys.meta, this.keys.log, this.keys.lease, this.keys.writer, this.keys.ingested, this.keys.ingestOrder],
          [epoch, token, batch, String(this.options.maxEntries), String(this.options.retentionMs), keys, String(entries.length), String(this.position), ...fields],
        )) as [number, number, number, string, (string | number)?, (RawEntry[] | null)?];
        this.options.metrics.logAppendDuration.observe((performance.now() - started) / 1000);
        this.options.metrics.logAppends.inc({ outcome: attempt > 0 ? 'retried' : 'ok' });
        this.countTrim(reply[2], reply[3]);
        // Still the log this append was sent to, and the reply has what lies between: deliver now.
        const [first, , , , ms, between] = reply;
        if (first > 0 && Array.isArray(between) && ms !== undefined && loads === this.loads && !this.loading && !this.closed && epoch === this.currentEpoch) {
          this.deliverOwn(first, Number(ms), between, entries, fields, token !== '');
        }
        for (const p of group) p.resolve();
        return;
      } catch (err) {
        const message = (err as Error).message ?? '';
        if (message.startsWith('FENCED')) {
          this.options.metrics.logAppends.inc({ outcome: 'fenced' });
          for (const p of group) p.reject(new FencedError());
          return;
        }
        if (this.closed) {
          for (const p of group) p.reject(new Error('log closed'));
          return;
        }
        // EPOCH/NOLOG: the log restarted under us; the tail loads it, then this retries under
        // the new epoch. Otherwise Redis is away: retry the same batch (idempotent) until it answers.
        attempt += 1;
        if (message.startsWith('EPOCH') || message.startsWith('NOLOG')) this.wake?.();
        await sleep(retryDelay(attempt));
      }
    }
  }

  /**
   * Delivers an append's entries from its reply, without reading them back: the reply carries
   * the entries others appended between this replica's position and `first` (in one atomic step
   * with the append, so nothing is missing), and this replica has its own. The holder of the
   * ingest lease writes nearly every entry, so it delivers them one round trip after the ingest
   * instead of two, and Redis sends none of them back to it.
   */
  private deliverOwn(first: number, ms: number, between: readonly RawEntry[], entries: readonly NewEntry[], fields: readonly string[], fenced: boolean): void {
    const items: Decoded[] = [];
    for (const r of between) if (Number.parseInt(r[0], 10) > this.position) items.push(this.decode(r));
    for (let i = 0; i < entries.length; i += 1) {
      const e = entries[i]!;
      const at = i * 6;
      const name = e.name !== undefined && EVENT_NAMES.has(e.name) ? e.name : undefined;
      // Exactly what a replica reading the log gets: the fields as stored. The fold is the one
      // that was encoded, not a parse of it: the view keeps it as it is, and nothing changes one
      // once made (the rules make a new head, a new alert, for every change).
      const deviceTs = fields[at + 4] === '' ? undefined : Number(fields[at + 4]);
      // A device stored as '' reads back as none.
      items.push(this.decoded(first + i, e.device || null, e.fold, name, name ? Number(fields[at + 2]) : 0, name ? fields[at + 3] : undefined, deviceTs, ms));
    }
    this.accept(items, 'reply');
    // Only the ingest holder's (fenced) appends come often enough to stand in for the tail: a
    // replica appending a command event now and then keeps reading the holder's entries at once.
    if (fenced) this.lastOwnDelivery = performance.now();
  }

  private countTrim(trimmed: number, reason: string): void {
    if (trimmed > 0 && (reason === 'age' || reason === 'size')) this.options.metrics.logTrimmed.inc({ reason }, trimmed);
  }

  // --- commands --------------------------------------------------------------------------

  /**
   * One command, answered within COMMAND_TIMEOUT_MS or given up: node-redis times a command out
   * only while it waits to be sent, so on a half-open connection (a frozen Redis, a dead NAT
   * entry) an append would wait forever, holding every PUBACK behind it. Both connections are
   * replaced then; whoever called retries (appends are idempotent by batch number).
   */
  private async command(args: string[]): Promise<unknown> {
    const cmd = this.cmd;
    if (!cmd?.isReady) throw new Error('redis not connected');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CommandTimeout(args[0]!)), COMMAND_TIMEOUT_MS);
    });
    try {
      return await Promise.race([cmd.sendCommand(args), late]);
    } catch (err) {
      if (err instanceof CommandTimeout && this.cmd === cmd) {
        this.options.metrics.redisCommandTimeouts.inc();
        this.options.logger.warn({ command: args[0], timeoutMs: COMMAND_TIMEOUT_MS }, 'redis did not answer in time; reconnecting');
        this.cmd = undefined;
        cmd.destroy();
        // The tail is replaced too: the run loop reconnects both.
        this.tail?.destroy();
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** EVALSHA, loading the script once per connection when the server does not know it. */
  private async script(source: string, keys: string[], args: string[]): Promise<unknown> {
    let sha = this.shas.get(source);
    if (sha === undefined) {
      sha = createHash('sha1').update(source).digest('hex');
      this.shas.set(source, sha);
    }
    try {
      return await this.command(['EVALSHA', sha, String(keys.length), ...keys, ...args]);
    } catch (err) {
      if (!(err as Error).message?.startsWith('NOSCRIPT')) throw err;
      return this.command(['EVAL', source, String(keys.length), ...keys, ...args]);
    }
  }

  private newCache(from: number): ReplayBuffer {
    // Frames average a few hundred bytes; the byte bound stops a burst of large ones.
    const cache = new ReplayBuffer(this.options.maxEntries, 256 * 1024 * 1024);
    cache.startAfter(from);
    return cache;
  }
}

type RawEntry = [string, string[]];

function newClient(url: string) {
  const client = createClient({
    url,
    // Fail fast while disconnected: the writer and the tail retry themselves, in order.
    disableOfflineQueue: true,
    maintNotifications: 'disabled',
    // node-redis's own timeout only covers a command's wait to be sent, at the price of an
    // AbortSignal.timeout per command (a timer and a finalizer: a tenth of the log's JavaScript in
    // a profile of the dashboard benchmark). command() and the tail's watchdog time the reply too.
    commandOptions: { timeout: 0 },
    socket: { connectTimeout: 5_000, reconnectStrategy: (retries: number) => retryDelay(retries) },
  });
  // node-redis emits 'error' for every failed reconnect: the log's loop logs what matters.
  client.on('error', () => undefined);
  return client;
}

/** XREAD's reply (RESP2: [[key, entries]]; RESP3: {key: entries}) as the entries of the one stream read. */
function streamEntries(reply: unknown): RawEntry[] | undefined {
  if (reply === null || reply === undefined) return undefined;
  if (Array.isArray(reply)) return (reply[0] as [string, RawEntry[]] | undefined)?.[1];
  const values = Object.values(reply as Record<string, RawEntry[]>);
  return values[0];
}

function parseCheckpoint(raw: string | null): Checkpoint {
  if (!raw) return { pos: 0, mqtt: 'down', devices: [] };
  const parsed = JSON.parse(raw) as Partial<Checkpoint>;
  return { pos: Number(parsed.pos ?? 0), mqtt: parsed.mqtt === 'up' ? 'up' : 'down', devices: Array.isArray(parsed.devices) ? parsed.devices : [] };
}
