// The dashboard's model (web/model.js, web/ring.js) is plain browser JavaScript without DOM use,
// so its rules are checked here directly; the e2e test checks the page as a whole.
import { describe, expect, it } from 'vitest';
import { COMMAND_PENDING_MS, Store } from '../../web/model.js';
import { Ring, sparklinePath } from '../../web/ring.js';

const T = 1_790_000_000_000;

function snapshot(store: Store, devices: unknown[]): void {
  store.applySnapshot({ devices, mqtt: 'up' } as never);
}

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

  it('draws a lone point as a stub and nothing for an empty ring', () => {
    const ring = new Ring(4);
    expect(sparklinePath(ring)).toBe('');
    ring.push(T, 1);
    expect(sparklinePath(ring)).toMatch(/^M100\.0,12\.0 h-\d+$/);
    ring.gap();
    ring.gap();
    expect(ring.length, 'one marker per break').toBe(2);
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
