import { ALERT_VIEW_MESSAGE_CHARS, MAX_DEVICES } from '../protocol.js';
import { AlertLog, alertAt, type AlertView } from './alarms.js';
import { TokenBucket } from './limits.js';
import type { AlertMessage, StatusMessage, TelemetryMessage } from './schema.js';
import { Sequence } from './sequence.js';
import type { DeviceHead, Fold } from '../log/fold.js';

export type { AlertView };
export type DeviceState = 'online' | 'offline' | 'unknown';

export interface Telemetry {
  ts: number;
  seq: number;
  metrics: Record<string, number>;
}

/** The public shape of a device, in /api/devices and in SSE snapshots. */
export interface DeviceView {
  id: string;
  state: DeviceState;
  stateTs: number | null;
  lastSeen: number | null;
  telemetry: Telemetry | null;
  /** Active alarms (one per alert type), most severe first, then newest first. */
  alarms: AlertView[];
  /** The device's recent alerts, oldest first, at most ALERT_HISTORY. */
  alerts: AlertView[];
}

interface DeviceRecord {
  id: string;
  state: DeviceState;
  stateTs: number | null;
  lastSeen: number | null;
  telemetry: Telemetry | null;
  /** The device's own ts of the current state; last wills carry none. Never mixed with our clock. */
  deviceStateTs: number | undefined;
  telemetrySeq: Sequence | undefined;
  eventSeq: Sequence | undefined;
  log: AlertLog | undefined;
  /** Service clock: when we last learned anything of the device. What forgetting is measured from. */
  heardAt: number;
}

export type Applied = 'changed' | 'unchanged' | 'duplicate' | 'limit' | 'admission';

/** Told after every change of a device's public view (`changed`) and when a device is dropped (`forgotten`). */
export type StoreListener = (id: string, change: 'changed' | 'forgotten') => void;

export interface StoreOptions {
  /** Forget a device not heard of for this long, whatever its state (service clock); 0 = never. */
  forgetAfterMs?: number;
  /** New device ids admitted per second from live messages; 0 = no cap. */
  admitRate?: number;
  /** New device ids that may be admitted at once before the rate applies. */
  admitBurst?: number;
  now?: () => number;
}

const NO_ALERTS = '"alarms":[],"alerts":[]';

// The forgetting sweep looks at up to this many devices a turn, a turn every 250 ms: a pass over
// 100,000 devices takes 5 s when nothing is due. A turn stops after SWEEP_TURN_MS whatever is left.
const SWEEP_EVERY_MS = 250;
const SWEEP_CHUNK = 5_000;
const SWEEP_TURN_MS = 4;

/**
 * Current state of every known device. Bounded: past `maxDevices` new ids are refused, new ids
 * from live messages are admitted at a capped rate, and devices gone long enough are forgotten.
 *
 * Device clocks decide nothing here: messages count in the order they arrive, the last status to
 * arrive wins, and duplicates are told by seq within one connection of the device (see Sequence).
 * A device's `ts` is data: shown, and a retained copy's ts bounds how recent "last seen" may read.
 */
export class DeviceStore {
  private readonly devices = new Map<string, DeviceRecord>();
  private onlineCount = 0;
  /** Bumped on every change, so a snapshot can be cached until the state moves. */
  version = 0;
  private readonly listeners: StoreListener[] = [];
  private readonly admission: TokenBucket;
  private readonly forgetAfterMs: number;
  private readonly now: () => number;
  private sweepCursor: Iterator<DeviceRecord> | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Why the last apply call returned `duplicate`, `limit` or `admission`. */
  refusal = '';

  constructor(
    private readonly maxDevices = MAX_DEVICES,
    options: StoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.forgetAfterMs = options.forgetAfterMs ?? 0;
    const rate = options.admitRate ?? 0;
    this.admission = new TokenBucket(rate, options.admitBurst ?? Math.max(1, rate * 10), this.now());
  }

  /** Calls `listener` after every change of a device's view, in the order changes happen. */
  subscribe(listener: StoreListener): void {
    this.listeners.push(listener);
  }

  /** Every change of a device's view goes through here: snapshot caches and encoders follow it. */
  changed(id: string): void {
    this.version += 1;
    for (const listener of this.listeners) listener(id, 'changed');
  }

  get size(): number {
    return this.devices.size;
  }

  get online(): number {
    return this.onlineCount;
  }

  has(id: string): boolean {
    return this.devices.has(id);
  }

  get(id: string): DeviceView | undefined {
    const record = this.devices.get(id);
    return record && view(record);
  }

  /**
   * The device's view as JSON, exactly as JSON.stringify(get(id)) writes it, with its alarms and
   * alerts encoded once per change of them rather than once per reading.
   */
  encode(id: string): string | undefined {
    const r = this.devices.get(id);
    if (!r) return undefined;
    const head = JSON.stringify({ id: r.id, state: r.state, stateTs: r.stateTs, lastSeen: r.lastSeen, telemetry: r.telemetry });
    return `${head.slice(0, -1)},${r.log ? r.log.json : NO_ALERTS}}`;
  }

  /** The device's newest alert as kept (its `at` is what the live `alert` event carries). */
  lastAlert(id: string): AlertView | undefined {
    return this.devices.get(id)?.log?.recent.at(-1);
  }

  telemetryOf(id: string): Telemetry | null {
    return this.devices.get(id)?.telemetry ?? null;
  }

  /** Devices in id order, optionally only those in `ids`. */
  list(ids?: ReadonlySet<string>): DeviceView[] {
    const out: DeviceView[] = [];
    if (ids) {
      for (const id of ids) {
        const record = this.devices.get(id);
        if (record) out.push(view(record));
      }
    } else {
      for (const record of this.devices.values()) out.push(view(record));
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * The record of `id`, created if new and allowed. Retained messages are exempt from the
   * admission rate: they arrive only when we subscribe, and a restart must take in the whole fleet.
   */
  private record(id: string, now: number, retained: boolean): DeviceRecord | 'limit' | 'admission' {
    const record = this.devices.get(id);
    if (record) {
      record.heardAt = now;
      return record;
    }
    if (this.devices.size >= this.maxDevices) {
      this.refusal = `the store holds its maximum of ${this.maxDevices} devices; new device ${id} refused`;
      return 'limit';
    }
    if (!retained && !this.admission.take(now)) {
      this.refusal = `new devices are admitted at a capped rate; new device ${id} refused for now`;
      return 'admission';
    }
    const created = blank(id, now);
    this.devices.set(id, created);
    return created;
  }

  /**
   * Last seen on the service's clock for live messages. A retained copy (delivered on subscribe,
   * after a restart, for a device that may have been gone for days) is history: it moves last seen
   * to its own ts, or not at all when it has none or its ts is ahead of now (a wrong clock: taking
   * min(ts, now) would make a device silent for days read "last seen" at the restart); never backwards.
   */
  private seen(record: DeviceRecord, now: number, retained: boolean, ts: number | undefined): boolean {
    const seen = retained ? (ts === undefined || ts > now ? null : ts) : now;
    if (seen === null || (record.lastSeen !== null && seen <= record.lastSeen)) return false;
    record.lastSeen = seen;
    return true;
  }

  /**
   * The last status to arrive wins, whatever its ts says. A copy of the current status (same state,
   * same ts: a retained status delivered again on resubscribe, a QoS 1 redelivery) is not news.
   * A live `online` and a last will (no ts) mean a new connection of the device: its seqs start over.
   */
  applyStatus(msg: StatusMessage, now: number, retained = false): Applied {
    const record = this.record(msg.device, now, retained);
    if (typeof record === 'string') return record;
    const moved = this.seen(record, now, retained, msg.ts);
    // A live `online` without ts is the same bytes from every connection: it cannot be told from a
    // new connection's (one with no last will, or a will delay it reconnected within), so its seqs start over.
    if (!retained && msg.state === 'online' && msg.ts === undefined) newEpoch(record);
    if (record.state === msg.state && (msg.ts === undefined || record.deviceStateTs === msg.ts)) {
      // lastSeen is part of every snapshot: a cached snapshot is stale from here on.
      if (moved) this.changed(record.id);
      return 'unchanged';
    }
    if (!retained && (msg.state === 'online' || msg.ts === undefined)) newEpoch(record);
    if (record.state === 'online') this.onlineCount -= 1;
    if (msg.state === 'online') this.onlineCount += 1;
    record.state = msg.state;
    // A retained last will (no ts) says offline, not since when.
    record.stateTs = msg.ts ?? (retained ? null : now);
    record.deviceStateTs = msg.ts;
    this.changed(record.id);
    return 'changed';
  }

  /** Takes `msg` into its sequence unless it is a repeat there; a repeat leaves its reason in `refusal`. */
  private firstTime(sequence: Sequence, kind: 'telemetry' | 'event', msg: { seq: number; ts: number }): boolean {
    const repeat = sequence.check(msg.seq, msg.ts);
    if (repeat !== undefined) {
      this.refusal = `${kind} ${repeat}`;
      return false;
    }
    sequence.accept(msg.seq, msg.ts);
    return true;
  }

  /** Telemetry in arrival order: the newest to arrive is the device's current reading. */
  applyTelemetry(msg: TelemetryMessage, now: number, retained = false): Applied {
    const record = this.record(msg.device, now, retained);
    if (typeof record === 'string') return record;
    if (!this.firstTime((record.telemetrySeq ??= new Sequence()), 'telemetry', msg)) return 'duplicate';
    record.telemetry = { ts: msg.ts, seq: msg.seq, metrics: msg.metrics };
    this.seen(record, now, retained, msg.ts);
    this.changed(record.id);
    return 'changed';
  }

  /** Keeps the alert in the device's recent alerts and its active alarms; `now` becomes its `at` (see alertAt). */
  applyAlert(msg: AlertMessage, now: number, retained = false): Applied {
    const record = this.record(msg.device, now, retained);
    if (typeof record === 'string') return record;
    if (!this.firstTime((record.eventSeq ??= new Sequence()), 'event', msg)) return 'duplicate';
    record.log ??= new AlertLog();
    record.log.add({ type: msg.type, severity: msg.severity, message: kept(msg.message), ts: msg.ts, seq: msg.seq, at: alertAt(msg.ts, now, retained, record.lastSeen) });
    this.seen(record, now, retained, msg.ts);
    this.changed(record.id);
    return 'changed';
  }

  /** Any sign of life (an ack) moves last seen without changing state; a retained one, as history. */
  touch(id: string, now: number, retained = false, ts?: number): void {
    const record = this.devices.get(id);
    if (!record) return;
    record.heardAt = now;
    if (this.seen(record, now, retained, ts)) this.changed(id);
  }

  /** The fields of the device's view that a change moves (see Fold). */
  head(id: string): DeviceHead | undefined {
    const r = this.devices.get(id);
    return r && { state: r.state, stateTs: r.stateTs, lastSeen: r.lastSeen, telemetry: r.telemetry };
  }

  /**
   * Applies what an entry of the shared log did to a device: the view as the log says, no rule
   * applied again (the replica that appended it applied them). Past `maxDevices` a new id is
   * ignored, as the appender refused it too.
   */
  fold(id: string, fold: Fold, now = this.now()): void {
    if ('forget' in fold) {
      this.forget(id);
      return;
    }
    let record = this.devices.get(id);
    if (!record) {
      if (this.devices.size >= this.maxDevices) return;
      record = blank(id, now);
      this.devices.set(id, record);
    }
    this.setHead(record, fold.h);
    record.heardAt = now;
    if (fold.a) (record.log ??= new AlertLog()).add(fold.a);
    this.changed(id);
  }

  /**
   * Takes a device's view as a checkpoint of the shared log holds it, replacing what is known of
   * it. Its seqs start over (a checkpoint carries none): the device's next messages are news.
   */
  restore(view: DeviceView, now = this.now()): void {
    const record = this.devices.get(view.id) ?? blank(view.id, now);
    this.devices.set(view.id, record);
    this.setHead(record, view);
    record.deviceStateTs = view.stateTs ?? undefined;
    record.telemetrySeq = undefined;
    record.eventSeq = undefined;
    // Forgetting counts from when the device was last heard, not from this restore: a new ingest
    // holder after every deploy must not keep a long-silent device forever.
    record.heardAt = view.lastSeen !== null && view.lastSeen < now ? view.lastSeen : now;
    if (view.alarms.length > 0 || view.alerts.length > 0) record.log = AlertLog.from(view.alarms, view.alerts);
    else record.log = undefined;
    this.changed(view.id);
  }

  /** Forgets every device (the shared log they came from is gone). */
  clear(): void {
    for (const id of [...this.devices.keys()]) this.forget(id);
  }

  /** Every device id, in no particular order. */
  ids(): IterableIterator<string> {
    return this.devices.keys();
  }

  private setHead(record: DeviceRecord, head: DeviceHead): void {
    if (record.state === 'online') this.onlineCount -= 1;
    if (head.state === 'online') this.onlineCount += 1;
    record.state = head.state;
    record.stateTs = head.stateTs;
    record.lastSeen = head.lastSeen;
    record.telemetry = head.telemetry;
  }

  /** Drops a device and tells listeners (`forgotten`). False when it was not known. */
  forget(id: string): boolean {
    const record = this.devices.get(id);
    if (!record) return false;
    this.devices.delete(id);
    if (record.state === 'online') this.onlineCount -= 1;
    this.version += 1;
    for (const listener of this.listeners) listener(id, 'forgotten');
    return true;
  }

  /**
   * Forgets devices last heard of `forgetAfterMs` ago or more, whatever state they claim: `online`
   * is the device's word (a retained online with a clean disconnect and no will stays online for
   * ever), silence is ours; a connected device that was merely silent comes back with its next
   * message. Looks
   * at `budget` devices at most and works for SWEEP_TURN_MS at most (forgetting tells listeners,
   * which re-encode), going on from where the last call stopped: a sweep of 100,000 devices is many
   * short turns instead of one long stall. Returns how many it forgot.
   */
  sweep(now = this.now(), budget = SWEEP_CHUNK): number {
    if (this.forgetAfterMs <= 0) return 0;
    const until = performance.now() + SWEEP_TURN_MS;
    let forgotten = 0;
    for (let looked = 0; looked < budget; looked += 1) {
      if ((looked & 63) === 63 && performance.now() > until) break;
      this.sweepCursor ??= this.devices.values();
      const next = this.sweepCursor.next();
      if (next.done) {
        // One pass at most per call: the next call starts over from the oldest entry.
        this.sweepCursor = undefined;
        break;
      }
      const record = next.value;
      if (now - record.heardAt < this.forgetAfterMs) continue;
      this.forget(record.id);
      forgotten += 1;
      if (performance.now() > until) break;
    }
    return forgotten;
  }

  /** Starts the periodic forgetting sweep (nothing to do when forgetting is off). */
  start(): void {
    if (this.forgetAfterMs <= 0 || this.sweepTimer) return;
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_EVERY_MS).unref();
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }
}

/**
 * An alert message as kept in the view: at most ALERT_VIEW_MESSAGE_CHARS. Copied, not sliced: a
 * V8 slice keeps the whole original string alive, which would defeat the bound.
 */
function kept(message: string): string {
  if (message.length <= ALERT_VIEW_MESSAGE_CHARS) return message;
  return Buffer.from(`${message.slice(0, ALERT_VIEW_MESSAGE_CHARS - 3)}...`, 'utf8').toString('utf8');
}

function blank(id: string, now: number): DeviceRecord {
  return {
    id,
    state: 'unknown',
    stateTs: null,
    lastSeen: null,
    telemetry: null,
    deviceStateTs: undefined,
    telemetrySeq: undefined,
    eventSeq: undefined,
    log: undefined,
    heardAt: now,
  };
}

/** The device's next telemetry and events start a new sequence (see Sequence). */
function newEpoch(record: DeviceRecord): void {
  record.telemetrySeq?.newEpoch();
  record.eventSeq?.newEpoch();
}

function view(r: DeviceRecord): DeviceView {
  return {
    id: r.id,
    state: r.state,
    stateTs: r.stateTs,
    lastSeen: r.lastSeen,
    telemetry: r.telemetry,
    alarms: r.log ? r.log.alarms.slice() : [],
    alerts: r.log ? r.log.recent.slice() : [],
  };
}
