// @ts-check
// One card per device. Its DOM nodes are built once and then only patched: text and attributes
// are written when they change, and each sparkline is one path `d` update.

import { compareMetricNames, formatAge, formatMetric, metricLabel, metricUnit, severityLabel } from './format.js';
import { routeOf } from './history-model.js';
import { sparklinePath } from './ring.js';

/** @typedef {import('./model.js').DeviceModel} DeviceModel */
/** @typedef {import('./alert-model.js').AlertItem} AlertItem */

/** @param {AlertItem} a */
const line = (a) => `${severityLabel(a.severity)}: ${a.message || a.type}`;

const STATE_TEXT = { online: 'Online', offline: 'Offline', unknown: 'Unknown' };

/**
 * @param {string} id
 * @returns {HTMLTemplateElement}
 */
function template(id) {
  const t = document.getElementById(id);
  if (!(t instanceof HTMLTemplateElement)) throw new Error(`missing <template id="${id}">`);
  return t;
}

/**
 * @template {Element} T
 * @param {ParentNode} root
 * @param {string} selector
 * @param {{ new (...args: any[]): T }} type
 * @returns {T}
 */
export function $(root, selector, type) {
  const el = root.querySelector(selector);
  if (!(el instanceof type)) throw new Error(`missing ${selector}`);
  return el;
}

/**
 * @param {Element} el
 * @param {string} text
 */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * @typedef {object} MetricView
 * @property {HTMLElement} row
 * @property {HTMLElement} number
 * @property {SVGPathElement} line
 */

let nextCardNumber = 0;

export class CardView {
  /** @param {string} deviceId */
  constructor(deviceId) {
    const frag = /** @type {DocumentFragment} */ (template('card-template').content.cloneNode(true));
    this.el = $(frag, '.card', HTMLElement);
    this.el.dataset.deviceId = deviceId;
    // Element ids come from a counter, never from device input.
    const titleId = `card-title-${++nextCardNumber}`;
    this.title = $(this.el, '.card-title', HTMLElement);
    this.title.id = titleId;
    // The title opens the device's view: its charts, marks and commands.
    const link = $(this.title, '.card-link', HTMLAnchorElement);
    link.href = routeOf(deviceId);
    link.textContent = deviceId;
    link.title = `Open ${deviceId}: charts, alerts and commands`;
    this.el.setAttribute('aria-labelledby', titleId);
    this.badge = $(this.el, '.badge-text', HTMLElement);
    this.metricsEl = $(this.el, '.metrics', HTMLElement);
    this.alertEl = $(this.el, '.card-alert', HTMLElement);
    this.seenEl = $(this.el, '.seen', HTMLElement);
    this.result = $(this.el, '[data-command-result]', HTMLElement);
    this.intervalForm = $(this.el, '.interval-form', HTMLFormElement);
    /** Everything that sends a command, greyed out while our own request is in flight. */
    this.senders = Array.from(this.el.querySelectorAll('[data-command], .interval-form button[type=submit]'));
    for (const b of this.senders) if (b.hasAttribute('data-command')) b.setAttribute('aria-describedby', titleId);
    /** @type {Map<string, MetricView>} */
    this.metrics = new Map();
    /** Whether the card is on (or near) the screen; off-screen sparklines are drawn later. */
    this.visible = false;
    this.sparksStale = true;
    /** @type {number | null} */
    this.lastSeen = null;
    /** Set while our own command request for this device is in flight. */
    this.busy = false;
  }

  /** @param {DeviceModel} d */
  update(d) {
    if (this.el.dataset.state !== d.state) {
      this.el.dataset.state = d.state;
      setText(this.badge, STATE_TEXT[d.state]);
    }
    this.#updateMetrics(d);
    this.lastSeen = d.lastSeen;
    this.updateAge(Date.now());

    // The chip shows the worst active alarm; the rest are counted, and all are in its tooltip.
    const alarms = d.sortedAlarms();
    const top = alarms[0];
    this.alertEl.hidden = top === undefined;
    if (top) {
      this.alertEl.dataset.severity = top.severity;
      this.alertEl.dataset.type = top.type;
      const more = alarms.length > 1 ? ` (+${alarms.length - 1} more)` : '';
      setText(this.alertEl, `${line(top)}${more}`);
      const title = alarms.map(line).join('\n'); // the chip is clamped to two lines
      if (this.alertEl.title !== title) this.alertEl.title = title;
    }

    const cmd = d.command;
    setText(this.result, cmd ? cmd.text : '');
    if (cmd) this.result.dataset.status = cmd.status;
    else delete this.result.dataset.status;
    const pending = d.inFlight;
    if (pending !== this.busy) {
      this.busy = pending;
      // aria-disabled rather than disabled, so keyboard focus stays on the button just used.
      for (const b of this.senders) b.setAttribute('aria-disabled', String(pending));
      this.el.setAttribute('aria-busy', String(pending));
    }
  }

  /** @param {number} wallNow Date.now() */
  updateAge(wallNow) {
    setText(this.seenEl, this.lastSeen === null ? 'Never seen' : `Last seen ${formatAge(wallNow - this.lastSeen)}`);
  }

  /** @param {DeviceModel} d */
  #updateMetrics(d) {
    let added = false;
    for (const [name, m] of d.metrics) {
      let view = this.metrics.get(name);
      if (!view) {
        view = this.#addMetric(name);
        added = true;
      }
      setText(view.number, formatMetric(name, m.value));
    }
    if (added) {
      const names = [...this.metrics.keys()].sort(compareMetricNames);
      for (const name of names) this.metricsEl.append(/** @type {MetricView} */ (this.metrics.get(name)).row);
    }
    if (this.visible) this.drawSparklines(d);
    else this.sparksStale = true;
  }

  /** @param {DeviceModel} d */
  drawSparklines(d) {
    for (const [name, m] of d.metrics) {
      const view = this.metrics.get(name);
      if (view) view.line.setAttribute('d', sparklinePath(m.ring));
    }
    this.sparksStale = false;
  }

  /** @param {string} name */
  #addMetric(name) {
    const frag = /** @type {DocumentFragment} */ (template('metric-template').content.cloneNode(true));
    const row = $(frag, '.metric', HTMLElement);
    row.dataset.metricRow = name;
    $(row, '.metric-name', HTMLElement).textContent = metricLabel(name);
    const number = $(row, '.metric-number', HTMLElement);
    number.dataset.metric = name;
    const unit = metricUnit(name);
    const unitEl = $(row, '.metric-unit', HTMLElement);
    if (unit) unitEl.textContent = unit;
    else unitEl.remove();
    const line = $(row, 'path', SVGPathElement);
    /** @type {MetricView} */
    const view = { row, number, line };
    this.metrics.set(name, view);
    return view;
  }

  /** Shows the inline "set interval" form and moves focus into it. */
  openIntervalForm() {
    this.intervalForm.hidden = false;
    this.el.querySelector('[data-command="set-interval"]')?.setAttribute('aria-expanded', 'true');
    const input = this.intervalForm.elements.namedItem('intervalMs');
    if (input instanceof HTMLInputElement) {
      input.focus();
      input.select();
    }
  }

  /** @param {boolean} restoreFocus */
  closeIntervalForm(restoreFocus) {
    this.intervalForm.hidden = true;
    const toggle = this.el.querySelector('[data-command="set-interval"]');
    toggle?.setAttribute('aria-expanded', 'false');
    if (restoreFocus && toggle instanceof HTMLElement) toggle.focus();
  }
}
