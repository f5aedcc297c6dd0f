import { describe, expect, it } from 'vitest';
import { exponentialDelayMs, reconnectDelayMs, seededRandom } from '../../src/simulator/random.js';
import { LIMITS, Sensors, type Metrics } from '../../src/simulator/sensors.js';

function run(seed: number, steps: number, dtMs: number): Metrics[] {
  const sensors = new Sensors(seededRandom(seed));
  return Array.from({ length: steps }, () => sensors.step(dtMs));
}

const decimals = (n: number) => (String(n).split('.')[1] ?? '').length;

describe('simulated sensors', () => {
  it.each([100, 1_000, 60_000])('keep every metric within its physical range over many steps of %i ms', (dtMs) => {
    const names = ['temperature', 'humidity', 'battery', 'rssi'] as const;
    for (const seed of [1, 2, 3, 4, 5]) {
      const readings = run(seed, 20_000, dtMs);
      for (const name of names) {
        const values = readings.map((m) => m[name]);
        expect(values.every(Number.isFinite)).toBe(true);
        expect(Math.min(...values)).toBeGreaterThanOrEqual(LIMITS[name].min);
        expect(Math.max(...values)).toBeLessThanOrEqual(LIMITS[name].max);
      }
      // The walks stay inside on their own; the clamp is a backstop, not what shapes the data.
      const pinned = readings.filter((m) =>
        m.temperature <= LIMITS.temperature.min || m.temperature >= LIMITS.temperature.max
        || m.humidity <= LIMITS.humidity.min || m.humidity >= LIMITS.humidity.max
        || m.rssi <= LIMITS.rssi.min || m.rssi >= LIMITS.rssi.max);
      expect(pinned.length).toBeLessThan(readings.length / 200);
    }
  });

  it('rounds temperature to 2 decimals, humidity and battery to 1, rssi to whole dBm', () => {
    for (const m of run(7, 2_000, 1_000)) {
      expect(decimals(m.temperature)).toBeLessThanOrEqual(2);
      expect(decimals(m.humidity)).toBeLessThanOrEqual(1);
      expect(decimals(m.battery)).toBeLessThanOrEqual(1);
      expect(Number.isInteger(m.rssi)).toBe(true);
    }
  });

  it('move gradually from one reading to the next instead of jumping around', () => {
    const readings = run(11, 5_000, 1_000);
    for (let i = 1; i < readings.length; i++) {
      expect(Math.abs(readings[i]!.temperature - readings[i - 1]!.temperature)).toBeLessThan(3);
      expect(Math.abs(readings[i]!.battery - readings[i - 1]!.battery)).toBeLessThan(1);
    }
  });

  it('drain the battery slowly and put it on charge once it runs low', () => {
    const sensors = new Sensors(seededRandom(3), {
      baseTemperature: 22, baseHumidity: 50, baseRssi: -60,
      batteryStart: 30, drainPerMin: 0.5, chargePerMin: 5, chargeBelow: 10,
    });
    const battery = Array.from({ length: 6 * 3600 }, () => sensors.step(1_000).battery);
    const lowest = Math.min(...battery);
    const lowAt = battery.indexOf(lowest);
    expect(battery[60]!).toBeLessThan(30); // draining after a minute
    expect(battery[60]!).toBeGreaterThan(29); // ...but only by about half a percent
    expect(lowest).toBeLessThan(11);
    expect(lowest).toBeGreaterThan(5);
    expect(Math.max(...battery.slice(lowAt))).toBeGreaterThan(95); // recharged
  });

  it('drift around a per-device base temperature with occasional hot excursions', () => {
    const sensors = new Sensors(seededRandom(5));
    const base = sensors.profile.baseTemperature;
    const temps = Array.from({ length: 12 * 3600 }, () => sensors.step(1_000).temperature);
    const sorted = [...temps].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    expect(Math.abs(median - base)).toBeLessThan(2);
    expect(sorted.at(-1)!).toBeGreaterThan(base + 8); // at least one excursion in twelve hours
  });

  it('give the same readings for the same seed and different ones for another', () => {
    expect(run(42, 100, 1_000)).toEqual(run(42, 100, 1_000));
    expect(run(42, 100, 1_000)).not.toEqual(run(43, 100, 1_000));
  });
});

describe('timing helpers', () => {
  it('reconnect 2 to 5 s after a loss, then back off to at most a minute', () => {
    const random = seededRandom(9);
    for (let i = 0; i < 1_000; i++) {
      const first = reconnectDelayMs(random, 0);
      expect(first).toBeGreaterThanOrEqual(2_000);
      expect(first).toBeLessThanOrEqual(5_000);
      expect(reconnectDelayMs(random, 3)).toBeGreaterThanOrEqual(16_000);
      expect(reconnectDelayMs(random, 50)).toBeLessThanOrEqual(60_000);
    }
  });

  it('space injected faults so their average rate matches the configured rate per minute', () => {
    const random = seededRandom(10);
    const n = 20_000;
    let total = 0;
    for (let i = 0; i < n; i++) total += exponentialDelayMs(random, 2);
    expect(total / n).toBeGreaterThan(28_000);
    expect(total / n).toBeLessThan(32_000);
  });
});
