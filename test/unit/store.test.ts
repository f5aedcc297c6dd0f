import { describe, expect, it } from 'vitest';
import type { AlertMessage, StatusMessage, TelemetryMessage } from '../../src/devices/schema.js';
import { DeviceStore } from '../../src/devices/store.js';
import { ALERT_HISTORY, ALERT_VIEW_MESSAGE_CHARS, MAX_ACTIVE_ALARMS } from '../../src/protocol.js';

const T = 1_796_182_012_369;
const HOUR = 3_600_000;
const telemetry = (seq: number, ts: number, device = 'd'): TelemetryMessage => ({ kind: 'telemetry', device, seq, ts, metrics: { t: seq } });
const status = (state: 'online' | 'offline', ts: number | undefined, device = 'd'): StatusMessage => ({ kind: 'status', device, state, ts });
const alert = (seq: number, type: string, severity: AlertMessage['severity'], ts = T + seq): AlertMessage => ({
  kind: 'events', device: 'd', seq, ts, type, severity, message: `${type} ${severity}`,
});

describe('device store: duplicates', () => {
  it('drops a telemetry message delivered twice on one connection (QoS 1 redelivery)', () => {
    const store = new DeviceStore();
    expect(store.applyTelemetry(telemetry(1, T), 1)).toBe('changed');
    expect(store.applyTelemetry(telemetry(2, T + 1), 2)).toBe('changed');
    expect(store.applyTelemetry(telemetry(2, T + 1), 3)).toBe('duplicate');
    expect(store.refusal).toContain('seq 2');
    expect(store.applyTelemetry(telemetry(1, T), 3)).toBe('duplicate');
    expect(store.get('d')?.telemetry?.seq).toBe(2);
  });

  it('within one connection, a lower seq is a duplicate even with a later clock', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(10, T), 2);
    expect(store.applyTelemetry(telemetry(9, T + HOUR), 3)).toBe('duplicate');
    expect(store.refusal).toMatch(/seq 9 is not above 10/);
  });

  it('accepts a rebooted device at once: seq back at 1 and clock an hour behind', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(500, T), 2);
    store.applyAlert(alert(40, 'battery', 'warning', T), 2);
    // The broker's last will, then the new connection's online status with the wrong clock.
    expect(store.applyStatus(status('offline', undefined), 3)).toBe('changed');
    expect(store.applyStatus(status('online', T - HOUR), 4)).toBe('changed');
    expect(store.get('d')).toMatchObject({ state: 'online', stateTs: T - HOUR });
    expect(store.applyTelemetry(telemetry(1, T - HOUR + 1), 5)).toBe('changed');
    expect(store.applyAlert(alert(1, 'temp', 'critical', T - HOUR + 2), 5)).toBe('changed');
    expect(store.get('d')?.telemetry).toMatchObject({ seq: 1, ts: T - HOUR + 1 });
    // And in order again from there.
    expect(store.applyTelemetry(telemetry(1, T - HOUR + 1), 6)).toBe('duplicate');
  });

  it('a live online alone (no will seen) also starts the sequence afresh', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(500, T), 2);
    expect(store.applyStatus(status('online', T - HOUR), 3)).toBe('changed');
    expect(store.applyTelemetry(telemetry(1, T - HOUR), 4)).toBe('changed');
  });

  it('a live online without ts starts the sequence afresh even when the state is already online (no will seen)', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', undefined), 1);
    store.applyTelemetry(telemetry(7, T), 2);
    store.applyAlert(alert(3, 'battery', 'warning', T), 2);
    // Rebooted within its will delay (or without a will): the same ts-less online, seq back at 1.
    expect(store.applyStatus(status('online', undefined), 3)).toBe('unchanged');
    expect(store.applyTelemetry(telemetry(1, T - HOUR), 4)).toBe('changed');
    expect(store.applyAlert(alert(1, 'temp', 'critical', T - HOUR), 4)).toBe('changed');
    expect(store.get('d')?.telemetry?.seq).toBe(1);
    // A retained copy of it (a resubscribe) does not.
    expect(store.applyStatus(status('online', undefined), 5, true)).toBe('unchanged');
    expect(store.applyTelemetry(telemetry(1, T - HOUR + 5), 6)).toBe('duplicate');
  });

  it('drops the resend of a message accepted before the device reconnected', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(7, T + 7), 2);
    store.applyTelemetry(telemetry(8, T + 8), 2);
    // Reconnect: new online, then the device resends 8 (never acknowledged by the broker).
    store.applyStatus(status('online', T + 9), 3);
    expect(store.applyTelemetry(telemetry(8, T + 8), 4)).toBe('duplicate');
    expect(store.refusal).toContain('redelivery');
    expect(store.applyTelemetry(telemetry(9, T + 10), 4)).toBe('changed');
  });

  it('a redelivered online status (same state, same ts) neither changes the state nor restarts the sequence', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(5, T + 5), 2);
    expect(store.applyStatus(status('online', T), 3)).toBe('unchanged');
    expect(store.applyTelemetry(telemetry(3, T + 99), 4)).toBe('duplicate');
  });

  it('retained messages never start a sequence afresh', () => {
    const store = new DeviceStore();
    store.applyStatus(status('online', T), 1);
    store.applyTelemetry(telemetry(5, T + 5), 2);
    // A resubscribe brings the retained status of an older connection: taken, but no new epoch.
    expect(store.applyStatus(status('offline', T - 10), 3, true)).toBe('changed');
    expect(store.applyTelemetry(telemetry(2, T + 99), 4)).toBe('duplicate');
  });
});

describe('device store: status', () => {
  it('the last status to arrive wins, whatever its clock says', () => {
    const store = new DeviceStore();
    expect(store.applyStatus(status('online', T + 365 * 24 * HOUR), 1)).toBe('changed');
    expect(store.applyStatus(status('offline', T), 2)).toBe('changed');
    expect(store.get('d')).toMatchObject({ state: 'offline', stateTs: T });
    expect(store.applyStatus(status('online', T - HOUR), 3)).toBe('changed');
    expect(store.get('d')?.state).toBe('online');
  });

  it('counts devices online and ignores a retained status seen again', () => {
    const store = new DeviceStore();
    expect(store.applyStatus(status('online', T), 1)).toBe('changed');
    expect(store.applyStatus(status('online', T), 2, true)).toBe('unchanged');
    expect(store.online).toBe(1);
    expect(store.applyStatus(status('offline', undefined), 3)).toBe('changed');
    expect(store.online).toBe(0);
    expect(store.get('d')).toMatchObject({ state: 'offline', stateTs: 3 });
  });

  it('moves its version and tells listeners whenever last seen moves, so a cached snapshot is never stale', () => {
    const store = new DeviceStore();
    const told: string[] = [];
    store.subscribe((id, change) => told.push(`${id}:${change}`));
    store.applyStatus(status('online', T), 1);
    let version = store.version;
    expect(store.applyStatus(status('online', T), 2)).toBe('unchanged');
    expect(store.version).toBeGreaterThan(version);
    version = store.version;
    store.touch('d', 3);
    expect(store.version).toBeGreaterThan(version);
    expect(store.get('d')?.lastSeen).toBe(3);
    expect(told).toEqual(['d:changed', 'd:changed', 'd:changed']);
  });

  it('takes a retained status as history: last seen moves to its ts at most, never to now', () => {
    const store = new DeviceStore();
    store.applyStatus(status('offline', undefined, 'gone'), 5_000, true);
    expect(store.get('gone')).toMatchObject({ state: 'offline', stateTs: null, lastSeen: null });
    store.applyStatus(status('online', 1_000, 'up'), 5_000, true);
    expect(store.get('up')).toMatchObject({ state: 'online', stateTs: 1_000, lastSeen: 1_000 });
    store.applyStatus(status('online', 1_000, 'up'), 6_000);
    expect(store.get('up')?.lastSeen).toBe(6_000);
  });
});

describe('device store: retained telemetry, alerts and acks are history', () => {
  it('a device silent for three days does not read as seen now after a restart', () => {
    const now = T + 3 * 24 * HOUR;
    const store = new DeviceStore();
    store.applyStatus(status('online', T - 1000), now, true);
    store.applyTelemetry(telemetry(9, T), now, true);
    store.applyAlert(alert(3, 'battery', 'warning', T + 1), now, true);
    store.touch('d', now, true, T + 2);
    expect(store.get('d')?.lastSeen).toBe(T + 2);
    expect(store.get('d')?.telemetry?.seq).toBe(9);
    // A retained copy with a clock ahead of ours says nothing of when: last seen stays (not the restart).
    store.applyTelemetry(telemetry(10, now + HOUR), now, true);
    expect(store.get('d')?.lastSeen).toBe(T + 2);
    expect(store.get('d')?.telemetry?.seq).toBe(10);
    // Live messages are signs of life: now, on the service's clock.
    store.applyTelemetry(telemetry(11, T), now + 5);
    expect(store.get('d')?.lastSeen).toBe(now + 5);
  });

  it('a retained alert is dated by its own ts, never by the restart; a live one by its arrival', () => {
    const now = T + 3 * 24 * HOUR;
    const store = new DeviceStore();
    store.applyAlert(alert(3, 'battery', 'warning', T), now, true);
    expect(store.get('d')?.alarms[0]?.at).toBe(T);
    // Its clock is ahead of ours: dated by the device's last seen as it stood, which it leaves alone.
    store.applyAlert(alert(4, 'door', 'critical', now + HOUR), now, true);
    expect(store.get('d')?.alarms[0]).toMatchObject({ type: 'door', at: T });
    expect(store.get('d')?.lastSeen).toBe(T);
    store.applyAlert(alert(5, 'smoke', 'critical', T - HOUR), now + 7);
    expect(store.get('d')?.alerts.map((a) => a.at)).toEqual([T, T, now + 7]);
  });

  it('a retained alert ahead of now from a device with no last seen is dated 0 (unknown), and last seen stays null', () => {
    const now = T + 3 * 24 * HOUR;
    const store = new DeviceStore();
    store.applyAlert(alert(1, 'door', 'critical', now + 1), now, true);
    expect(store.get('d')).toMatchObject({ lastSeen: null, alarms: [{ type: 'door', at: 0 }] });
    expect(store.lastAlert('d')?.at).toBe(0);
    store.applyStatus(status('offline', now + 1), now, true);
    expect(store.get('d')?.lastSeen).toBeNull();
  });

  it('a retained ack without ts leaves last seen as it is', () => {
    const store = new DeviceStore();
    store.applyStatus(status('offline', T), T + HOUR, true);
    store.touch('d', T + HOUR, true, undefined);
    expect(store.get('d')?.lastSeen).toBe(T);
  });
});

describe('device store: alarms and recent alerts', () => {
  it('keeps the active alarm of each type, most severe then newest first, cleared by info of the same type', () => {
    const store = new DeviceStore();
    store.applyAlert(alert(1, 'battery', 'warning'), 100);
    store.applyAlert(alert(2, 'temp', 'warning'), 200);
    store.applyAlert(alert(3, 'door', 'critical'), 300);
    expect(store.get('d')?.alarms.map((a) => a.type)).toEqual(['door', 'temp', 'battery']);
    // A later alert of a type replaces its alarm; order is by arrival, not by device clock.
    store.applyAlert(alert(4, 'battery', 'warning', T - HOUR), 400);
    expect(store.get('d')?.alarms.map((a) => `${a.type}@${a.at}`)).toEqual(['door@300', 'battery@400', 'temp@200']);
    store.applyAlert(alert(5, 'temp', 'info'), 500);
    const view = store.get('d')!;
    expect(view.alarms.map((a) => a.type)).toEqual(['door', 'battery']);
    expect(view.alarms[0]).toEqual({ type: 'door', severity: 'critical', message: 'door critical', ts: T + 3, seq: 3, at: 300 });
    expect(view.alerts.map((a) => a.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('keeps at most ALERT_HISTORY recent alerts, oldest first, and a bounded set of alarms', () => {
    const store = new DeviceStore();
    for (let seq = 1; seq <= 40; seq += 1) store.applyAlert(alert(seq, `type-${seq}`, seq === 1 ? 'critical' : 'warning'), seq);
    const view = store.get('d')!;
    expect(view.alerts.map((a) => a.seq)).toEqual(Array.from({ length: ALERT_HISTORY }, (_, i) => 40 - ALERT_HISTORY + 1 + i));
    expect(view.alarms).toHaveLength(MAX_ACTIVE_ALARMS);
    // The critical one outranks the warnings that pushed older warnings out.
    expect(view.alarms[0]?.type).toBe('type-1');
    expect(view.alarms[1]?.type).toBe('type-40');
  });

  it('keeps at most ALERT_VIEW_MESSAGE_CHARS of a message in the view, cut visibly', () => {
    const store = new DeviceStore();
    store.applyAlert({ ...alert(1, 'long', 'warning'), message: 'x'.repeat(1024) }, 100);
    const kept = store.get('d')!.alarms[0]!.message;
    expect(kept).toHaveLength(ALERT_VIEW_MESSAGE_CHARS);
    expect(kept.endsWith('...')).toBe(true);
    store.applyAlert({ ...alert(2, 'short', 'warning'), message: 'y'.repeat(ALERT_VIEW_MESSAGE_CHARS) }, 100);
    expect(store.get('d')!.alarms[0]!.message).toBe('y'.repeat(ALERT_VIEW_MESSAGE_CHARS));
  });

  it('returns views the caller may change without changing the store', () => {
    const store = new DeviceStore();
    store.applyAlert(alert(1, 'battery', 'warning'), 100);
    store.get('d')!.alarms.pop();
    expect(store.get('d')!.alarms).toHaveLength(1);
  });
});

describe('device store: bounds', () => {
  it('refuses new devices past its bound instead of growing', () => {
    const store = new DeviceStore(2);
    store.applyStatus(status('online', T, 'a'), 1);
    store.applyStatus(status('online', T, 'b'), 1);
    expect(store.applyStatus(status('online', T, 'c'), 1)).toBe('limit');
    expect(store.refusal).toContain('maximum of 2 devices');
    expect(store.size).toBe(2);
  });
});
