import { afterEach, describe, expect, it, vi } from 'vitest';
import type { StatusMessage, TelemetryMessage } from '../../src/devices/schema.js';
import { EventThrottle, TelemetryThrottle } from '../../src/devices/limits.js';
import { DeviceStore } from '../../src/devices/store.js';
import { MAX_DEVICES } from '../../src/protocol.js';

const T = 1_796_182_012_369;
const status = (device: string, state: 'online' | 'offline', ts: number | undefined = T): StatusMessage => ({ kind: 'status', device, state, ts });
const telemetry = (device: string, seq: number): TelemetryMessage => ({ kind: 'telemetry', device, seq, ts: T + seq, metrics: { t: seq } });

afterEach(() => {
  vi.useRealTimers();
});

describe('admission of new devices', () => {
  it('admits a burst, then new ids at the rate; known devices are never refused', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { admitRate: 2, admitBurst: 3, now: () => now });
    const results = Array.from({ length: 5 }, (_, i) => store.applyStatus(status(`n${i}`, 'online'), now));
    expect(results).toEqual(['changed', 'changed', 'changed', 'admission', 'admission']);
    expect(store.refusal).toContain('n4');
    // Known devices go on as before.
    expect(store.applyTelemetry(telemetry('n0', 1), now)).toBe('changed');
    now += 500; // one more token at 2/s
    expect(store.applyTelemetry(telemetry('n5', 1), now)).toBe('changed');
    expect(store.applyTelemetry(telemetry('n6', 1), now)).toBe('admission');
    expect(store.size).toBe(4);
  });

  it('exempts retained messages: a restart takes in the whole fleet', () => {
    const now = 1_000_000;
    const store = new DeviceStore(1_000, { admitRate: 1, admitBurst: 1, now: () => now });
    for (let i = 0; i < 500; i += 1) expect(store.applyStatus(status(`r${i}`, 'online'), now, true)).toBe('changed');
    expect(store.size).toBe(500);
  });
});

describe('forgetting devices', () => {
  it('forgets a device offline longer than the limit, measured on the service clock, and tells listeners', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { forgetAfterMs: 60_000, now: () => now });
    const told: string[] = [];
    store.subscribe((id, change) => told.push(`${id}:${change}`));
    store.applyStatus(status('down', 'online'), now);
    // Its own clock says it went offline a year ago: irrelevant, we learned it now.
    store.applyStatus(status('down', 'offline', T - 365 * 86_400_000), now);
    store.applyTelemetry(telemetry('mute', 1), now); // never said its state
    store.applyStatus(status('up', 'online'), now + 1); // heard a moment later
    now += 59_999;
    expect(store.sweep(now)).toBe(0);
    now += 1;
    expect(store.sweep(now)).toBe(2);
    expect([store.has('up'), store.has('down'), store.has('mute')]).toEqual([true, false, false]);
    expect(told.filter((t) => t.endsWith('forgotten')).sort()).toEqual(['down:forgotten', 'mute:forgotten']);
    expect(store.size).toBe(1);
    expect(store.online).toBe(1);
  });

  it('measures a restored device (a new ingest holder seeded from the shared log) from when it was last seen, not from the restore', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { forgetAfterMs: 60_000, now: () => now });
    const head = { state: 'offline' as const, stateTs: null, telemetry: null, alarms: [], alerts: [] };
    store.restore({ id: 'silent', ...head, lastSeen: now - 50_000 });
    store.restore({ id: 'recent', ...head, lastSeen: now - 1_000 });
    store.restore({ id: 'never', ...head, lastSeen: null });
    now += 10_000;
    expect(store.sweep(now)).toBe(1);
    expect([store.has('silent'), store.has('recent'), store.has('never')]).toEqual([false, true, true]);
  });

  it('measures retained offline history from when it was learned', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { forgetAfterMs: 60_000, now: () => now });
    store.applyStatus(status('old', 'offline', undefined), now, true);
    now += 30_000;
    expect(store.sweep(now)).toBe(0);
    now += 30_000;
    expect(store.sweep(now)).toBe(1);
  });

  it('forgets a device that claims online but is unheard of for the limit (retained online, clean disconnect, no will)', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { forgetAfterMs: 60_000, now: () => now });
    store.applyStatus(status('claims', 'online'), now, true);
    store.applyStatus(status('live', 'online'), now);
    store.applyStatus(status('talks', 'online'), now);
    expect(store.online).toBe(3);
    now += 59_999;
    store.applyTelemetry(telemetry('talks', 1), now);
    expect(store.sweep(now)).toBe(0);
    now += 1;
    expect(store.sweep(now)).toBe(2);
    expect([store.has('claims'), store.has('live'), store.has('talks')]).toEqual([false, false, true]);
    expect(store.online).toBe(1);
    // A connected device that was only silent reappears with its next message, as a new device.
    expect(store.applyTelemetry(telemetry('live', 7), now)).toBe('changed');
    expect(store.get('live')).toMatchObject({ state: 'unknown', telemetry: { seq: 7 } });
  });

  it('a message of a forgettable device keeps it', () => {
    let now = 1_000_000;
    const store = new DeviceStore(100, { forgetAfterMs: 60_000, now: () => now });
    store.applyStatus(status('d', 'offline'), now);
    now += 50_000;
    store.applyTelemetry(telemetry('d', 1), now);
    now += 50_000;
    expect(store.sweep(now)).toBe(0);
  });

  it('never forgets when the limit is 0', () => {
    const store = new DeviceStore(100, { forgetAfterMs: 0 });
    store.applyStatus(status('d', 'offline'), 0);
    expect(store.sweep(Number.MAX_SAFE_INTEGER)).toBe(0);
    expect(store.has('d')).toBe(true);
  });

  it(`sweeps ${MAX_DEVICES} devices in bounded turns, each well under 10 ms`, () => {
    let now = 1_000_000;
    const store = new DeviceStore(MAX_DEVICES, { forgetAfterMs: 1_000, now: () => now });
    for (let i = 0; i < MAX_DEVICES; i += 1) store.applyStatus(status(`d${i}`, 'offline'), now, true);
    now += 1_000;
    let forgotten = 0;
    let turns = 0;
    let longest = 0;
    while (store.size > 0 && turns < 1_000) {
      const started = performance.now();
      forgotten += store.sweep(now);
      longest = Math.max(longest, performance.now() - started);
      turns += 1;
    }
    expect(forgotten).toBe(MAX_DEVICES);
    expect(turns).toBeGreaterThan(10);
    // Generous sanity bound (measured: about 1–3 ms a turn); the point is bounded turns.
    expect(longest).toBeLessThan(50);
  });
});

describe('per-device telemetry throttle', () => {
  it('passes a burst, then conflates: the newest value goes out once the budget allows, on one shared timer', () => {
    vi.useFakeTimers();
    let now = 0;
    const flushed: string[] = [];
    let throttled = 0;
    const throttle = new TelemetryThrottle({
      rate: 10,
      burst: 2,
      flush: (d) => flushed.push(d),
      onThrottled: () => (throttled += 1),
      now: () => now,
    });
    expect([throttle.admit('a'), throttle.admit('a'), throttle.admit('a'), throttle.admit('a')]).toEqual([true, true, false, false]);
    expect(throttle.admit('b')).toBe(true);
    expect(throttled).toBe(2);
    expect(throttle.heldCount).toBe(1);
    now += 100;
    vi.advanceTimersByTime(100);
    expect(flushed).toEqual(['a']);
    expect(throttle.heldCount).toBe(0);
    // Held again: one flush per budget, however many messages came in between.
    for (let i = 0; i < 1_000; i += 1) throttle.admit('a');
    now += 100;
    vi.advanceTimersByTime(100);
    expect(flushed).toEqual(['a', 'a']);
    expect(throttled).toBe(1_002);
    expect(vi.getTimerCount()).toBe(0);
    throttle.stop();
  });

  it('rate 0 is no limit', () => {
    const throttle = new TelemetryThrottle({ rate: 0, burst: 1, flush: () => {}, onThrottled: () => {} });
    for (let i = 0; i < 1_000; i += 1) expect(throttle.admit('a')).toBe(true);
  });
});

describe('per-device alert and status throttle', () => {
  const make = (rate: number, burst: number) => {
    let now = 0;
    const flushed: string[] = [];
    let throttled = 0;
    const throttle = new EventThrottle<string>({
      rate,
      burst,
      flush: (d, v) => flushed.push(`${d}:${v}`),
      onThrottled: () => (throttled += 1),
      now: () => now,
    });
    const ev = (key: string, rank: number, value = key) => ({ key, rank, value });
    return { throttle, flushed, ev, throttled: () => throttled, advance: (ms: number) => { now += ms; vi.advanceTimersByTime(ms); } };
  };

  it('over the budget conflates per key, publishes the newest of each in arrival order, never hides a severity', () => {
    vi.useFakeTimers();
    const { throttle, flushed, ev, throttled, advance } = make(10, 1);
    expect(throttle.admit('a', ev('status', 3, 'online'))).toBe(true);
    // Over budget: a flood of flips and of one alert type at three severities.
    for (let i = 0; i < 500; i += 1) {
      expect(throttle.admit('a', ev('status', 3, i % 2 ? 'online' : 'offline'))).toBe(false);
      throttle.admit('a', ev('info:door', 0, `info${i}`));
    }
    throttle.admit('a', ev('critical:door', 2, 'critical1'));
    throttle.admit('a', ev('info:door', 0, 'info-last'));
    expect(throttled()).toBe(1_002);
    expect(throttle.heldCount).toBe(3);
    // Another device is not held back by this one.
    expect(throttle.admit('b', ev('status', 3, 'online'))).toBe(true);
    for (let i = 0; i < 3; i += 1) advance(100);
    expect(flushed).toEqual(['a:online', 'a:critical1', 'a:info-last']);
    expect(throttle.heldCount).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('holds a bounded number of keys per device: the least severe, oldest gives way', () => {
    vi.useFakeTimers();
    const { throttle, flushed, ev, advance } = make(1_000, 1);
    throttle.admit('a', ev('x', 0));
    throttle.admit('a', ev('critical:door', 2));
    for (let i = 0; i < 100; i += 1) throttle.admit('a', ev(`info:t${i}`, 0));
    expect(throttle.heldCount).toBe(16);
    for (let i = 0; i < 20; i += 1) advance(20);
    expect(flushed[0]).toBe('a:critical:door');
    expect(flushed.slice(1)).toEqual(Array.from({ length: 15 }, (_, i) => `a:info:t${85 + i}`));
    throttle.stop();
  });

  it('rate 0 is no limit', () => {
    const { throttle, ev } = make(0, 1);
    for (let i = 0; i < 1_000; i += 1) expect(throttle.admit('a', ev('status', 3))).toBe(true);
  });
});

describe('device limit configuration', () => {
  it('has the documented defaults', async () => {
    const { loadConfig } = await import('../../src/config.js');
    expect(loadConfig({ AUTH: 'off' }).devices).toEqual({
      forgetAfterMs: 7 * 24 * 3_600_000,
      admitRate: 100,
      admitBurst: 1_000,
      maxMsgRate: 50,
      msgBurst: 200,
      maxEventRate: 20,
      eventBurst: 100,
    });
    expect(loadConfig({ AUTH: 'off', DEVICE_FORGET_AFTER_S: '0', DEVICE_ADMIT_RATE: '0', DEVICE_MAX_MSG_RATE: '0.5' }).devices).toMatchObject({
      forgetAfterMs: 0, admitRate: 0, maxMsgRate: 0.5,
    });
  });

  it('names each bad variable with its range', async () => {
    const { loadConfig } = await import('../../src/config.js');
    let problems: readonly string[] = [];
    try {
      loadConfig({ AUTH: 'off', DEVICE_FORGET_AFTER_S: '-1', DEVICE_ADMIT_RATE: 'fast', DEVICE_ADMIT_BURST: '0', DEVICE_MAX_MSG_RATE: '1e9', DEVICE_MSG_BURST: '1.5', DEVICE_MAX_EVENT_RATE: '-1', DEVICE_EVENT_BURST: '0' });
    } catch (err) {
      problems = (err as { problems: readonly string[] }).problems;
    }
    expect(problems).toEqual([
      'DEVICE_FORGET_AFTER_S="-1" is invalid: expected an integer from 0 to 31536000',
      'DEVICE_ADMIT_RATE="fast" is invalid: expected a number from 0 to 100000',
      'DEVICE_ADMIT_BURST="0" is invalid: expected an integer from 1 to 1000000',
      'DEVICE_MAX_MSG_RATE="1e9" is invalid: expected a number from 0 to 100000',
      'DEVICE_MSG_BURST="1.5" is invalid: expected an integer from 1 to 1000000',
      'DEVICE_MAX_EVENT_RATE="-1" is invalid: expected a number from 0 to 100000',
      'DEVICE_EVENT_BURST="0" is invalid: expected an integer from 1 to 1000000',
    ]);
  });
});
