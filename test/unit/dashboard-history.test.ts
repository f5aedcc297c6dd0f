// The page's history joining (web/history-model.js, and the store's use of it) is plain browser
// JavaScript without DOM use: its rules are checked here; the e2e test checks the page as a whole.
import { describe, expect, it } from 'vitest';
import {
  ChartSeries, coveredFrom, isAfter, parseEventId, parseRoute, Pending, reaches, refill, routeOf, tickDigits, toHistory, windowFor,
  type History,
} from '../../web/history-model.js';
import { Store } from '../../web/model.js';
import { Ring } from '../../web/ring.js';

const T = 1_790_000_000_000;
const pointsOf = (ring: Ring) =>
  Array.from({ length: ring.length }, (_, k) => [ring.ts[(ring.start + k) % ring.ts.length]!, ring.values[(ring.start + k) % ring.ts.length]!]);

function answer(over: Partial<History> = {}): History {
  return { device: 'd', from: T - 300_000, to: T, until: 'e1-10', oldest: T - 600_000, downsampled: false, metrics: {}, status: [], alerts: [], commands: [], ...over };
}

describe('joining history with the stream', () => {
  it('orders event ids by position within an epoch; another epoch is never in an answer', () => {
    expect(parseEventId('k3x9-42')).toEqual({ epoch: 'k3x9', position: 42 });
    expect(parseEventId('a-b-7')).toEqual({ epoch: 'a-b', position: 7 });
    for (const bad of ['42', '-4', 'e-', 'e-1.5', 'not-an-id', null]) expect(parseEventId(bad), String(bad)).toBeNull();
    expect(isAfter('e1-11', 'e1-10')).toBe(true);
    expect(isAfter('e1-10', 'e1-10')).toBe(false);
    expect(isAfter('e1-9', 'e1-10')).toBe(false);
    expect(isAfter('e2-1', 'e1-10')).toBe(true);
    expect(isAfter('e1-1', null)).toBe(true);
    // An answer reaches the page's position when it covers at least as far.
    expect(reaches('e1-10', 'e1-10')).toBe(true);
    expect(reaches('e1-9', 'e1-10')).toBe(false);
    expect(reaches('e0-99', 'e1-10')).toBe(false);
    expect(reaches(null, null)).toBe(true);
  });

  it('keeps the live readings of a device awaited, and gives back only those after the answer', () => {
    const pending = new Pending();
    pending.add('d', { id: 'e1-1', ts: T, metrics: { x: 1 } });
    expect(pending.take('d', null), 'not awaited: nothing kept').toEqual([]);
    pending.begin('d');
    for (let i = 9; i <= 12; i += 1) pending.add('d', { id: `e1-${i}`, ts: T + i, metrics: { x: i } });
    expect(pending.take('d', 'e1-10').map((r) => r.id)).toEqual(['e1-11', 'e1-12']);
    expect(pending.awaiting('d')).toBe(false);
  });

  it('rebuilds a sparkline from the answer and what came after it: no point twice, no seam', () => {
    const ring = new Ring();
    // Live so far: the snapshot's reading and two after it, one of them also in the answer.
    for (const [ts, v] of [[T - 2_000, 5], [T - 1_000, 6], [T + 1_000, 7]] as const) ring.push(ts, v);
    const h = answer({ metrics: { x: { t: [T - 3_000, T - 2_000, T - 1_000], v: [4, 5, 6] } } });
    refill(ring, h.metrics['x'], coveredFrom(h), [{ ts: T + 1_000, value: 7 }]);
    expect(pointsOf(ring)).toEqual([[T - 3_000, 4], [T - 2_000, 5], [T - 1_000, 6], [T + 1_000, 7]]);
  });

  it('keeps what the page held from before the answer reaches, and breaks the line where neither knows', () => {
    const kept = new Ring();
    kept.push(T - 900_000, 1);
    kept.push(T - 250_000, 2);
    kept.gap(); // a reset
    // The answer covers from its window's start: the older point stays, the newer is replaced.
    const h = answer({ metrics: { x: { t: [T - 200_000], v: [3] } } });
    refill(kept, h.metrics['x'], coveredFrom(h), []);
    expect(pointsOf(kept)).toEqual([[T - 900_000, 1], [T - 200_000, 3]]);
    // The log no longer reaches back to what the page held: a break between them.
    const away = new Ring();
    away.push(T - 900_000, 1);
    const late = answer({ oldest: T - 100_000, metrics: { x: { t: [T - 90_000], v: [3] } } });
    refill(away, late.metrics['x'], coveredFrom(late), []);
    const points = pointsOf(away);
    expect(points[0]).toEqual([T - 900_000, 1]);
    expect(Number.isNaN(points[1]![1])).toBe(true);
    expect(points[2]).toEqual([T - 90_000, 3]);
  });

  it('fills a card from its answer in the store, continuing with the readings that arrived meanwhile', () => {
    const store = new Store();
    store.applySnapshot({ devices: [{ id: 'd', state: 'online', stateTs: T, lastSeen: T, telemetry: { ts: T, seq: 5, metrics: { x: 5 } } }], mqtt: 'up' } as never);
    expect(store.devices.get('d')!.filled).toBe(false);
    store.pending.begin('d');
    store.applyTelemetry({ device: 'd', ts: T + 1_000, seq: 6, metrics: { x: 6 } }, 'e1-11');
    store.applyTelemetry({ device: 'd', ts: T + 2_000, seq: 7, metrics: { x: 7 } }, 'e1-12');
    // The answer covers up to e1-11: the first live reading is in it, the second is not.
    store.applyHistory(answer({ until: 'e1-11', metrics: { x: { t: [T - 1_000, T, T + 1_000], v: [4, 5, 6] }, y: { t: [T - 1_000], v: [9] } } }));
    const d = store.devices.get('d')!;
    expect(d.filled).toBe(true);
    expect(pointsOf(d.metrics.get('x')!.ring)).toEqual([[T - 1_000, 4], [T, 5], [T + 1_000, 6], [T + 2_000, 7]]);
    // A metric only the history knows gets its row too.
    expect(d.metrics.get('y')!.value).toBe(9);
    // A new snapshot asks again, and forgets readings kept for answers asked before it.
    store.applySnapshot({ devices: [{ id: 'd', state: 'online', stateTs: T, lastSeen: T, telemetry: null }], mqtt: 'up' } as never);
    expect(store.devices.get('d')!.filled).toBe(false);
    expect(store.pending.awaiting('d')).toBe(false);
  });

  it('checks an answer from the network, dropping series whose arrays do not match', () => {
    expect(toHistory(null)).toBeNull();
    expect(toHistory({ device: 'd', from: 1, to: 2 })).toBeNull();
    const h = toHistory({ device: 'd', from: 1, to: 2, until: 'e-1', oldest: 1, metrics: { a: { t: [1], v: [2] }, b: { t: [1, 2], v: [3] }, c: 'x' } });
    expect(h!.metrics).toEqual({ a: { t: [1], v: [2] } });
    expect(h!.status).toEqual([]);
  });
});

describe('the device view\'s model', () => {
  it('reads and writes its route, refusing what is not a device id', () => {
    expect(parseRoute('#/devices/sim-001')).toEqual({ device: 'sim-001', at: null });
    expect(parseRoute(`#/devices/sim-001?at=${T}`)).toEqual({ device: 'sim-001', at: T });
    for (const hash of ['', '#/', '#/devices/', '#/devices/a%2Fb', '#/devices/%E0', '#/devices/x?at=soon']) expect(parseRoute(hash), hash).toBeNull();
    expect(parseRoute(routeOf('pump_7', T + 0.4))).toEqual({ device: 'pump_7', at: T });
  });

  it('chooses the narrowest window that shows a moment', () => {
    expect(windowFor(null, T).key).toBe('5m');
    expect(windowFor(T - 60_000, T).key).toBe('5m');
    expect(windowFor(T - 10 * 60_000, T).key).toBe('15m');
    expect(windowFor(T - 3_600_000, T).key).toBe('all');
  });

  it('grows a chart series in time order and trims its left edge', () => {
    const s = new ChartSeries();
    s.fill({ t: [1, 2, 3], v: [10, 20, 30] });
    expect(s.add(4, 40)).toBe(true);
    expect(s.add(2, 99), 'older than the newest point').toBe(false);
    s.trim(3);
    expect([s.t, s.v]).toEqual([[3, 4], [30, 40]]);
  });

  it('labels value ticks with the decimals their spacing needs', () => {
    expect(tickDigits([70, 80, 90])).toBe(0);
    expect(tickDigits([75.8, 76, 76.2])).toBe(1);
    expect(tickDigits([0.25, 0.5, 0.75])).toBe(2);
    expect(tickDigits([5])).toBe(0);
  });
});
