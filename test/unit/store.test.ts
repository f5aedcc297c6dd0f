import { describe, expect, it } from 'vitest';
import { DeviceStore } from '../../src/devices/store.js';

const telemetry = (seq: number, ts: number) => ({ kind: 'telemetry' as const, device: 'd', seq, ts, metrics: { t: seq } });

describe('device store', () => {
  it('drops a telemetry message delivered twice (QoS 1 redelivery)', () => {
    const store = new DeviceStore();
    expect(store.applyTelemetry(telemetry(1, 1000), 1)).toBe('changed');
    expect(store.applyTelemetry(telemetry(2, 2000), 2)).toBe('changed');
    expect(store.applyTelemetry(telemetry(2, 2000), 3)).toBe('duplicate');
    expect(store.applyTelemetry(telemetry(1, 1000), 3)).toBe('duplicate');
    expect(store.get('d')?.telemetry?.seq).toBe(2);
  });

  it('accepts a device that restarted its seq, because its clock moved on', () => {
    const store = new DeviceStore();
    store.applyTelemetry(telemetry(500, 1000), 1);
    expect(store.applyTelemetry(telemetry(1, 5000), 2)).toBe('changed');
  });

  it('counts devices online and ignores a retained status seen again', () => {
    const store = new DeviceStore();
    expect(store.applyStatus({ kind: 'status', device: 'd', state: 'online', ts: 10 }, 1)).toBe('changed');
    expect(store.applyStatus({ kind: 'status', device: 'd', state: 'online', ts: 10 }, 2)).toBe('unchanged');
    expect(store.online).toBe(1);
    expect(store.applyStatus({ kind: 'status', device: 'd', state: 'offline', ts: undefined }, 3)).toBe('changed');
    expect(store.online).toBe(0);
    expect(store.get('d')).toMatchObject({ state: 'offline', stateTs: 3 });
  });

  it('moves its version whenever last seen moves, so a cached snapshot is never stale', () => {
    const store = new DeviceStore();
    store.applyStatus({ kind: 'status', device: 'd', state: 'online', ts: 10 }, 1);
    let version = store.version;
    expect(store.applyStatus({ kind: 'status', device: 'd', state: 'online', ts: 10 }, 2)).toBe('unchanged');
    expect(store.version).toBeGreaterThan(version);
    version = store.version;
    store.touch('d', 3);
    expect(store.version).toBeGreaterThan(version);
    expect(store.get('d')?.lastSeen).toBe(3);
  });

  it('takes a retained status as history: last seen moves to its ts at most, never to now', () => {
    const store = new DeviceStore();
    // A device gone for days: its retained will (no ts) arrives when the service subscribes.
    store.applyStatus({ kind: 'status', device: 'gone', state: 'offline', ts: undefined }, 5_000, true);
    expect(store.get('gone')).toMatchObject({ state: 'offline', stateTs: null, lastSeen: null });
    store.applyStatus({ kind: 'status', device: 'up', state: 'online', ts: 1_000 }, 5_000, true);
    expect(store.get('up')).toMatchObject({ state: 'online', stateTs: 1_000, lastSeen: 1_000 });
    // The same status live (not retained) is a sign of life.
    store.applyStatus({ kind: 'status', device: 'up', state: 'online', ts: 1_000 }, 6_000);
    expect(store.get('up')?.lastSeen).toBe(6_000);
  });

  it('refuses new devices past its bound instead of growing', () => {
    const store = new DeviceStore(2);
    store.applyStatus({ kind: 'status', device: 'a', state: 'online', ts: 1 }, 1);
    store.applyStatus({ kind: 'status', device: 'b', state: 'online', ts: 1 }, 1);
    expect(store.applyStatus({ kind: 'status', device: 'c', state: 'online', ts: 1 }, 1)).toBe('limit');
    expect(store.size).toBe(2);
  });
});
