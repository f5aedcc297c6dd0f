// @ts-check
// How values, units and ages read on screen. Pure functions, no DOM.

/** @type {Readonly<Record<string, { label: string, unit: string, digits: number }>>} */
const KNOWN_METRICS = Object.freeze({
  temperature: { label: 'Temperature', unit: '°C', digits: 1 },
  humidity: { label: 'Humidity', unit: '%', digits: 1 },
  battery: { label: 'Battery', unit: '%', digits: 0 },
  rssi: { label: 'Signal', unit: 'dBm', digits: 0 },
});

/** Known metrics first, in a fixed order, then the rest alphabetically. */
const KNOWN_ORDER = Object.keys(KNOWN_METRICS);

const plainNumber = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
/** @type {Map<number, Intl.NumberFormat>} */
const fixedFormats = new Map();

/** @param {string} name */
export function metricLabel(name) {
  return KNOWN_METRICS[name]?.label ?? name;
}

/** @param {string} name */
export function metricUnit(name) {
  return KNOWN_METRICS[name]?.unit ?? '';
}

/**
 * @param {string} name
 * @param {number} value
 */
export function formatMetric(name, value) {
  const known = KNOWN_METRICS[name];
  if (!known) return plainNumber.format(value);
  let fmt = fixedFormats.get(known.digits);
  if (!fmt) {
    fmt = new Intl.NumberFormat(undefined, { minimumFractionDigits: known.digits, maximumFractionDigits: known.digits });
    fixedFormats.set(known.digits, fmt);
  }
  return fmt.format(value);
}

/**
 * @param {string} a
 * @param {string} b
 */
export function compareMetricNames(a, b) {
  const ia = KNOWN_ORDER.indexOf(a);
  const ib = KNOWN_ORDER.indexOf(b);
  if (ia !== -1 || ib !== -1) return (ia === -1 ? Infinity : ia) - (ib === -1 ? Infinity : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders ids the way people read them: sim-2 before sim-10. */
export const compareIds = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' }).compare;

/**
 * A short relative age. Clock skew between device, server and browser can make ages
 * slightly negative; those read as "just now" rather than as nonsense.
 * @param {number} ms
 */
export function formatAge(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateClock = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

/** Time of day for today's events, date and time for older ones. @param {number} ts */
export function formatClock(ts) {
  const d = new Date(ts);
  return Date.now() - ts < 20 * 3600_000 ? clock.format(d) : dateClock.format(d);
}

/**
 * When an alert happened, as the panel shows it: the service's receive time `at`. A retained copy
 * whose device clock was ahead of the service's carries `at` 0 (unknown): say so, never "1970".
 * @param {number} at
 * @param {number} ts the device's own clock
 * @param {boolean} active shown as an active alarm ("since …")
 * @returns {{ text: string, title: string, dateTime: string }}
 */
export function alertTime(at, ts, active) {
  const device = `device clock ${new Date(ts).toLocaleString()}`;
  if (!(at > 0)) {
    return { text: active ? 'since: unknown' : 'time unknown', title: `Time of receipt unknown (a retained copy); ${device}`, dateTime: '' };
  }
  return {
    text: active ? `since ${formatClock(at)}` : formatClock(at),
    title: `Received ${new Date(at).toLocaleString()}; ${device}`,
    dateTime: new Date(at).toISOString(),
  };
}

/** @type {Readonly<Record<string, string>>} */
const COMMAND_LABELS = Object.freeze({ reboot: 'Reboot', 'set-interval': 'Set interval', ping: 'Ping' });

/** @param {string} name */
export function commandLabel(name) {
  return COMMAND_LABELS[name] ?? name;
}

/** @param {string} severity */
export function severityLabel(severity) {
  return severity === 'critical' ? 'Critical' : severity === 'warning' ? 'Warning' : 'Info';
}
