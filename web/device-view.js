// @ts-check
// The device view (`#/devices/<id>`, `?at=<ms>` for a moment): one chart per metric across the
// width, the window chosen (5 min, 15 min, all the log retains), status changes and alerts marked
// on the same time axis, and the commands with their outcomes. Filled from the device's history,
// then live from the stream: events that arrive while the answer is on its way are kept with their
// ids and added when they are after its `until`, as for the cards.

import { MetricChart } from './chart.js';
import { describeEvent } from './command-text.js';
import { commandLabel, compareMetricNames, formatClock, severityLabel } from './format.js';
import { ChartSeries, isAfter, MAX_WINDOW_MS, reaches, toHistory, WINDOWS, windowFor } from './history-model.js';

/** @typedef {import('./chart.js').Mark} Mark */
/** @typedef {import('./history-model.js').History} History */
/** @typedef {{ name: 'telemetry' | 'status' | 'alert' | 'command', id: string, data: any }} LiveEvent */

/** Points per metric asked for: about one per pixel of a wide screen. */
const POINTS = 1_200;
/** Live points kept beyond the answer in the "all retained" window. */
const MAX_POINTS = 20_000;
const MAX_LISTED = 200;
const LAG_TRIES = 3;

/**
 * @typedef {object} DeviceViewElements
 * @property {HTMLElement} root
 * @property {HTMLElement} title
 * @property {HTMLElement} state
 * @property {HTMLElement} note
 * @property {HTMLElement} charts
 * @property {HTMLOListElement} events
 * @property {HTMLOListElement} commands
 * @property {HTMLFieldSetElement} windows
 */

export class DeviceView {
  /**
   * @param {DeviceViewElements} els
   * @param {() => string | null} position the id of the last event the page has had
   */
  constructor(els, position) {
    this.els = els;
    this.position = position;
    /** @type {string | null} */
    this.device = null;
    /** @type {number | null} */
    this.at = null;
    /** @type {(typeof WINDOWS)[number]} */
    this.window = windowFor(null, 0);
    /** @type {Map<string, ChartSeries>} */
    this.series = new Map();
    /** @type {Map<string, MetricChart>} */
    this.charts = new Map();
    /** @type {{ ts: number | null, state: string }[]} */
    this.status = [];
    /** @type {any[]} */
    this.alerts = [];
    /** Latest event per command id, in the order first seen. */
    /** @type {Map<string, any>} */
    this.commands = new Map();
    /** Live events kept while an answer is awaited; null when none is. */
    /** @type {LiveEvent[] | null} */
    this.waiting = null;
    this.generation = 0;
    this.drawRequested = false;
    this.pointed = false;
    for (const w of WINDOWS) {
      const label = document.createElement('label');
      label.className = 'window-choice';
      const input = document.createElement('input');
      input.type = 'radio';
      input.name = 'window';
      input.value = w.key;
      label.append(input, ` ${w.label}`);
      els.windows.append(label);
    }
    els.windows.addEventListener('change', (e) => {
      const input = e.target;
      if (!(input instanceof HTMLInputElement)) return;
      const w = WINDOWS.find((x) => x.key === input.value);
      if (w && w !== this.window) {
        this.window = w;
        this.at = null;
        void this.load();
      }
    });
    new ResizeObserver(() => {
      for (const chart of this.charts.values()) chart.resize();
    }).observe(els.charts);
  }

  get open() {
    return this.device !== null;
  }

  /**
   * @param {string} device
   * @param {number | null} at a moment to show (device time), or null for now
   */
  show(device, at) {
    const same = device === this.device;
    if (!same) this.#clear();
    this.device = device;
    this.at = at;
    this.window = windowFor(at, Date.now());
    this.els.title.textContent = device;
    this.els.root.hidden = false;
    this.els.root.dataset.deviceId = device;
    for (const input of this.els.windows.querySelectorAll('input')) input.checked = input.value === this.window.key;
    void this.load();
  }

  hide() {
    this.#clear();
    this.device = null;
    this.els.root.hidden = true;
    delete this.els.root.dataset.deviceId;
  }

  /** @param {import('./model.js').DeviceModel | undefined} d */
  showState(d) {
    const state = d?.state ?? 'unknown';
    if (this.els.root.dataset.state !== state) {
      this.els.root.dataset.state = state;
      const text = this.els.state.querySelector('.badge-text');
      if (text) text.textContent = state === 'online' ? 'Online' : state === 'offline' ? 'Offline' : 'Unknown';
    }
  }

  /** Asks for the device's history in the chosen window, and draws it with what came meanwhile. */
  async load() {
    const device = this.device;
    if (device === null) return;
    const generation = ++this.generation;
    this.waiting = [];
    this.els.root.setAttribute('aria-busy', 'true');
    const span = this.window.ms ?? MAX_WINDOW_MS;
    for (let tries = 1; ; tries++) {
      const at = this.position();
      const url = `/api/devices/${encodeURIComponent(device)}/history?since=${Math.round(Date.now() - span)}&points=${POINTS}`;
      /** @type {History | null} */
      let h = null;
      let status = 0;
      try {
        const res = await fetch(url, { cache: 'no-store' });
        status = res.status;
        h = res.ok ? toHistory(await res.json()) : null;
      } catch {
        status = 0;
      }
      if (generation !== this.generation) return;
      if (!h) {
        this.waiting = null;
        this.els.root.removeAttribute('aria-busy');
        this.els.note.textContent = status === 404 ? `No device "${device}" is known to you.` : 'History could not be loaded; live data only.';
        this.#schedule();
        return;
      }
      if (!reaches(h.until, at) && tries < LAG_TRIES) {
        await new Promise((resolve) => setTimeout(resolve, 300));
        if (generation !== this.generation) return;
        continue;
      }
      this.#fill(h);
      return;
    }
  }

  /**
   * A live event for any device; the view takes its own device's.
   * @param {LiveEvent} ev
   */
  live(ev) {
    if (this.device === null || ev.data?.device !== this.device) return;
    if (this.waiting) {
      this.waiting.push(ev);
      return;
    }
    this.#apply(ev);
    this.#schedule();
  }

  /** @param {History} h */
  #fill(h) {
    /** @type {LiveEvent[]} */
    const waiting = this.waiting ?? [];
    this.waiting = null;
    this.els.root.removeAttribute('aria-busy');
    this.series.clear();
    for (const name of Object.keys(h.metrics)) {
      const s = new ChartSeries();
      s.fill(/** @type {import('./history-model.js').Series} */ (h.metrics[name]));
      this.series.set(name, s);
    }
    this.status = h.status.slice();
    this.alerts = h.alerts.slice();
    this.commands.clear();
    for (const c of h.commands) this.#command(c);
    for (const ev of waiting) if (isAfter(ev.id, h.until)) this.#apply(ev);
    const oldest = h.oldest === null ? null : formatClock(h.oldest);
    this.els.note.textContent = `${h.downsampled ? 'Thinned to the lowest and highest reading per interval. ' : ''}${oldest ? `History from ${oldest} (device clock).` : 'No history retained yet.'}`;
    this.pointed = false;
    this.#schedule();
  }

  /** @param {LiveEvent} ev */
  #apply(ev) {
    const data = ev.data;
    if (ev.name === 'telemetry') {
      for (const [name, value] of Object.entries(data.metrics ?? {})) {
        if (typeof value !== 'number' || !Number.isFinite(value)) continue;
        let s = this.series.get(name);
        if (!s) {
          s = new ChartSeries();
          this.series.set(name, s);
        }
        s.add(data.ts, value);
      }
    } else if (ev.name === 'status') this.status.push({ ts: typeof data.ts === 'number' ? data.ts : null, state: String(data.state) });
    else if (ev.name === 'alert') this.alerts.push(data);
    else this.#command(data);
  }

  /** @param {any} c a command event's data */
  #command(c) {
    if (!c || typeof c.id !== 'string') return;
    this.commands.set(c.id, { ...this.commands.get(c.id), ...c });
    if (this.commands.size > MAX_LISTED) this.commands.delete(/** @type {string} */ (this.commands.keys().next().value));
  }

  /** The time axis' span: the window back from the newest reading (device time). */
  /** @returns {[number, number]} */
  #range() {
    let right = -Infinity;
    let left = Infinity;
    for (const s of this.series.values()) {
      if (s.t.length === 0) continue;
      right = Math.max(right, /** @type {number} */ (s.t[s.t.length - 1]));
      left = Math.min(left, /** @type {number} */ (s.t[0]));
    }
    if (!Number.isFinite(right)) right = Date.now();
    const ms = this.window.ms;
    if (ms !== null) return [right - ms, right];
    return [Number.isFinite(left) && left < right ? left : right - 60_000, right];
  }

  #schedule() {
    if (this.drawRequested) return;
    this.drawRequested = true;
    requestAnimationFrame(() => {
      this.drawRequested = false;
      this.#draw();
    });
  }

  #draw() {
    if (this.device === null) return;
    const [left] = this.#range();
    const names = [...this.series.keys()].sort(compareMetricNames);
    for (const name of names) {
      const s = /** @type {ChartSeries} */ (this.series.get(name));
      if (this.window.ms !== null) s.trim(left);
      else if (s.t.length > MAX_POINTS) s.trim(/** @type {number} */ (s.t[s.t.length - MAX_POINTS]));
      let chart = this.charts.get(name);
      if (!chart) {
        const host = document.createElement('div');
        host.className = 'device-chart';
        this.els.charts.append(host);
        chart = new MetricChart(host, name, () => this.#range());
        this.charts.set(name, chart);
      }
      chart.setData(s.t, s.v);
    }
    // Charts in the metric order, whatever order they came in.
    for (const name of names) this.els.charts.append(/** @type {MetricChart} */ (this.charts.get(name)).host);
    const marks = this.#marks();
    for (const chart of this.charts.values()) chart.setMarks(marks);
    if (this.at !== null && !this.pointed && this.charts.size > 0) {
      this.pointed = true;
      this.charts.get(/** @type {string} */ (names[0]))?.pointAt(this.at);
    }
    this.#lists();
  }

  /** @returns {Mark[]} */
  #marks() {
    /** @type {Mark[]} */
    const marks = [];
    for (const s of this.status) {
      if (s.ts !== null) marks.push({ kind: 'status', ts: s.ts, tone: s.state, label: `${s.state === 'online' ? 'Online' : 'Offline'} at ${formatClock(s.ts)}` });
    }
    for (const a of this.alerts) {
      if (typeof a?.ts !== 'number') continue;
      marks.push({ kind: 'alert', ts: a.ts, tone: String(a.severity), label: `${severityLabel(String(a.severity))}: ${String(a.message || a.type)} (${formatClock(a.ts)})` });
    }
    if (this.at !== null) marks.push({ kind: 'moment', ts: this.at, label: `The moment asked for: ${formatClock(this.at)}` });
    return marks;
  }

  /** The status changes and alerts, and the commands, newest first, as text. */
  #lists() {
    /** @type {{ ts: number, el: HTMLLIElement }[]} */
    const items = [];
    for (const s of this.status) {
      if (s.ts === null) continue;
      items.push({ ts: s.ts, el: row(s.ts, s.state === 'online' ? 'Online' : 'Offline', '', 'status', s.state) });
    }
    for (const a of this.alerts) {
      if (typeof a?.ts !== 'number') continue;
      items.push({ ts: a.ts, el: row(a.ts, severityLabel(String(a.severity)), String(a.message || a.type), 'alert', String(a.severity)) });
    }
    items.sort((x, y) => y.ts - x.ts);
    this.els.events.replaceChildren(...items.slice(0, MAX_LISTED).map((i) => i.el));
    const commands = [...this.commands.values()].sort((x, y) => (Number(y.ts) || 0) - (Number(x.ts) || 0));
    this.els.commands.replaceChildren(
      ...commands.map((c) => {
        const outcome = describeEvent(c);
        const el = row(Number(c.ts) || 0, commandLabel(String(c.name)), outcome.text, 'command', outcome.status);
        el.dataset.commandId = c.id;
        return el;
      }),
    );
  }

  #clear() {
    this.generation++;
    this.waiting = null;
    for (const chart of this.charts.values()) chart.destroy();
    this.charts.clear();
    this.els.charts.replaceChildren();
    this.series.clear();
    this.status = [];
    this.alerts = [];
    this.commands.clear();
    this.els.events.replaceChildren();
    this.els.commands.replaceChildren();
    this.els.note.textContent = '';
  }
}

/**
 * One line of a list: its time, what, and details (device text goes in as textContent only).
 * @param {number} ts
 * @param {string} what
 * @param {string} detail
 * @param {string} kind
 * @param {string} tone
 */
function row(ts, what, detail, kind, tone) {
  const li = document.createElement('li');
  li.className = 'timeline-item';
  li.dataset.kind = kind;
  li.dataset.tone = tone;
  const time = document.createElement('time');
  if (ts > 0) {
    time.dateTime = new Date(ts).toISOString();
    time.textContent = formatClock(ts);
  }
  const label = document.createElement('strong');
  label.textContent = what;
  li.append(time, ' ', label);
  if (detail) {
    const p = document.createElement('span');
    p.className = 'timeline-detail';
    p.textContent = ` ${detail}`;
    li.append(p);
  }
  return li;
}
