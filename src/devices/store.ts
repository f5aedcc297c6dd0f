import type { AlertMessage, StatusMessage, TelemetryMessage } from './schema.js';

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
}

interface Position {
  seq: number;
  ts: number;
}

interface DeviceRecord extends DeviceView {
  lastAlert: Position | null;
  /** The device's own ts of the current state; last wills carry none. Never mixed with our clock. */
  deviceStateTs: number | undefined;
}

export type Applied = 'changed' | 'unchanged' | 'duplicate' | 'limit';

/** Told after every change of a device's public view (`changed`) and when a device is dropped (`forgotten`). */
export type StoreListener = (id: string, change: 'changed' | 'forgotten') => void;

/**
 * QoS 1 is at-least-once: after a reconnect the broker may deliver a message again. A message is a
 * repeat when both its seq and its ts are not newer than the last one accepted; a device that
 * restarts its seq at 1 still moves its ts forward, so it is accepted and tracking starts over.
 */
function isRepeat(last: Position | null, seq: number, ts: number): boolean {
  return last !== null && seq <= last.seq && ts <= last.ts;
}

/** Current state of every known device. Bounded: past `maxDevices` new ids are refused. */
export class DeviceStore {
  private readonly devices = new Map<string, DeviceRecord>();
  private onlineCount = 0;
  /** Bumped on every change, so a snapshot can be cached until the state moves. */
  version = 0;
  private readonly listeners: StoreListener[] = [];

  constructor(private readonly maxDevices = 100_000) {}

  /** Calls `listener` after every change of a device's view, in the order changes happen. */
  subscribe(listener: StoreListener): void {
    this.listeners.push(listener);
  }

  private changed(id: string): void {
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

  private record(id: string): DeviceRecord | undefined {
    let record = this.devices.get(id);
    if (!record) {
      if (this.devices.size >= this.maxDevices) return undefined;
      record = {
        id,
        state: 'unknown',
        stateTs: null,
        lastSeen: null,
        telemetry: null,
        lastAlert: null,
        deviceStateTs: undefined,
      };
      this.devices.set(id, record);
    }
    return record;
  }

  /**
   * A retained status (delivered on subscribe, after a restart, for a device that may have been
   * gone for days) is history: it moves last seen only to its own ts, never to now.
   */
  applyStatus(msg: StatusMessage, now: number, retained = false): Applied {
    const record = this.record(msg.device);
    if (!record) return 'limit';
    const seen = retained ? (msg.ts === undefined ? null : Math.min(msg.ts, now)) : now;
    if (seen !== null && (record.lastSeen === null || seen > record.lastSeen)) {
      record.lastSeen = seen;
      // lastSeen is part of every snapshot: a cached snapshot is stale from here on.
      this.changed(record.id);
    }
    // A retained status delivered again (resubscribe, broker restart) is not news.
    if (record.state === msg.state && (msg.ts === undefined || record.deviceStateTs === msg.ts)) return 'unchanged';
    if (msg.ts !== undefined && record.deviceStateTs !== undefined && msg.ts < record.deviceStateTs) return 'duplicate';
    if (record.state === 'online') this.onlineCount -= 1;
    if (msg.state === 'online') this.onlineCount += 1;
    record.state = msg.state;
    // A retained last will (no ts) says offline, not since when.
    record.stateTs = msg.ts ?? (retained ? null : now);
    record.deviceStateTs = msg.ts;
    this.changed(record.id);
    return 'changed';
  }

  applyTelemetry(msg: TelemetryMessage, now: number): Applied {
    const record = this.record(msg.device);
    if (!record) return 'limit';
    const last = record.telemetry;
    if (last && isRepeat(last, msg.seq, msg.ts)) return 'duplicate';
    record.telemetry = { ts: msg.ts, seq: msg.seq, metrics: msg.metrics };
    record.lastSeen = now;
    this.changed(record.id);
    return 'changed';
  }

  applyAlert(msg: AlertMessage, now: number): Applied {
    const record = this.record(msg.device);
    if (!record) return 'limit';
    if (isRepeat(record.lastAlert, msg.seq, msg.ts)) return 'duplicate';
    record.lastAlert = { seq: msg.seq, ts: msg.ts };
    record.lastSeen = now;
    this.changed(record.id);
    return 'changed';
  }

  /** Any sign of life (an ack) moves last seen without changing state. */
  touch(id: string, now: number): void {
    const record = this.devices.get(id);
    if (!record) return;
    record.lastSeen = now;
    this.changed(id);
  }
}

function view(r: DeviceRecord): DeviceView {
  return { id: r.id, state: r.state, stateTs: r.stateTs, lastSeen: r.lastSeen, telemetry: r.telemetry };
}
