// @ts-check
// Alerts as the page keeps them: one shape for what a snapshot carries (a device's `alarms` and
// recent `alerts`) and what the stream sends (`alert` events), a key that names one alert in both,
// and the orders they are listed in. Pure functions, no DOM.

/** @typedef {import('./types.js').Severity} Severity */

/**
 * One alert. `at` is when the service received it (the service's clock): the order the page lists
 * alerts in. `ts` is the device's own clock: shown, never trusted for order.
 * @typedef {object} AlertItem
 * @property {string} key      names this alert across snapshots, replays and live events
 * @property {string} device
 * @property {string} type
 * @property {Severity} severity
 * @property {string} message  untrusted device text: only ever rendered with textContent
 * @property {number} ts
 * @property {number} seq
 * @property {number} at
 */

/** @type {Readonly<Record<Severity, number>>} */
const RANK = Object.freeze({ info: 0, warning: 1, critical: 2 });

/** A number a Date can hold (so it formats without throwing). @param {unknown} v @returns {v is number} */
const isTime = (v) => typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= 8.64e15;
/** @param {unknown} v @returns {v is number} */
const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/**
 * Checks one alert from the server (an AlertView of a snapshot, or an `alert` event's data) and
 * gives it its key; null when it is not one. Live events from a service that does not send `at`
 * yet get the time they arrived, and a key from the device's (ts, seq) instead.
 * @param {string} device
 * @param {any} raw
 * @param {number} arrivedAt Date.now() when it arrived
 * @returns {AlertItem | null}
 */
export function toAlertItem(device, raw, arrivedAt) {
  if (!raw || typeof raw !== 'object' || typeof device !== 'string') return null;
  const { type, severity, message, ts, seq, at } = raw;
  if (typeof type !== 'string' || !isTime(ts) || !isNumber(seq)) return null;
  if (severity !== 'info' && severity !== 'warning' && severity !== 'critical') return null;
  // The service stamps each alert once; the same alert seen in a snapshot and on the stream (a
  // replay overlap, a reset) carries the same stamp, while a device that restarted and reuses
  // (seq, ts) does not.
  const stamped = isTime(at);
  const key = `${device}\u0000${type}\u0000${seq}\u0000${stamped ? at : `ts${ts}`}`;
  return { key, device, type, severity, message: typeof message === 'string' ? message : '', ts, seq, at: stamped ? at : arrivedAt };
}

/** @param {AlertItem} a */
export const isAlarm = (a) => a.severity !== 'info';

/**
 * Active alarms: most severe first, then newest first.
 * @param {AlertItem} a
 * @param {AlertItem} b
 */
export function compareAlarms(a, b) {
  return RANK[b.severity] - RANK[a.severity] || b.at - a.at || b.seq - a.seq;
}

/**
 * The recent feed, oldest first: the order the service received them in. Equal stamps keep the
 * order they came in (Array.prototype.sort is stable).
 * @param {AlertItem} a
 * @param {AlertItem} b
 */
export function compareReceived(a, b) {
  return a.at - b.at;
}
