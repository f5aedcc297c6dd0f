// @ts-check
// The alerts feed: newest first, bounded. Device text goes in with textContent only.

import { formatClock, severityLabel } from './format.js';
import { MAX_ALERTS } from './model.js';

/** @typedef {import('./model.js').AlertItem} AlertItem */

export class AlertsView {
  /**
   * @param {HTMLOListElement} list
   * @param {HTMLElement} empty  shown while the feed is empty
   * @param {HTMLElement} count
   */
  constructor(list, empty, count) {
    this.list = list;
    this.empty = empty;
    this.count = count;
    this.total = 0;
  }

  /** @param {AlertItem[]} items oldest first */
  add(items) {
    if (items.length === 0) return;
    const frag = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i--) frag.append(this.#item(/** @type {AlertItem} */ (items[i])));
    this.list.prepend(frag);
    while (this.list.childElementCount > MAX_ALERTS) this.list.lastElementChild?.remove();
    this.total += items.length;
    this.empty.hidden = true;
    this.count.textContent = String(this.total);
  }

  /** @param {AlertItem} a */
  #item(a) {
    const severity = a.severity === 'critical' || a.severity === 'warning' ? a.severity : 'info';
    const li = document.createElement('li');
    li.className = 'alert';
    li.dataset.severity = severity;
    li.dataset.device = a.device;

    const head = document.createElement('div');
    head.className = 'alert-head';
    const sev = document.createElement('span');
    sev.className = 'severity';
    sev.textContent = severityLabel(severity);
    const device = document.createElement('button');
    device.type = 'button';
    device.className = 'alert-device';
    device.dataset.filterDevice = a.device;
    device.textContent = a.device;
    device.title = `Show only ${a.device}`;
    const time = document.createElement('time');
    const ts = typeof a.ts === 'number' ? a.ts : Date.now();
    time.dateTime = new Date(ts).toISOString();
    time.textContent = formatClock(ts);
    head.append(sev, device, time);

    const msg = document.createElement('p');
    msg.className = 'alert-message';
    msg.textContent = String(a.message ?? '');
    const type = document.createElement('p');
    type.className = 'alert-type';
    type.textContent = String(a.type ?? '');

    li.append(head, msg, type);
    return li;
  }
}
