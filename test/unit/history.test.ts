import { describe, expect, it } from 'vitest';
import { MAX_HISTORY_WINDOW_MS, buildHistories, buildHistory, downsample, type HistoryQuery } from '../../src/devices/history.js';
import { MAX_BULK_HISTORY_DEVICES, parseBulkDevices, parseHistoryQuery } from '../../src/http/history.js';
import { HttpError } from '../../src/http/errors.js';
import { encodeJsonEvent } from '../../src/sse/frame.js';
import { TYPE_BIT, type HubEvent } from '../../src/sse/event.js';

let seq = 0;
function event(name: HubEvent['name'], device: string, data: Record<string, unknown>, deviceTs?: number): HubEvent {
  seq += 1;
  return { seq, name, device, bit: TYPE_BIT.telemetry, frame: encodeJsonEvent(name, `e1-${seq}`, data), deviceTs };
}
const reading = (device: string, ts: number, metrics: Record<string, number>) => event('telemetry', device, { device, ts, seq: ts, metrics }, ts);
/** What `fn` throws (undefined when it returns). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
const query = (over: Partial<HistoryQuery> = {}): HistoryQuery => ({ device: 'pump-1', from: 0, to: 10_000, metrics: undefined, points: 600, ...over });

describe('device history', () => {
  it('gives the device\'s readings per metric in time order, with its status changes, alerts and commands', () => {
    const entries = [
      event('status', 'pump-1', { device: 'pump-1', state: 'online', ts: 100 }, 100),
      reading('pump-1', 200, { bar: 1, rpm: 10 }),
      reading('pump-2', 250, { bar: 99 }),
      event('alert', 'pump-1', { device: 'pump-1', type: 'pressure', severity: 'warning', message: 'high', ts: 300, seq: 1, at: 301 }, 300),
      reading('pump-1', 400, { bar: 2 }),
      event('command', 'pump-1', { device: 'pump-1', id: 'c1', name: 'ping', status: 'acked' }),
      // A device whose clock went back: still charted, in time order.
      reading('pump-1', 150, { bar: 0.5 }),
    ];
    const history = buildHistory(query(), entries, 'e1-7');
    expect(history.until).toBe('e1-7');
    expect(history.oldest).toBe(100);
    expect(history.metrics).toEqual({ bar: { t: [150, 200, 400], v: [0.5, 1, 2] }, rpm: { t: [200], v: [10] } });
    expect(history.downsampled).toBe(false);
    expect(history.status).toEqual([{ ts: 100, state: 'online' }]);
    expect(history.alerts).toEqual([expect.objectContaining({ type: 'pressure', severity: 'warning', ts: 300 })]);
    expect(history.commands).toEqual([expect.objectContaining({ id: 'c1', status: 'acked' })]);
    // Only what was asked: one metric, one window.
    const narrow = buildHistory(query({ metrics: new Set(['bar']), from: 180, to: 350 }), entries, 'e1-7');
    expect(narrow.metrics).toEqual({ bar: { t: [200], v: [1] } });
    expect(narrow.alerts).toHaveLength(1);
    expect(narrow.status).toEqual([]);
  });

  it('thins a long series to the points asked for, keeping each bucket\'s lowest and highest reading', () => {
    const t = Array.from({ length: 10_000 }, (_, i) => i);
    const v = t.map((i) => (i === 4_321 ? 1_000 : i === 7_777 ? -1_000 : Math.sin(i / 100)));
    const thin = downsample({ t, v }, 0, 10_000, 200);
    expect(thin.t.length).toBeLessThanOrEqual(200);
    expect(thin.t.length).toBeGreaterThan(150);
    // The spikes survive, at their own time.
    expect(thin.v).toContain(1_000);
    expect(thin.t[thin.v.indexOf(1_000)]).toBe(4_321);
    expect(thin.v).toContain(-1_000);
    for (let i = 1; i < thin.t.length; i += 1) expect(thin.t[i]!).toBeGreaterThan(thin.t[i - 1]!);
    // Fewer readings than points: as they are.
    expect(downsample({ t: [1, 2], v: [3, 4] }, 0, 10, 200)).toEqual({ t: [1, 2], v: [3, 4] });
    const history = buildHistory(query({ points: 100 }), t.map((i) => reading('pump-1', i, { x: v[i]! })), null);
    expect(history.downsampled).toBe(true);
    expect(history.metrics['x']!.t.length).toBeLessThanOrEqual(100);
  });

  it('reads since, metrics and points from the query string, refusing what it cannot use', () => {
    const now = 1_800_000_000_000;
    const q = (s: string) => parseHistoryQuery('pump-1', new URLSearchParams(s), now);
    expect(q('')).toEqual({ device: 'pump-1', from: now - 15 * 60_000, to: now, metrics: undefined, points: 600 });
    expect(q(`since=${now - 60_000}&metrics=bar,rpm&points=50`)).toEqual({ device: 'pump-1', from: now - 60_000, to: now, metrics: new Set(['bar', 'rpm']), points: 50 });
    expect(q(`since=${new Date(now - 5_000).toISOString()}`).from).toBe(now - 5_000);
    // Further back than the bound is the bound.
    expect(q('since=1000000000000').from).toBe(now - MAX_HISTORY_WINDOW_MS);
    for (const [s, message] of [
      ['since=yesterday', /since must be epoch milliseconds/],
      [`since=${now + 1}`, /since must be in the past/],
      ['metrics=a/b', /metrics must be 1 to 16 metric names.*got "a\/b"/],
      [`metrics=${Array.from({ length: 17 }, (_, i) => `m${i}`).join(',')}`, /metrics must be 1 to 16/],
      ['points=1', /points must be a whole number from 2 to 2000/],
      ['points=1e3', /points must be a whole number/],
    ] as const) {
      const caught = thrown(() => q(s));
      expect(caught, s).toBeInstanceOf(HttpError);
      expect((caught as HttpError).status).toBe(400);
      expect((caught as Error).message).toMatch(message);
    }
  });

  it('answers many devices from one pass over the log, each as if asked alone, in the order asked', () => {
    const entries = [
      reading('pump-1', 100, { bar: 1 }),
      reading('pump-2', 110, { bar: 5 }),
      event('alert', 'pump-2', { device: 'pump-2', type: 'pressure', severity: 'critical', message: 'x', ts: 120, seq: 1, at: 121 }, 120),
      reading('pump-1', 130, { bar: 2 }),
      reading('pump-3', 140, { bar: 9 }),
    ];
    let passes = 0;
    const counted: Iterable<(typeof entries)[number]> = {
      *[Symbol.iterator]() {
        passes += 1;
        yield* entries;
      },
    };
    const asked = ['pump-2', 'pump-1', 'pump-9'].map((device) => query({ device }));
    const answers = buildHistories(asked, counted, 'e1-99');
    expect(passes).toBe(1);
    expect(answers.map((a) => a.device)).toEqual(['pump-2', 'pump-1', 'pump-9']);
    for (const [i, answer] of answers.entries()) expect(answer).toEqual(buildHistory(asked[i]!, entries, 'e1-99'));
    expect(answers[1]!.metrics).toEqual({ bar: { t: [100, 130], v: [1, 2] } });
    expect(answers[0]!.alerts).toHaveLength(1);
    // A device the log never held: an empty answer with no oldest entry (the route leaves it out).
    expect(answers[2]!.oldest).toBeNull();
  });

  it('reads the devices of a bulk question, refusing an empty, oversized or malformed list', () => {
    const d = (s: string) => parseBulkDevices(new URLSearchParams(s));
    expect(d('devices=pump-2,pump-1,pump-2')).toEqual(['pump-2', 'pump-1']);
    expect(d(`devices=${Array.from({ length: MAX_BULK_HISTORY_DEVICES }, (_, i) => `d${i}`).join(',')}`)).toHaveLength(MAX_BULK_HISTORY_DEVICES);
    for (const [s, message] of [
      ['', /devices must be 1 to 100 device ids/],
      ['devices=', /devices must be 1 to 100/],
      ['devices=a,b/c', /got "b\/c"/],
      [`devices=${Array.from({ length: MAX_BULK_HISTORY_DEVICES + 1 }, (_, i) => `d${i}`).join(',')}`, /devices must be 1 to 100/],
    ] as const) {
      const caught = thrown(() => d(s));
      expect(caught, s).toBeInstanceOf(HttpError);
      expect((caught as HttpError).status).toBe(400);
      expect((caught as HttpError).code).toBe('bad_query');
      expect((caught as Error).message).toMatch(message);
    }
  });
});
