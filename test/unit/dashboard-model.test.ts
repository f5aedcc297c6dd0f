// The dashboard's model (web/model.js, web/ring.js) is plain browser JavaScript without DOM use,
// so its rules are checked here directly; the e2e test checks the page as a whole.
import { describe, expect, it } from 'vitest';
import type { Severity } from '../../src/protocol.js';
import { COMMAND_PENDING_MS, MAX_ALERTS, Store } from '../../web/model.js';
import { Ring, sparklinePath } from '../../web/ring.js';

const T = 1_790_000_000_000;

function snapshot(store: Store, devices: unknown[]): void {
  store.applySnapshot({ devices, mqtt: 'up' } as never);
}

/** An AlertView as the service sends it; `at` is the service's receive time. */
function view(type: string, severity: Severity, seq: number, at: number, message = `${type} ${severity}`) {
  return { type, severity, message, ts: at - 50, seq, at };
}
function device(id: string, alarms: unknown[], alerts: unknown[]) {
  return { id, state: 'online', stateTs: T, lastSeen: T, telemetry: null, alarms, alerts };
}
const live = (device: string, a: ReturnType<typeof view>) => ({ device, ...a });
/** What the page would list: the feed (oldest first) and the active alarms, as short strings. */
const feedOf = (store: Store) => store.feed.map((a) => `${a.device}:${a.type}:${a.severity}:${a.seq}`);
const activeOf = (store: Store) => store.activeAlarms().map((a) => `${a.device}:${a.type}:${a.severity}`);

describe('dashboard model', () => {
  it('applies status changes in the order the server sent them, whatever clocks their ts come from', () => {
    const store = new Store();
    // `online` carries the device's clock (10 s ahead here); the last will gets the server's.
    store.applyStatus({ device: 'd', state: 'online', ts: T + 10_000 });
    store.applyStatus({ device: 'd', state: 'offline', ts: T });
    expect(store.devices.get('d')?.state).toBe('offline');
  });

  it('never shows a last-seen time in the future', () => {
    const store = new Store();
    const ahead = Date.now() + 60_000;
    store.applyTelemetry({ device: 'd', ts: ahead, seq: 1, metrics: { t: 1 } });
    expect(store.devices.get('d')?.lastSeen).toBeLessThanOrEqual(Date.now());
  });

  it('treats telemetry as a repeat by the server\'s rule: neither a newer seq nor a newer time', () => {
    const store = new Store();
    const d = store.device('d');
    expect(d.applyTelemetry(T, 5, { t: 1 })).toBe(true);
    expect(d.applyTelemetry(T, 5, { t: 1 })).toBe(false);
    expect(d.applyTelemetry(T - 1, 4, { t: 1 })).toBe(false);
    // A device that restarted: seq from 0, later clock.
    expect(d.applyTelemetry(T + 1_000, 0, { t: 2 })).toBe(true);
    // A clock that stepped back while seq kept counting: new, and the history starts over.
    expect(d.applyTelemetry(T, 1, { t: 3 })).toBe(true);
    expect(d.metrics.get('t')?.ring.length).toBe(1);
  });

  it('keeps sparkline history across a reset, with a break where updates were missed', () => {
    const store = new Store();
    for (let seq = 1; seq <= 3; seq += 1) store.applyTelemetry({ device: 'd', ts: T + seq * 1_000, seq, metrics: { t: seq } });
    store.applyReset();
    snapshot(store, [{ id: 'd', state: 'online', stateTs: T, lastSeen: T + 9_000, telemetry: { ts: T + 9_000, seq: 9, metrics: { t: 9 } } }]);
    store.applyTelemetry({ device: 'd', ts: T + 10_000, seq: 10, metrics: { t: 10 } });
    const ring = store.devices.get('d')?.metrics.get('t')?.ring as Ring;
    const path = sparklinePath(ring);
    expect(path.match(/M/g), path).toHaveLength(2);
    expect(path.match(/L/g), path).toHaveLength(3);
  });

  it('starts the history over when a snapshot is older than it (clocks moved)', () => {
    const store = new Store();
    store.applyTelemetry({ device: 'd', ts: T + 5_000, seq: 5, metrics: { t: 5 } });
    snapshot(store, [{ id: 'd', state: 'online', stateTs: T, lastSeen: T, telemetry: { ts: T, seq: 1, metrics: { t: 1 } } }]);
    expect(store.devices.get('d')?.metrics.get('t')?.ring.length).toBe(1);
  });

  it('spans the sparkline over the history there is, from 20 s up to 5 minutes', () => {
    const xs = (ring: Ring) => [...sparklinePath(ring).matchAll(/[ML](-?[\d.]+),/g)].map((m) => Number(m[1]));
    const minute = new Ring(100);
    for (let s = 0; s <= 60; s += 10) minute.push(T + s * 1_000, s);
    expect(xs(minute)[0], 'a minute of history starts at the left edge').toBe(0);
    expect(xs(minute).at(-1)).toBe(100);
    const seconds = new Ring(100);
    for (let s = 0; s <= 10; s += 5) seconds.push(T + s * 1_000, s);
    expect(xs(seconds)[0], '10 s of history over the 20 s minimum: from the middle').toBe(50);
    const long = new Ring(100);
    for (let m = 0; m <= 10; m += 1) long.push(T + m * 60_000, m);
    expect(xs(long)[0], 'only the last 5 of 10 minutes').toBe(0);
    expect(xs(long)).toHaveLength(6);
  });

  it('draws a lone point as a stub and nothing for an empty ring', () => {
    const ring = new Ring(4);
    expect(sparklinePath(ring)).toBe('');
    ring.push(T, 1);
    expect(sparklinePath(ring)).toMatch(/^M100\.0,12\.0 h-\d+$/);
    ring.gap();
    ring.gap();
    expect(ring.length, 'one marker per break').toBe(2);
  });

  it('shows the active alarms of a first snapshot, most severe first then newest, and its recent alerts in the feed', () => {
    const store = new Store();
    snapshot(store, [
      device('a', [view('battery-low', 'warning', 3, T + 3_000)], [
        view('temperature-high', 'warning', 1, T + 1_000),
        view('temperature-high', 'info', 2, T + 2_000, 'temperature 30 °C: back to normal'),
        view('battery-low', 'warning', 3, T + 3_000),
      ]),
      device('b', [view('temperature-high', 'critical', 2, T + 2_500), view('signal-weak', 'warning', 1, T + 4_000)], [
        view('signal-weak', 'warning', 1, T + 4_000),
        view('temperature-high', 'critical', 2, T + 2_500),
      ]),
      device('c', [], []),
    ]);
    expect(activeOf(store)).toEqual(['b:temperature-high:critical', 'b:signal-weak:warning', 'a:battery-low:warning']);
    expect(store.devices.get('b')?.sortedAlarms().map((a) => a.type)).toEqual(['temperature-high', 'signal-weak']);
    expect(store.devices.get('c')?.alarms.size).toBe(0);
    // Across devices, in the order the service received them (`at`), not per device.
    expect(feedOf(store)).toEqual([
      'a:temperature-high:warning:1', 'a:temperature-high:info:2', 'b:temperature-high:critical:2', 'a:battery-low:warning:3', 'b:signal-weak:warning:1',
    ]);
    expect(store.feedRebuild, 'the feed is drawn from the snapshot').toBe(true);
    expect(store.alarmsDirty).toBe(true);
  });

  it('has nothing to list when a snapshot carries no alarms and no alerts', () => {
    const store = new Store();
    snapshot(store, [device('a', [], []), { id: 'b', state: 'online', stateTs: T, lastSeen: T, telemetry: null }]);
    expect(store.feed).toEqual([]);
    expect(store.activeAlarms()).toEqual([]);
    expect(store.feedRebuild).toBe(false);
  });

  it('never shows an alert twice: a live event the snapshot carried, a replay overlap, a redelivery', () => {
    const store = new Store();
    const w = view('battery-low', 'warning', 7, T + 7_000);
    snapshot(store, [device('a', [w], [w])]);
    store.applyAlert(live('a', w)); // the stream's copy of what the snapshot already held
    store.applyAlert(live('a', view('temperature-high', 'critical', 8, T + 8_000)));
    store.applyAlert(live('a', view('temperature-high', 'critical', 8, T + 8_000))); // replay overlap
    expect(feedOf(store)).toEqual(['a:battery-low:warning:7', 'a:temperature-high:critical:8']);
    // A device that restarted counts from 1 again and may repeat its (seq, ts): the service's stamp tells them apart.
    const before = view('battery-low', 'warning', 1, T + 9_000);
    const after = { ...before, at: T + 60_000 };
    store.applyAlert(live('a', before));
    store.applyAlert(live('a', after));
    expect(store.feed).toHaveLength(4);
  });

  it('rebuilds the feed and the alarms from the snapshot after a reset: the gap\'s alerts appear once, cleared alarms go', () => {
    const store = new Store();
    const seen1 = view('battery-low', 'warning', 1, T + 1_000);
    const seen2 = view('temperature-high', 'warning', 2, T + 2_000);
    snapshot(store, [device('a', [seen2, seen1], [seen1, seen2]), device('b', [], [])]);
    store.feedRebuild = false;
    store.applyAlert(live('b', view('signal-weak', 'warning', 1, T + 2_500)));
    store.newAlerts = []; // drawn
    // The stream broke; while away, a's temperature went critical then back to normal and b got a critical alert.
    store.applyReset();
    const gap = [
      view('temperature-high', 'critical', 3, T + 3_000),
      view('temperature-high', 'info', 4, T + 4_000, 'temperature 30 °C: back to normal'),
    ];
    const bCritical = view('door', 'critical', 2, T + 3_500);
    snapshot(store, [
      device('a', [seen1], [seen1, seen2, ...gap]),
      device('b', [bCritical, view('signal-weak', 'warning', 1, T + 2_500)], [view('signal-weak', 'warning', 1, T + 2_500), bCritical]),
    ]);
    expect(feedOf(store)).toEqual([
      'a:battery-low:warning:1', 'a:temperature-high:warning:2', 'b:signal-weak:warning:1',
      'a:temperature-high:critical:3', 'b:door:critical:2', 'a:temperature-high:info:4',
    ]);
    expect(store.feedRebuild, 'alerts went into the middle of the feed: draw it again').toBe(true);
    expect(store.newAlerts).toEqual([]);
    expect(activeOf(store)).toEqual(['b:door:critical', 'b:signal-weak:warning', 'a:battery-low:warning']);
    // The next live alert is new; the snapshot's again are not.
    store.applyAlert(live('a', gap[1]!));
    store.applyAlert(live('b', bCritical));
    expect(store.feed).toHaveLength(6);
  });

  it('keeps the feed to the newest MAX_ALERTS when a snapshot carries more', () => {
    const store = new Store();
    const devices = Array.from({ length: 30 }, (_, d) =>
      device(`d${d}`, [], Array.from({ length: 10 }, (_, i) => view('t', 'warning', i, T + i * 100 + d))));
    snapshot(store, devices);
    expect(store.feed).toHaveLength(MAX_ALERTS);
    const ats = store.feed.map((a) => a.at);
    expect(ats).toEqual([...ats].sort((x, y) => x - y));
    expect(ats[0], 'the oldest of the newest 100 of 300').toBe(T + 6 * 100 + 20);
  });

  it('clears a type\'s active alarm on an info alert of that type, and lists the info in the feed', () => {
    const store = new Store();
    snapshot(store, [device('a', [view('battery-low', 'warning', 1, T + 1_000)], [view('battery-low', 'warning', 1, T + 1_000)])]);
    store.applyAlert(live('a', view('temperature-high', 'critical', 2, T + 2_000)));
    store.applyAlert(live('a', view('temperature-high', 'warning', 3, T + 3_000, 'easing')));
    expect(activeOf(store), 'easing replaces the critical alarm of its type').toEqual(['a:temperature-high:warning', 'a:battery-low:warning']);
    store.alarmsDirty = false;
    store.applyAlert(live('a', view('temperature-high', 'info', 4, T + 4_000, 'temperature 30 °C: back to normal')));
    expect(activeOf(store)).toEqual(['a:battery-low:warning']);
    expect(store.alarmsDirty).toBe(true);
    expect(store.dirty.has('a'), 'the card chip is redrawn').toBe(true);
    expect(store.feed.at(-1)?.message).toBe('temperature 30 °C: back to normal');
    // An info of a type with no alarm changes nothing active.
    store.alarmsDirty = false;
    store.applyAlert(live('a', view('signal-weak', 'info', 5, T + 5_000)));
    expect(activeOf(store)).toEqual(['a:battery-low:warning']);
    expect(store.alarmsDirty).toBe(false);
  });

  it('ignores alerts that are not alerts: an unknown severity, a missing time, a non-object', () => {
    const store = new Store();
    snapshot(store, [device('a', [{ ...view('x', 'warning', 1, T), severity: 'fatal' }, null, 'warning'], [{ ...view('x', 'warning', 1, T), ts: 'soon' }, 7])]);
    store.applyAlert({ device: 'a', type: 'x', severity: 'warning', message: 'm', ts: 1e20, seq: 1 } as never);
    store.applyAlert(null as never);
    expect(store.feed).toEqual([]);
    expect(store.activeAlarms()).toEqual([]);
    // A live alert from a service that does not stamp `at` yet still shows, once.
    store.applyAlert({ device: 'a', type: 'x', severity: 'warning', message: 'm', ts: T, seq: 1 });
    store.applyAlert({ device: 'a', type: 'x', severity: 'warning', message: 'm', ts: T, seq: 1 });
    expect(feedOf(store)).toEqual(['a:x:warning:1']);
  });

  it('stops showing a command as waiting once its longest possible wait has passed', () => {
    const store = new Store();
    store.device('d');
    store.setCommand('d', { id: 'c1', name: 'reboot', status: 'sent', text: 'sent', at: 0 });
    store.expireCommands(COMMAND_PENDING_MS - 1);
    expect(store.devices.get('d')?.command?.status).toBe('sent');
    store.devices.get('d')!.inFlight = true;
    store.expireCommands(COMMAND_PENDING_MS + 1);
    expect(store.devices.get('d')?.command?.status, 'our own request is still open').toBe('sent');
    store.devices.get('d')!.inFlight = false;
    store.expireCommands(COMMAND_PENDING_MS + 1);
    expect(store.devices.get('d')?.command).toBeNull();
  });
});
