// @ts-check
// Fills the cards' sparklines from history: the devices whose cards come on screen are asked for
// in bulk (GET /api/history, up to 100 devices an answer), one request at a time, so a page of a
// hundred cards costs one request and a thousand devices scrolled through cost a few, well under
// nginx's limit on /api/ (20 a second per address). No DOM here: the page says which devices it
// wants, and gets each answer through `apply`.

import { reaches, toHistory } from './history-model.js';
import { SPARK_WINDOW_MS } from './ring.js';

/** @typedef {import('./history-model.js').History} History */

/** Devices in one request: the service's bound for GET /api/history. */
export const BULK_DEVICES = 100;
/** Points per metric: a 5-minute sparkline at one reading a second, thinned beyond. */
const POINTS = 300;
/** An answer that lags the stream is asked again this often at most, then taken as it is. */
const MAX_TRIES = 4;
const RETRY_MS = 400;
const ERROR_RETRY_MS = 3_000;

/**
 * @typedef {object} BackfillDeps
 * @property {(device: string) => void} begin  start keeping the device's live readings
 * @property {(h: History) => void} apply      the answer for one device
 * @property {(device: string) => void} nothing the device has no history to show (left out of the answer)
 * @property {() => string | null} position    the id of the last event the page has had
 * @property {(url: string) => Promise<Response>} [fetch]
 */

export class Backfill {
  /** @param {BackfillDeps} deps */
  constructor(deps) {
    this.deps = deps;
    this.fetch = deps.fetch ?? ((url) => fetch(url, { cache: 'no-store' }));
    /** Devices to ask for, in the order they came on screen. */
    /** @type {Set<string>} */
    this.queue = new Set();
    /** Devices of the request out now. */
    /** @type {Set<string>} */
    this.asking = new Set();
    /** @type {Map<string, number>} */
    this.tries = new Map();
    this.running = false;
    /** Bumped by a snapshot: answers to requests made before it are dropped. */
    this.generation = 0;
  }

  /** @param {string} device */
  want(device) {
    if (this.asking.has(device) || this.queue.has(device)) return;
    this.queue.add(device);
    void this.#run();
  }

  /** A new snapshot: whatever was asked before is asked again when wanted. */
  restart() {
    this.generation++;
    this.queue.clear();
    this.asking.clear();
    this.tries.clear();
  }

  async #run() {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.size > 0) {
        const devices = [...this.queue].slice(0, BULK_DEVICES);
        for (const d of devices) {
          this.queue.delete(d);
          this.asking.add(d);
          this.deps.begin(d);
        }
        const wait = await this.#ask(devices);
        for (const d of devices) this.asking.delete(d);
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * @param {string[]} devices
   * @returns {Promise<number>} how long to wait before the next request
   */
  async #ask(devices) {
    const generation = this.generation;
    const at = this.deps.position();
    const since = Date.now() - SPARK_WINDOW_MS;
    const url = `/api/history?devices=${devices.map(encodeURIComponent).join(',')}&since=${Math.round(since)}&points=${POINTS}`;
    /** @type {any} */
    let body = null;
    let status = 0;
    let retryAfter = 0;
    try {
      const res = await this.fetch(url);
      status = res.status;
      retryAfter = Number(res.headers.get('Retry-After')) || 0;
      body = await res.json().catch(() => null);
    } catch {
      status = 0;
    }
    if (generation !== this.generation) return 0;
    if (status !== 200 || !body || !Array.isArray(body.devices)) {
      // Refused (rate limit, a restart): these devices are asked again after a pause.
      for (const d of devices) this.queue.add(d);
      return status === 429 ? Math.max(1, retryAfter) * 1000 : ERROR_RETRY_MS;
    }
    const answered = new Set();
    let lagging = false;
    for (const raw of body.devices) {
      const h = toHistory(raw);
      if (!h || !devices.includes(h.device)) continue;
      answered.add(h.device);
      const tries = (this.tries.get(h.device) ?? 0) + 1;
      // Served by a replica that has not read as far as this page's stream: it lacks readings the
      // page did not get live either. Asked again shortly; after a few tries, taken as it is.
      if (!reaches(h.until, at) && tries < MAX_TRIES) {
        this.tries.set(h.device, tries);
        this.queue.add(h.device);
        lagging = true;
        continue;
      }
      this.tries.delete(h.device);
      this.deps.apply(h);
    }
    for (const d of devices) if (!answered.has(d)) this.deps.nothing(d);
    return lagging ? RETRY_MS : 0;
  }
}
