import { describe, expect, it, vi } from 'vitest';
import { DeviceCatalog } from '../../src/devices/catalog.js';
import { ALERT_HISTORY, ALERT_VIEW_MESSAGE_CHARS, MAX_ACTIVE_ALARMS, MAX_DEVICE_PAGE } from '../../src/protocol.js';
import { DeviceStore, type DeviceView, type StoreListener } from '../../src/devices/store.js';

/** The two things the catalog uses of the store: its change notices and its encoded views. */
function fakeStore() {
  const views = new Map<string, DeviceView>();
  const listeners: StoreListener[] = [];
  return {
    subscribe: (listener: StoreListener) => void listeners.push(listener),
    encode: (id: string) => {
      const view = views.get(id);
      return view && JSON.stringify(view);
    },
    set(id: string, state: DeviceView['state'] = 'online') {
      views.set(id, { id, state, stateTs: null, lastSeen: 1, telemetry: null } as DeviceView);
      for (const l of listeners) l(id, 'changed');
    },
    forget(id: string) {
      views.delete(id);
      for (const l of listeners) l(id, 'forgotten');
    },
  };
}

const json = (body: string | string[]) => JSON.parse([body].flat().join(''));
const ids = (body: string | string[]) => (json(body) as { devices: { id: string }[] }).devices.map((d) => d.id);

describe('device catalog', () => {
  it('keeps fragments in id order through inserts, updates and forgets, whatever order they come in', () => {
    const store = fakeStore();
    const catalog = new DeviceCatalog(store);
    const shuffled = Array.from({ length: 500 }, (_, i) => `d-${((i * 7919) % 500).toString().padStart(3, '0')}`);
    for (const id of shuffled) store.set(id);
    for (const id of shuffled.slice(0, 50)) store.set(id, 'offline');
    for (const id of shuffled.slice(100, 150)) store.forget(id);
    const expected = [...new Set(shuffled)].filter((id) => !shuffled.slice(100, 150).includes(id)).sort();
    const snapshot = json(catalog.snapshotData({ mqtt: 'up' }));
    expect(snapshot.mqtt).toBe('up');
    expect(snapshot.devices.map((d: DeviceView) => d.id)).toEqual(expected);
    expect(catalog.size).toBe(450);
    expect(JSON.parse(catalog.fragment(shuffled[0]!)!).state).toBe('offline');
    expect(catalog.fragment(shuffled[120]!)).toBeUndefined();
    expect(catalog.byteSize, 'each fragment with its comma').toBe(snapshot.devices.reduce((n: number, d: DeviceView) => n + JSON.stringify(d).length + 1, 0));
  });

  it('builds a filtered snapshot from the named devices only, in id order, leaving out unknown ones', () => {
    const store = fakeStore();
    const catalog = new DeviceCatalog(store);
    for (const id of ['c', 'a', 'b']) store.set(id);
    expect(ids(catalog.snapshotData({ mqtt: 'down' }, new Set(['c', 'nope', 'a'])))).toEqual(['a', 'c']);
    expect(json(catalog.snapshotData({ mqtt: 'down', redis: 'up' }, new Set(['nope'])))).toEqual({ devices: [], mqtt: 'down', redis: 'up' });
  });

  it('pages with a cursor: every device once, in order, and next null on the last page', () => {
    const store = fakeStore();
    const catalog = new DeviceCatalog(store);
    for (let i = 0; i < 25; i += 1) store.set(`p${String(i).padStart(2, '0')}`);
    const seen: string[] = [];
    let after: string | undefined;
    for (let n = 0; n < 10; n += 1) {
      const page = catalog.page(10, after);
      const body = JSON.parse(page.body);
      expect(body.next).toBe(page.next);
      seen.push(...body.devices.map((d: DeviceView) => d.id));
      if (page.next === null) break;
      after = page.next;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `p${String(i).padStart(2, '0')}`));
    expect(catalog.page(5, 'p24')).toMatchObject({ count: 0, next: null });
    expect(catalog.page(25, undefined).next, 'an exact last page says so').toBeNull();
    expect(JSON.parse(new DeviceCatalog(fakeStore()).page(MAX_DEVICE_PAGE, undefined).body)).toEqual({ devices: [], next: null });
  });

  it('bumps its version on every change, so a cached encoding can tell it is stale', () => {
    const store = fakeStore();
    const catalog = new DeviceCatalog(store);
    const v0 = catalog.version;
    store.set('a');
    store.set('a');
    store.forget('a');
    store.forget('a');
    expect(catalog.version).toBe(v0 + 3);
  });
});

describe('device catalog over the real store', () => {
  const T = 1_796_182_012_369;
  function storeWithFullAlertLog() {
    const store = new DeviceStore();
    const catalog = new DeviceCatalog(store);
    store.applyStatus({ kind: 'status', device: 'd', state: 'online', ts: T }, 1);
    for (let seq = 1; seq <= ALERT_HISTORY + MAX_ACTIVE_ALARMS; seq += 1) {
      store.applyAlert({ kind: 'events', device: 'd', seq, ts: T + seq, type: `t${seq}`, severity: 'critical', message: 'm'.repeat(ALERT_VIEW_MESSAGE_CHARS) }, 2);
    }
    return { store, catalog };
  }

  it('each fragment is exactly the JSON of the device view, through readings, alerts and status', () => {
    const { store, catalog } = storeWithFullAlertLog();
    const same = () => expect(catalog.fragment('d')).toBe(JSON.stringify(store.get('d')));
    same();
    store.applyTelemetry({ kind: 'telemetry', device: 'd', seq: 1, ts: T, metrics: { t: 1, __proto__x: 2 } }, 3);
    same();
    store.applyAlert({ kind: 'events', device: 'd', seq: 100, ts: T, type: 't3', severity: 'info', message: 'back to normal' }, 4);
    same();
    store.applyStatus({ kind: 'status', device: 'd', state: 'offline', ts: undefined }, 5);
    same();
    store.applyTelemetry({ kind: 'telemetry', device: 'n', seq: 1, ts: T, metrics: { t: 1 } }, 6);
    expect(catalog.fragment('n')).toBe(JSON.stringify(store.get('n')));
  });

  it('a reading re-encodes the device without re-encoding its alerts (a flood of readings costs a reading each)', () => {
    const { store, catalog } = storeWithFullAlertLog();
    const viewChars = catalog.fragment('d')!.length;
    let encodedChars = 0;
    const stringify = JSON.stringify;
    const spy = vi.spyOn(JSON, 'stringify').mockImplementation((...args: Parameters<typeof JSON.stringify>) => {
      const out = stringify(...args);
      encodedChars += out?.length ?? 0;
      return out;
    });
    try {
      for (let seq = 1; seq <= 100; seq += 1) store.applyTelemetry({ kind: 'telemetry', device: 'd', seq, ts: T + seq, metrics: { t: seq } }, 10 + seq);
    } finally {
      spy.mockRestore();
    }
    expect(viewChars).toBeGreaterThan(4_000);
    // 100 readings: about 100 × the ~200 characters of the view without its alerts, not 100 × the whole view.
    expect(encodedChars).toBeLessThan(100 * 400);
    expect(catalog.fragment('d')).toBe(JSON.stringify(store.get('d')));
  });
});
