// @ts-check
// The live stream: one browser EventSource, and what its lifecycle means for the indicator.
//
// The browser reconnects by itself after a network error or a 200 stream that ends, and sends
// Last-Event-ID so the server can replay what was missed. We never close() it on errors. Only a
// permanent failure (readyState CLOSED: a non-200 answer or wrong content type) needs a new
// EventSource, with backoff; that one cannot send the header, so the last id goes in the URL.

import { POSITION_EVENT, SSE_EVENTS } from './protocol.js';

/** @typedef {'connecting' | 'live' | 'reconnecting' | 'resumed' | 'reset'} ConnectionState */

/**
 * Each gets the event's data and its id (to join it with a history answer).
 * @typedef {object} StreamHandlers
 * @property {(data: any, id: string) => void} snapshot
 * @property {(data: any, id: string) => void} telemetry
 * @property {(data: any, id: string) => void} status
 * @property {(data: any, id: string) => void} alert
 * @property {(data: any, id: string) => void} command
 * @property {(data: any) => void} upstream
 * @property {(data: any) => void} reset
 * @property {(data: any) => void} busy
 */

/** Why the server (or nginx in front of it) turned the stream away, as a person would say it. */
/** @type {Record<string, string>} */
const BUSY_TEXT = {
  shutdown: 'Server restarting',
  capacity: 'Server at its stream limit',
  unavailable: 'Service unreachable',
  limited: 'Too many streams from this address',
};

const EVENT_NAMES = SSE_EVENTS;

/** How long "resumed" / "reset" stay on the indicator before it settles on "live". */
const TRANSIENT_MS = 4000;
/** After reopening, wait this long for a snapshot before concluding the server resumed. */
const RESUME_GRACE_MS = 1500;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

export class Connection {
  /**
   * @param {string} url
   * @param {StreamHandlers} handlers
   * @param {(state: ConnectionState, detail: string) => void} onState
   * @param {() => void} onEvent called for every event that carries data (not `busy`)
   * @param {() => Promise<boolean>} [shouldStop] asked when the browser gave up on the stream
   *   (an error status, such as a 401 when the session ended): true means do not reopen it
   */
  constructor(url, handlers, onState, onEvent, shouldStop = async () => false) {
    this.url = url;
    this.shouldStop = shouldStop;
    this.handlers = handlers;
    this.onState = onState;
    this.onEvent = onEvent;
    /** @type {EventSource | null} */
    this.source = null;
    /** @type {ConnectionState} */
    this.state = 'connecting';
    /** The newest event id seen, for a fresh EventSource after a permanent failure. */
    this.lastEventId = '';
    /** Set by an error; the first event after reopening tells a resume from a reload. */
    this.recovering = false;
    /** A `reset` arrived and its snapshot has not yet. */
    this.resetPending = false;
    this.attempts = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.stateTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.reopenTimer = undefined;
  }

  start() {
    this.#open();
  }

  #open() {
    const url = this.lastEventId ? `${this.url}?lastEventId=${encodeURIComponent(this.lastEventId)}` : this.url;
    const es = new EventSource(url);
    this.source = es;
    es.addEventListener('open', () => this.#onOpen(es));
    es.addEventListener('error', () => this.#onError(es));
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (e) => this.#onMessage(name, /** @type {MessageEvent} */ (e)));
    }
    // A position carries nothing to show; its id is where a fresh EventSource must resume from
    // after a permanent failure (the browser's own reconnects track it by themselves).
    es.addEventListener(POSITION_EVENT, (e) => {
      const id = /** @type {MessageEvent} */ (e).lastEventId;
      if (e.target === this.source && id) this.lastEventId = id;
    });
  }

  /** @param {EventSource} es */
  #onOpen(es) {
    // Without an id to resume from, the server always starts with a snapshot: wait for it.
    if (es !== this.source || !this.recovering || !this.lastEventId) return;
    // Stay "reconnecting" until the first event says what happened; a quiet stream with no
    // snapshot after a short grace means the server resumed with nothing to replay.
    this.#later(RESUME_GRACE_MS, () => {
      if (!this.recovering || es.readyState !== EventSource.OPEN) return;
      this.recovering = false;
      this.#set('resumed', 'Reconnected, nothing missed', true);
    });
  }

  /** @param {EventSource} es */
  #onError(es) {
    if (es !== this.source) return;
    this.recovering = true;
    if (es.readyState === EventSource.CLOSED) {
      // Permanent failure: the browser will not retry this one. Start another, with backoff.
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempts);
      const delay = Math.round(base * (0.5 + Math.random() * 0.5));
      this.attempts++;
      this.#set('reconnecting', `Connection failed, retrying in ${Math.ceil(delay / 1000)} s`);
      clearTimeout(this.reopenTimer);
      const timer = setTimeout(() => this.#open(), delay);
      this.reopenTimer = timer;
      // Asked meanwhile: a signed-out page goes to sign in instead of reopening.
      void this.shouldStop().then((stop) => {
        if (stop) clearTimeout(timer);
      }, () => undefined);
    } else if (this.state !== 'reconnecting') {
      // Already reconnecting (e.g. after `busy`): keep the more specific reason on screen.
      this.#set('reconnecting', 'Connection lost');
    }
  }

  /**
   * @param {(typeof EVENT_NAMES)[number]} name
   * @param {MessageEvent} e
   */
  #onMessage(name, e) {
    if (e.target !== this.source) return;
    /** @type {any} */
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      console.warn(`ignored a ${name} event whose data is not JSON`);
      return;
    }
    if (name === 'busy') {
      const secs = Math.max(1, Math.round((Number(data?.retryMs) || 0) / 1000));
      this.recovering = true;
      this.#set('reconnecting', `${BUSY_TEXT[String(data?.reason)] ?? 'Server busy'}, retrying in about ${secs} s`);
      this.handlers.busy(data);
      return;
    }
    if (e.lastEventId) this.lastEventId = e.lastEventId;
    this.attempts = 0;
    this.onEvent();

    if (name === 'reset') {
      this.resetPending = true;
      this.recovering = false;
      this.#set('reset', 'Could not resume: state reloaded', true);
    } else if (name === 'snapshot') {
      if (this.resetPending) {
        this.resetPending = false;
        // Keep showing "reset" for its full time; it settles on "live" by itself.
      } else if (this.state !== 'live') {
        this.#set('live', 'Receiving live updates');
      }
      this.recovering = false;
    } else if (this.recovering) {
      this.recovering = false;
      this.#set('resumed', 'Reconnected, missed updates replayed', true);
    } else if (this.state === 'connecting' || this.state === 'reconnecting') {
      this.#set('live', 'Receiving live updates');
    }
    this.handlers[name](data, e.lastEventId);
  }

  /**
   * @param {ConnectionState} state
   * @param {string} detail
   * @param {boolean} [transient] settle on "live" after TRANSIENT_MS
   */
  #set(state, detail, transient = false) {
    clearTimeout(this.stateTimer);
    this.state = state;
    this.onState(state, detail);
    if (transient) {
      this.#later(TRANSIENT_MS, () => {
        if (this.source?.readyState === EventSource.OPEN) this.#set('live', 'Receiving live updates');
      });
    }
  }

  /**
   * @param {number} ms
   * @param {() => void} fn
   */
  #later(ms, fn) {
    clearTimeout(this.stateTimer);
    this.stateTimer = setTimeout(fn, ms);
  }
}
