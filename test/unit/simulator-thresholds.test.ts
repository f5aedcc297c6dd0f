import { describe, expect, it } from 'vitest';
import { WORD } from '../../src/protocol.js';
import { DEFAULT_RULES, nextLevel, ThresholdMonitor, type ThresholdEvent } from '../../src/simulator/thresholds.js';
import type { Metrics } from '../../src/simulator/sensors.js';

const normal: Metrics = { temperature: 22, humidity: 50, battery: 80, rssi: -60 };

function feed(values: Partial<Metrics>[]): ThresholdEvent[] {
  const monitor = new ThresholdMonitor();
  return values.flatMap((v) => monitor.update({ ...normal, ...v }));
}

describe('threshold alerts', () => {
  it('raise one warning when temperature crosses the warning limit, however long it stays there', () => {
    const events = feed([{ temperature: 30 }, { temperature: 35.5 }, { temperature: 36 }, { temperature: 34 }, { temperature: 38 }]);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'temperature-high', severity: 'warning' });
  });

  it('do not flap when a reading hovers around the limit', () => {
    const hovering = Array.from({ length: 100 }, (_, i) => ({ temperature: i % 2 === 0 ? 35.2 : 34.8 }));
    expect(feed(hovering)).toHaveLength(1);
  });

  it('clear only once the value is back past the exit limit, with an info event', () => {
    const events = feed([{ temperature: 36 }, { temperature: 33 }, { temperature: 32.1 }, { temperature: 31.9 }]);
    expect(events.map((e) => e.severity)).toEqual(['warning', 'info']);
    expect(events[1]!.message).toContain('back to normal');
  });

  it('escalate to critical and step back down through warning', () => {
    const events = feed([{ temperature: 36 }, { temperature: 46 }, { temperature: 43 }, { temperature: 41 }, { temperature: 31 }]);
    expect(events.map((e) => e.severity)).toEqual(['warning', 'critical', 'warning', 'info']);
  });

  it('jump straight to critical when a reading skips the warning band', () => {
    expect(feed([{ temperature: 50 }]).map((e) => e.severity)).toEqual(['critical']);
  });

  it('treat low battery as bad: warning below 20 %, critical below 10 %, clear above 25 %', () => {
    const events = feed([{ battery: 21 }, { battery: 19.9 }, { battery: 9.5 }, { battery: 14 }, { battery: 16 }, { battery: 24 }, { battery: 26 }]);
    expect(events.map((e) => [e.type, e.severity])).toEqual([
      ['battery-low', 'warning'], ['battery-low', 'critical'], ['battery-low', 'warning'], ['battery-low', 'info'],
    ]);
  });

  it('report nothing while every reading is normal', () => {
    expect(feed(Array.from({ length: 50 }, () => ({})))).toEqual([]);
  });

  it('never leave a level on the way up by the exit rule alone', () => {
    const rule = DEFAULT_RULES.find((r) => r.metric === 'temperature')!;
    expect(nextLevel(rule, 0, 33)).toBe(0); // between exit (32) and enter (35): stays normal
    expect(nextLevel(rule, 1, 33)).toBe(1); // ...and stays warning
    expect(nextLevel(rule, 2, 30)).toBe(0);
  });

  it('write event types the service accepts as words', () => {
    for (const rule of DEFAULT_RULES) expect(rule.type).toMatch(WORD);
  });
});
