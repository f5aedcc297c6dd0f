// @ts-check
// The alerts panel: the alarms active now (most severe first), then the recent feed (newest
// first, bounded). Device text goes in with textContent only.

import { alertTime, severityLabel } from './format.js';
import { routeOf } from './history-model.js';
import { MAX_ALERTS } from './model.js';

/** @typedef {import('./alert-model.js').AlertItem} AlertItem */

/** Active alarms listed; past it a line says how many more there are. */
export const MAX_ACTIVE_SHOWN = 100;

/**
 * @typedef {object} AlertsElements
 * @property {HTMLElement} empty         "No alerts yet": shown only while there are none at all
 * @property {HTMLElement} count         the number of active alarms, next to the panel's title
 * @property {HTMLElement} activeSection
 * @property {HTMLUListElement} active
 * @property {HTMLElement} activeNone    shown while nothing is active but past alerts are listed
 * @property {HTMLElement} activeMore
 * @property {HTMLElement} recentSection
 * @property {HTMLOListElement} recent
 */

export class AlertsView {
  /** @param {AlertsElements} els */
  constructor(els) {
    this.els = els;
    /** The active list's items by alert key, so a redraw moves only what changed place. */
    /** @type {Map<string, HTMLLIElement>} */
    this.activeItems = new Map();
    this.activeCount = 0;
  }

  /**
   * @param {AlertItem[]} alarms every active alarm, most severe first, then newest first
   */
  showActive(alarms) {
    const shown = alarms.slice(0, MAX_ACTIVE_SHOWN);
    const keep = new Set(shown.map((a) => a.key));
    for (const [key, li] of this.activeItems) {
      if (keep.has(key)) continue;
      li.remove();
      this.activeItems.delete(key);
    }
    // Move only items that are out of place, so a focused device button keeps its focus.
    const list = this.els.active;
    let ref = list.firstElementChild;
    for (const a of shown) {
      let li = this.activeItems.get(a.key);
      if (!li) {
        li = item(a, true);
        this.activeItems.set(a.key, li);
      }
      if (li === ref) ref = ref.nextElementSibling;
      else list.insertBefore(li, ref);
    }
    const more = alarms.length - shown.length;
    this.els.activeMore.hidden = more <= 0;
    this.els.activeMore.textContent = more > 0 ? `and ${more} more` : '';
    this.activeCount = alarms.length;
    const count = this.els.count;
    count.textContent = `${alarms.length} active`;
    count.hidden = alarms.length === 0;
    count.dataset.severity = alarms[0]?.severity ?? 'info';
    this.#sections();
  }

  /** @param {AlertItem[]} items new alerts, oldest first */
  add(items) {
    if (items.length === 0) return;
    const frag = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i--) frag.append(item(/** @type {AlertItem} */ (items[i]), false));
    const list = this.els.recent;
    list.prepend(frag);
    while (list.childElementCount > MAX_ALERTS) list.lastElementChild?.remove();
    this.#sections();
  }

  /**
   * Draws the whole feed again, after a snapshot filled in alerts this page had not seen. It is
   * no news to announce: the live region stays quiet while it is rebuilt.
   * @param {AlertItem[]} feed oldest first
   */
  replace(feed) {
    const list = this.els.recent;
    const live = list.getAttribute('aria-live');
    list.setAttribute('aria-live', 'off');
    const frag = document.createDocumentFragment();
    for (let i = feed.length - 1; i >= 0; i--) frag.append(item(/** @type {AlertItem} */ (feed[i]), false));
    list.replaceChildren(frag);
    if (live) setTimeout(() => list.setAttribute('aria-live', live), 0);
    this.#sections();
  }

  #sections() {
    const past = this.els.recent.childElementCount > 0;
    const any = past || this.activeCount > 0;
    this.els.empty.hidden = any;
    this.els.activeSection.hidden = !any;
    this.els.activeNone.hidden = this.activeCount > 0;
    this.els.recentSection.hidden = !past;
  }
}

/**
 * @param {AlertItem} a
 * @param {boolean} active
 */
function item(a, active) {
  const li = document.createElement('li');
  li.className = 'alert';
  li.dataset.severity = a.severity;
  li.dataset.device = a.device;
  li.dataset.type = a.type;
  li.dataset.key = a.key;

  const head = document.createElement('div');
  head.className = 'alert-head';
  const sev = document.createElement('span');
  sev.className = 'severity';
  sev.textContent = severityLabel(a.severity);
  const device = document.createElement('button');
  device.type = 'button';
  device.className = 'alert-device';
  device.dataset.filterDevice = a.device;
  device.textContent = a.device;
  device.title = `Show only ${a.device}`;
  // Listed in the order the service received them, so that is the time shown; the device's own
  // clock may be off, and is there on hover.
  const time = document.createElement('time');
  const when = alertTime(a.at, a.ts, active);
  if (when.dateTime) time.dateTime = when.dateTime;
  time.textContent = when.text;
  // The time opens the device's view at that moment: its charts run on the device's clock.
  const moment = document.createElement('a');
  moment.className = 'alert-when';
  moment.href = routeOf(a.device, a.ts);
  moment.title = `${when.title}. Open ${a.device} at this moment`;
  moment.append(time);
  head.append(sev, device, moment);

  const msg = document.createElement('p');
  msg.className = 'alert-message';
  msg.textContent = a.message || a.type;
  const type = document.createElement('p');
  type.className = 'alert-type';
  type.textContent = a.type;

  li.append(head, msg, type);
  return li;
}
