// @ts-check
// The in-memory model of everything the page shows. Events are applied here as they arrive;
// the page renders from it at most once per animation frame, touching only what is marked dirty.

import { compareAlarms, compareReceived, isAlarm, toAlertItem } from './alert-model.js';
import { coveredFrom, laterOf, Pending, refill } from './history-model.js';
import { Ring } from './ring.js';

/** @typedef {import('./types.js').Device} Device */
/** @typedef {import('./types.js').DeviceState} DeviceState */
/** @typedef {import('./types.js').AlertEvent} AlertEvent */
/** @typedef {import('./types.js').CommandView} CommandView */
/** @typedef {import('./types.js').CommandStatus} CommandStatus */
/** @typedef {import('./alert-model.js').AlertItem} AlertItem */
/** @typedef {import('./history-model.js').History} History */

/** Alerts the recent feed holds. */
export const MAX_ALERTS = 100;
/** How long a finished command's outcome stays on the card. */
export const COMMAND_RESULT_MS = 12_000;
/**
 * A command seen as `sent` whose outcome never arrived (its event fell into a reset, or another
 * page sent it and closed) stops showing "waiting" after the longest wait the API allows.
 */
export const COMMAND_PENDING_MS = 130_000;
/** Remembered alert keys, so a QoS 1 redelivery or a replay overlap is never shown twice. */
const SEEN_ALERTS = 2000;

const FINAL = new Set(['acked', 'failed', 'timeout', 'offline', 'error']);

/** @typedef {{ value: number, ring: Ring }} MetricModel */

export class DeviceModel {
  /** @param {string} id */
  constructor(id) {
    this.id = id;
    /** @type {DeviceState} */
    this.state = 'unknown';
    /** @type {number | null} */
    this.stateTs = null;
    /** @type {number | null} */
    this.lastSeen = null;
    /** (ts, seq) of the newest telemetry applied: anything not newer is a duplicate or stale. */
    this.telemetryTs = -Infinity;
    this.telemetrySeq = -1;
    /** @type {Map<string, MetricModel>} */
    this.metrics = new Map();
    /** Active alarms by alert type: the latest alert above `info` until an `info` of its type. */
    /** @type {Map<string, AlertItem>} */
    this.alarms = new Map();
    /** @type {CommandView | null} */
    this.command = null;
    /** Our own command request for this device is in flight. */
    this.inFlight = false;
    /** Its charts were filled from history since the last snapshot. */
    this.filled = false;
  }

  /**
   * @param {number} ts
   * @param {number} seq
   * @param {Record<string, number>} metrics
   * @returns {boolean} whether it was new
   */
  applyTelemetry(ts, seq, metrics) {
    // The server's rule (src/devices/store.ts): a repeat is neither newer in seq nor in time. A
    // device that restarted counts from 0 again with a later clock; one whose clock stepped back
    // keeps counting up. Both are new readings.
    if (seq <= this.telemetrySeq && ts <= this.telemetryTs) return false;
    // A clock that stepped back would draw the line backwards: start the history over.
    if (ts < this.telemetryTs) for (const m of this.metrics.values()) m.ring.clear();
    this.telemetryTs = ts;
    this.telemetrySeq = seq;
    for (const name of Object.keys(metrics)) {
      const value = metrics[name];
      if (typeof value !== 'number' || !Number.isFinite(value)) continue;
      let m = this.metrics.get(name);
      if (!m) {
        m = { value, ring: new Ring() };
        this.metrics.set(name, m);
      }
      m.value = value;
      m.ring.push(ts, value);
    }
    this.seen(ts);
    return true;
  }

  /**
   * Moves last seen forward. Device clocks can run ahead of this one: a time in the future
   * counts as now, so "seen 5 s ago" never turns into "seen in 3 min".
   * @param {number} ts
   */
  seen(ts) {
    const at = Math.min(ts, Date.now());
    if (this.lastSeen === null || at > this.lastSeen) this.lastSeen = at;
  }

  /** Active alarms, most severe first, then newest first. */
  sortedAlarms() {
    return [...this.alarms.values()].sort(compareAlarms);
  }

  /**
   * Applies one alert in the order the server sent it: above `info` it is its type's alarm now
   * (a `warning` after a `critical` means easing); `info` ends its type's alarm.
   * @param {AlertItem} a
   * @returns {boolean} whether the alarms changed
   */
  applyAlarm(a) {
    if (isAlarm(a)) {
      this.alarms.set(a.type, a);
      return true;
    }
    return this.alarms.delete(a.type);
  }
}

/**
 * @param {AlertItem[]} items
 * @param {number} n
 * @returns {AlertItem[]} the n received last, oldest first
 */
function newest(items, n) {
  return items.sort(compareReceived).slice(-n);
}

export class Store {
  constructor() {
    /** @type {Map<string, DeviceModel>} */
    this.devices = new Map();
    /** @type {'up' | 'down'} */
    this.mqtt = 'up';
    /** The shared log, when the service runs on one (`upstream` events say); else 'up'. */
    /** @type {'up' | 'down'} */
    this.redis = 'up';
    /** Devices whose card must be redrawn. */
    /** @type {Set<string>} */
    this.dirty = new Set();
    /** Devices were added or removed: cards must be created, dropped or reordered. */
    this.structureDirty = false;
    /** Online/total counts or the upstream banner changed. */
    this.headerDirty = false;
    /** The recent feed, oldest first (the order the service received them), at most MAX_ALERTS. */
    /** @type {AlertItem[]} */
    this.feed = [];
    /** The tail of `feed` not yet on screen, oldest first. */
    /** @type {AlertItem[]} */
    this.newAlerts = [];
    /** A snapshot put alerts into the middle of the feed: it must be drawn again as a whole. */
    this.feedRebuild = false;
    /** Some device's active alarms changed. */
    this.alarmsDirty = false;
    /** @type {Set<string>} */
    this.seenAlerts = new Set();
    /** The server could not resume: the next snapshot starts the history over. */
    this.resetPending = false;
    /** Live readings of devices whose history answer is on its way. */
    this.pending = new Pending();
  }

  /** @param {string} id */
  device(id) {
    let d = this.devices.get(id);
    if (!d) {
      d = new DeviceModel(id);
      this.devices.set(id, d);
      this.structureDirty = true;
      this.headerDirty = true;
    }
    return d;
  }

  /** A `reset` arrived: updates were missed, so a line drawn across the gap would be a lie. */
  applyReset() {
    this.resetPending = true;
  }

  /**
   * Replaces all device state. Sparkline history of devices that are still there is kept. After a
   * reset it gets a break (the updates in between are unknown, and a line across them would be a
   * lie); when the snapshot is older than the history (clocks moved), it starts over.
   * @param {import('./types.js').SnapshotEvent} snap
   */
  applySnapshot(snap) {
    const gap = this.resetPending;
    this.resetPending = false;
    const keep = new Set();
    const arrivedAt = Date.now();
    /** @type {AlertItem[]} */
    let recent = [];
    for (const dev of Array.isArray(snap.devices) ? snap.devices : []) {
      if (!dev || typeof dev.id !== 'string') continue;
      keep.add(dev.id);
      const d = this.device(dev.id);
      d.state = dev.state === 'online' || dev.state === 'offline' ? dev.state : 'unknown';
      d.stateTs = dev.stateTs ?? null;
      d.lastSeen = typeof dev.lastSeen === 'number' ? Math.min(dev.lastSeen, Date.now()) : null;
      const t = dev.telemetry;
      if (t && typeof t.ts === 'number' && t.ts < d.telemetryTs) {
        for (const m of d.metrics.values()) m.ring.clear();
        d.telemetryTs = -Infinity;
        d.telemetrySeq = -1;
      } else if (gap) {
        for (const m of d.metrics.values()) m.ring.gap();
      }
      if (t && typeof t.ts === 'number') {
        // The reading we already hold is ignored here; a newer one extends the history.
        const lastSeen = d.lastSeen;
        d.applyTelemetry(t.ts, t.seq, t.metrics ?? {});
        d.lastSeen = lastSeen ?? d.lastSeen;
      }
      // The snapshot's alarms are the truth as of now; a service that sends none leaves ours.
      if (Array.isArray(dev.alarms)) {
        d.alarms.clear();
        for (const raw of dev.alarms) {
          const a = toAlertItem(dev.id, raw, arrivedAt);
          if (a && isAlarm(a)) d.alarms.set(a.type, a);
        }
      }
      if (Array.isArray(dev.alerts)) {
        for (const raw of dev.alerts) {
          const a = toAlertItem(dev.id, raw, arrivedAt);
          if (a) recent.push(a);
        }
        // Only the newest MAX_ALERTS of the whole fleet can reach the feed: keep the pile small.
        if (recent.length > 4 * MAX_ALERTS) recent = newest(recent, MAX_ALERTS);
      }
      // Filled again from history: after a reset that covers what the stream missed.
      d.filled = false;
      this.dirty.add(dev.id);
    }
    // Answers asked for before this snapshot may end before it: they are asked again.
    this.pending.clear();
    for (const id of this.devices.keys()) {
      if (!keep.has(id)) {
        this.devices.delete(id);
        this.dirty.delete(id);
        this.pending.drop(id);
        this.structureDirty = true;
      }
    }
    this.alarmsDirty = true;
    // The recent alerts fill the feed with what this page has not shown: all of them on a first
    // load, those raised during the gap after a reset.
    const unseen = newest(recent, MAX_ALERTS).filter((a) => this.#remember(a.key));
    if (unseen.length > 0) {
      this.feed = this.feed.concat(unseen).sort(compareReceived).slice(-MAX_ALERTS);
      this.feedRebuild = true;
      this.newAlerts = [];
    }
    if (snap.mqtt === 'up' || snap.mqtt === 'down') this.mqtt = snap.mqtt;
    this.redis = snap.redis === 'down' ? 'down' : 'up';
    this.headerDirty = true;
  }

  /**
   * @param {import('./types.js').TelemetryEvent} ev
   * @param {string} [id] its event id, to join it with a history answer
   */
  applyTelemetry(ev, id = '') {
    const d = this.device(ev.device);
    if (!d.applyTelemetry(ev.ts, ev.seq, ev.metrics ?? {})) return;
    this.dirty.add(d.id);
    if (id !== '') this.pending.add(d.id, { id, ts: ev.ts, metrics: ev.metrics ?? {} });
  }

  /**
   * A history answer for one device: its sparklines rebuilt from it and the live readings after
   * it (see history-model.js).
   * @param {History} h
   */
  applyHistory(h) {
    const d = this.devices.get(h.device);
    const later = this.pending.take(h.device, h.until);
    if (!d) return;
    const from = coveredFrom(h);
    for (const [name, series] of Object.entries(h.metrics)) {
      const last = series.v[series.v.length - 1];
      if (last === undefined) continue;
      let m = d.metrics.get(name);
      if (!m) {
        m = { value: last, ring: new Ring() };
        d.metrics.set(name, m);
      }
      refill(m.ring, series, from, laterOf(later, name));
    }
    d.filled = true;
    this.dirty.add(d.id);
  }

  /** @param {import('./types.js').StatusEvent} ev */
  applyStatus(ev) {
    const d = this.device(ev.device);
    // The server sends status changes in the order it applied them; its `ts` mixes clocks (the
    // device's for `online`, the server's for a last will), so it is shown, never compared.
    d.state = ev.state === 'online' || ev.state === 'offline' ? ev.state : 'unknown';
    d.stateTs = typeof ev.ts === 'number' ? ev.ts : d.stateTs;
    if (ev.state === 'online' && typeof ev.ts === 'number') d.seen(ev.ts);
    this.dirty.add(d.id);
    this.headerDirty = true;
  }

  /**
   * A live alert: into the feed, and into its device's alarms. One already shown (a replay
   * overlap, or one the last snapshot carried) is ignored.
   * @param {AlertEvent} ev
   */
  applyAlert(ev) {
    const a = ev && typeof ev.device === 'string' ? toAlertItem(ev.device, ev, Date.now()) : null;
    if (!a || !this.#remember(a.key)) return;
    this.feed.push(a);
    if (this.feed.length > MAX_ALERTS) this.feed.shift();
    if (!this.feedRebuild) {
      this.newAlerts.push(a);
      if (this.newAlerts.length > MAX_ALERTS) this.newAlerts.shift();
    }
    const d = this.device(a.device);
    if (d.applyAlarm(a)) this.alarmsDirty = true;
    this.dirty.add(d.id);
  }

  /** Every device's active alarms, most severe first, then newest first. */
  activeAlarms() {
    /** @type {AlertItem[]} */
    const all = [];
    for (const d of this.devices.values()) for (const a of d.alarms.values()) all.push(a);
    return all.sort(compareAlarms);
  }

  /**
   * @param {string} key
   * @returns {boolean} false if it was already known
   */
  #remember(key) {
    if (this.seenAlerts.has(key)) return false;
    this.seenAlerts.add(key);
    if (this.seenAlerts.size > SEEN_ALERTS) {
      // Sets iterate in insertion order: drop the oldest key.
      const oldest = this.seenAlerts.values().next().value;
      if (oldest !== undefined) this.seenAlerts.delete(oldest);
    }
    return true;
  }

  /**
   * What a card shows about a command. A late, non-final message about a command whose outcome
   * is already known (an SSE `sent` lagging behind our own HTTP answer) is ignored.
   * @param {string} deviceId
   * @param {CommandView} view
   */
  setCommand(deviceId, view) {
    const d = this.devices.get(deviceId);
    if (!d) return;
    const cur = d.command;
    if (cur && view.id !== null && cur.id === view.id && FINAL.has(cur.status) && !FINAL.has(view.status)) return;
    d.command = view;
    this.dirty.add(deviceId);
  }

  /**
   * Drops finished command outcomes older than COMMAND_RESULT_MS, and ones still waiting after
   * COMMAND_PENDING_MS unless this page's own request for them is still open.
   * @param {number} now performance.now()
   */
  expireCommands(now) {
    for (const d of this.devices.values()) {
      const c = d.command;
      if (!c) continue;
      const final = FINAL.has(c.status);
      if ((final && now - c.at > COMMAND_RESULT_MS) || (!final && !d.inFlight && now - c.at > COMMAND_PENDING_MS)) {
        d.command = null;
        this.dirty.add(d.id);
      }
    }
  }

  /** @param {import('./types.js').UpstreamEvent} data */
  setUpstream(data) {
    if (data?.mqtt !== 'up' && data?.mqtt !== 'down') return;
    this.mqtt = data.mqtt;
    this.redis = data.redis === 'down' ? 'down' : 'up';
    this.headerDirty = true;
  }

  counts() {
    let online = 0;
    for (const d of this.devices.values()) if (d.state === 'online') online++;
    return { online, total: this.devices.size };
  }
}
