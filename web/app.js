// @ts-check
// The dashboard: wires the stream into the model and renders the model at most once per frame.
//
// Events are cheap to apply (a few field writes and a ring push); all DOM work happens in one
// requestAnimationFrame callback and touches only cards marked dirty. Off-screen cards get their
// text updated but their sparklines only when they scroll into view.

import { AlertsView } from './alerts.js';
import { Backfill } from './backfill.js';
import { $, CardView } from './cards.js';
import { describeEvent } from './command-text.js';
import { sendCommand, TokenPrompt } from './commands.js';
import { Connection } from './connection.js';
import { DeviceView } from './device-view.js';
import { commandLabel, compareIds, formatAge } from './format.js';
import { parseRoute, routeOf } from './history-model.js';
import { Store } from './model.js';

/** @typedef {import('./model.js').DeviceModel} DeviceModel */
/** @typedef {import('./connection.js').ConnectionState} ConnectionState */

const RESET_NOTICE_MS = 20_000;
const CONNECTION_TEXT = /** @type {const} */ ({
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  resumed: 'Resumed',
  reset: 'State reloaded',
});

const store = new Store();
/** @type {Map<string, CardView>} */
const cards = new Map();
/** @type {WeakMap<Element, CardView>} */
const cardOfElement = new WeakMap();

const devicesMain = $(document, '#devices', HTMLElement);
const grid = $(document, '#grid', HTMLElement);
const emptyState = $(document, '#empty-state', HTMLElement);
const filterSummary = $(document, '#filter-summary', HTMLElement);
const filterInput = $(document, '#filter', HTMLInputElement);
const onlyProblems = $(document, '#only-problems', HTMLInputElement);
const connectionEl = $(document, '#connection', HTMLElement);
const connectionLabel = $(connectionEl, '.connection-label', HTMLElement);
const connectionDetail = $(connectionEl, '.connection-detail', HTMLElement);
const eventAge = $(document, '#event-age', HTMLElement);
const deviceCount = $(document, '#device-count', HTMLElement);
const upstreamBanner = $(document, '#upstream-banner', HTMLElement);
const upstreamText = $(upstreamBanner, 'span', HTMLElement);
const UPSTREAM_TEXT = {
  mqtt: 'Live data paused: broker unreachable',
  redis: 'Live data paused: the shared log (Redis) is unreachable; devices\u2019 data waits in the broker',
};
const resetNotice = $(document, '#reset-notice', HTMLElement);
const alertsView = new AlertsView({
  empty: $(document, '#alerts-empty', HTMLElement),
  count: $(document, '#alert-count', HTMLElement),
  activeSection: $(document, '#active-section', HTMLElement),
  active: $(document, '#active-alarms', HTMLUListElement),
  activeNone: $(document, '#active-none', HTMLElement),
  activeMore: $(document, '#active-more', HTMLElement),
  recentSection: $(document, '#recent-section', HTMLElement),
  recent: $(document, '#alerts', HTMLOListElement),
});
const alertsPanel = $(document, '.alerts-panel', HTMLElement);
const deviceView = new DeviceView(
  {
    root: $(document, '#device-view', HTMLElement),
    title: $(document, '#device-view-title', HTMLElement),
    state: $(document, '#device-view-state', HTMLElement),
    note: $(document, '#device-view-note', HTMLElement),
    charts: $(document, '#device-charts', HTMLElement),
    events: $(document, '#device-events', HTMLOListElement),
    commands: $(document, '#device-commands', HTMLOListElement),
    windows: $(document, '#device-windows', HTMLFieldSetElement),
  },
  () => connection.lastEventId || null,
);
// Cards that come on screen are filled from history, in bulk (see backfill.js).
const backfill = new Backfill({
  begin: (id) => store.pending.begin(id),
  apply: (h) => andRender(() => store.applyHistory(h)),
  nothing: (id) => {
    store.pending.drop(id);
    const d = store.devices.get(id);
    if (d) d.filled = true;
  },
  position: () => connection.lastEventId || null,
});
/** Some card came on screen, or a snapshot asked for all to be filled again. */
let historyWanted = false;
const tokenPrompt = new TokenPrompt($(document, '#token-dialog', HTMLDialogElement));
/** Signed in (the cookie authenticates commands): no token prompt. Open service: the command token. */
let tokens = /** @type {TokenPrompt | null} */ (tokenPrompt);
const account = $(document, '#account', HTMLElement);
const accountName = $(account, '#account-name', HTMLElement);

/** @param {string} reason why: a 401's error code, or `bye` after signing out */
function toSignIn(reason) {
  location.replace(`signin.html?reason=${encodeURIComponent(reason)}`);
}

/**
 * Who is signed in. Resolves true when the page may stream (signed in, or sign-in is off);
 * on a 401 it goes to the sign-in page with the reason, and resolves false.
 * @returns {Promise<boolean>}
 */
async function checkSession() {
  let res;
  try {
    res = await fetch('/api/session', { cache: 'no-store' });
  } catch {
    return true; // the network, not the session: keep retrying the stream
  }
  const body = await res.json().catch(() => null);
  if (res.status === 401) {
    const reason = String(body?.error ?? 'signed_out');
    // Signed in until now and the cookie is gone: signed out in another tab of this browser.
    toSignIn(reason === 'signed_out' && !account.hidden ? 'bye' : reason);
    return false;
  }
  if (res.ok && body?.auth === true) {
    tokens = null;
    accountName.textContent = `${body.user} (${body.role})`;
    account.hidden = false;
  }
  return true;
}

$(account, '#sign-out', HTMLButtonElement).addEventListener('click', async () => {
  await fetch('/api/session', { method: 'DELETE' }).catch(() => undefined);
  toSignIn('bye');
});

const filter = { text: '', onlyProblems: false };
let filterDirty = false;
/** performance.now() of the last event with data, or null before the first. */
/** @type {number | null} */
let lastEventAt = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let resetNoticeTimer;

// ---- rendering ---------------------------------------------------------------------------

/**
 * The page draws at most this often. A hundred devices reading once a second each send an event
 * every 10 ms; a frame for each would restyle and repaint the page 60 times a second for one card
 * at a time. Ten frames a second draw the same values, a tenth of a second later at most.
 */
const RENDER_INTERVAL_MS = 100;
let frameRequested = false;
let lastRender = -Infinity;
function schedule() {
  if (frameRequested) return;
  frameRequested = true;
  const wait = lastRender + RENDER_INTERVAL_MS - performance.now();
  if (wait <= 0) requestAnimationFrame(render);
  else setTimeout(() => requestAnimationFrame(render), wait);
}

function render() {
  frameRequested = false;
  lastRender = performance.now();
  if (store.structureDirty) syncCards();
  for (const id of store.dirty) {
    const d = store.devices.get(id);
    const card = cards.get(id);
    if (d && card) {
      card.update(d);
      showIfMatching(card, d);
    }
  }
  if (deviceView.open && store.dirty.has(/** @type {string} */ (deviceView.device))) deviceView.showState(store.devices.get(/** @type {string} */ (deviceView.device)));
  store.dirty.clear();
  if (historyWanted) askHistory();
  if (filterDirty) {
    filterDirty = false;
    for (const [id, card] of cards) showIfMatching(card, /** @type {DeviceModel} */ (store.devices.get(id)));
  }
  if (store.feedRebuild) {
    store.feedRebuild = false;
    alertsView.replace(store.feed);
  } else if (store.newAlerts.length > 0) {
    alertsView.add(store.newAlerts);
  }
  store.newAlerts = [];
  if (store.alarmsDirty) {
    store.alarmsDirty = false;
    alertsView.showActive(store.activeAlarms());
  }
  if (store.headerDirty) {
    store.headerDirty = false;
    renderHeader();
  }
  renderSummary();
}

/** Creates cards for new devices, drops those of removed ones, keeps DOM order sorted by id. */
function syncCards() {
  store.structureDirty = false;
  for (const [id, card] of cards) {
    if (store.devices.has(id)) continue;
    visibility.unobserve(card.el);
    card.el.remove();
    cards.delete(id);
  }
  for (const id of store.devices.keys()) {
    if (cards.has(id)) continue;
    const card = new CardView(id);
    cards.set(id, card);
    cardOfElement.set(card.el, card);
    store.dirty.add(id);
  }
  // Move only cards that are out of place, so focus inside existing cards is never lost.
  let ref = grid.firstElementChild;
  for (const id of [...cards.keys()].sort(compareIds)) {
    const el = /** @type {CardView} */ (cards.get(id)).el;
    if (el === ref) ref = ref.nextElementSibling;
    else {
      grid.insertBefore(el, ref);
      visibility.observe(el);
    }
  }
}

/** Asks for the history of every card on (or near) the screen not filled since the last snapshot. */
function askHistory() {
  historyWanted = false;
  for (const [id, card] of cards) {
    if (!card.visible || card.el.hidden) continue;
    if (store.devices.get(id)?.filled === false) backfill.want(id);
  }
}

/**
 * @param {CardView} card
 * @param {DeviceModel} d
 */
function showIfMatching(card, d) {
  const show =
    (filter.text === '' || d.id.toLowerCase().includes(filter.text)) &&
    (!filter.onlyProblems || d.state !== 'online' || d.alarms.size > 0);
  if (card.el.hidden === show) card.el.hidden = !show;
}

function renderHeader() {
  const { online, total } = store.counts();
  const strong = document.createElement('strong');
  strong.textContent = String(online);
  deviceCount.replaceChildren(strong, ` of ${total} online`);
  // The shared log first: with it down, nothing new reaches any page whatever the broker does.
  const paused = store.redis === 'down' ? UPSTREAM_TEXT.redis : store.mqtt === 'down' ? UPSTREAM_TEXT.mqtt : '';
  upstreamBanner.hidden = paused === '';
  if (paused !== '' && upstreamText.textContent !== paused) upstreamText.textContent = paused;
  document.body.dataset.upstream = store.mqtt;
  document.body.dataset.redis = store.redis;
}

function renderSummary() {
  let shown = 0;
  for (const card of cards.values()) if (!card.el.hidden) shown++;
  const filtering = filter.text !== '' || filter.onlyProblems;
  const summary = filtering ? `Showing ${shown} of ${cards.size}` : '';
  if (filterSummary.textContent !== summary) filterSummary.textContent = summary;
  const empty = cards.size === 0 ? 'Waiting for devices…' : shown === 0 ? 'No devices match the filter.' : '';
  if (emptyState.textContent !== empty) emptyState.textContent = empty;
  emptyState.hidden = empty === '';
}

// Sparklines of cards far off screen are not drawn until they come near it.
const visibility = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      const card = cardOfElement.get(entry.target);
      if (!card) continue;
      card.visible = entry.isIntersecting;
      if (card.visible) historyWanted = true;
      const d = card.visible && card.sparksStale ? store.devices.get(/** @type {string} */ (card.el.dataset.deviceId)) : undefined;
      if (d) card.drawSparklines(d);
    }
    if (historyWanted) schedule();
  },
  { rootMargin: '400px 0px' },
);

// ---- once a second: ages, expiries ---------------------------------------------------------

function tick() {
  const now = performance.now();
  const wallNow = Date.now();
  const age = lastEventAt === null ? 'No events yet' : `Last event ${formatAge(now - lastEventAt)}`;
  if (eventAge.textContent !== age) eventAge.textContent = age;
  for (const card of cards.values()) card.updateAge(wallNow);
  store.expireCommands(now);
  schedule();
}
setInterval(tick, 1000);

// ---- the stream --------------------------------------------------------------------------

/**
 * @param {ConnectionState} state
 * @param {string} detail
 */
function showConnection(state, detail) {
  connectionEl.dataset.state = state;
  connectionEl.title = detail;
  connectionLabel.textContent = CONNECTION_TEXT[state];
  // Why it is not live, and when it retries, is worth reading without hovering (touch screens).
  connectionDetail.textContent = state === 'reconnecting' && detail ? detail : '';
}

function showResetNotice() {
  resetNotice.hidden = false;
  clearTimeout(resetNoticeTimer);
  resetNoticeTimer = setTimeout(() => (resetNotice.hidden = true), RESET_NOTICE_MS);
}
$(resetNotice, '.notice-dismiss', HTMLButtonElement).addEventListener('click', () => {
  clearTimeout(resetNoticeTimer);
  resetNotice.hidden = true;
});

/** @param {() => void} fn */
const andRender = (fn) => {
  fn();
  schedule();
};

const connection = new Connection(
  '/events',
  {
    snapshot: (data) =>
      andRender(() => {
        store.applySnapshot(data);
        // The stream starts over at the snapshot's position: history is asked for from there.
        backfill.restart();
        historyWanted = true;
        if (deviceView.open) void deviceView.load();
      }),
    telemetry: (data, id) =>
      andRender(() => {
        store.applyTelemetry(data, id);
        deviceView.live({ name: 'telemetry', id, data });
      }),
    status: (data, id) =>
      andRender(() => {
        store.applyStatus(data);
        deviceView.live({ name: 'status', id, data });
      }),
    alert: (data, id) =>
      andRender(() => {
        store.applyAlert(data);
        deviceView.live({ name: 'alert', id, data });
      }),
    command: (data, id) =>
      andRender(() => {
        store.setCommand(data.device, { ...describeEvent(data), name: String(data.name), at: performance.now() });
        deviceView.live({ name: 'command', id, data });
      }),
    upstream: (data) => andRender(() => store.setUpstream(data)),
    reset: () => {
      store.applyReset();
      showResetNotice();
    },
    busy: () => {},
  },
  showConnection,
  () => {
    lastEventAt = performance.now();
  },
  // The browser gave up on the stream (a 401 once the session ended): ask why before retrying.
  async () => !(await checkSession()),
);
void checkSession().then((ok) => {
  if (ok) connection.start();
});

// ---- controls ----------------------------------------------------------------------------

filterInput.addEventListener('input', () => {
  filter.text = filterInput.value.trim().toLowerCase();
  filterDirty = true;
  schedule();
});
onlyProblems.addEventListener('change', () => {
  filter.onlyProblems = onlyProblems.checked;
  filterDirty = true;
  schedule();
});

const severityFilter = $(document, '#severity-filter', HTMLSelectElement);
severityFilter.addEventListener('change', () => {
  alertsPanel.dataset.show = severityFilter.value;
});

// ---- the device view: #/devices/<id>[?at=<ms>] ---------------------------------------------

/** The device whose view was last open, to give its card the focus back. */
/** @type {string | null} */
let cameFrom = null;
function route() {
  const r = parseRoute(location.hash);
  if (r) {
    devicesMain.hidden = true;
    deviceView.show(r.device, r.at);
    deviceView.showState(store.devices.get(r.device));
    cameFrom = r.device;
    $(document, '#device-back', HTMLElement).focus();
    return;
  }
  if (!deviceView.open) return;
  deviceView.hide();
  devicesMain.hidden = false;
  const back = cameFrom === null ? undefined : cards.get(cameFrom);
  const link = back?.el.querySelector('.card-link');
  if (link instanceof HTMLElement) {
    if (back) back.el.hidden = false;
    link.focus();
  } else devicesMain.focus();
  historyWanted = true;
  schedule();
}
window.addEventListener('hashchange', route);
route();

// Escape goes back to the grid (an open dialog or a field's own Escape comes first).
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !deviceView.open || e.defaultPrevented) return;
  if (e.target instanceof HTMLSelectElement || document.querySelector('dialog[open]')) return;
  e.preventDefault();
  location.hash = '#/';
});

// Clicking a device id in the alerts panel narrows the grid to that device.
alertsPanel.addEventListener('click', (e) => {
  const button = e.target instanceof Element ? e.target.closest('[data-filter-device]') : null;
  if (!(button instanceof HTMLElement) || !button.dataset.filterDevice) return;
  filterInput.value = button.dataset.filterDevice;
  filterInput.dispatchEvent(new Event('input'));
  filterInput.focus();
});

/** @param {EventTarget | null} target */
function cardFor(target) {
  const el = target instanceof Element ? target.closest('.card') : null;
  return el ? cardOfElement.get(el) : undefined;
}

grid.addEventListener('click', (e) => {
  const button = e.target instanceof Element ? e.target.closest('button') : null;
  // A click on the card itself, not on one of its controls, opens the device's view.
  if (!button && e.target instanceof Element && !e.target.closest('a, input, form, label')) {
    const opened = cardFor(e.target);
    if (opened) location.hash = routeOf(/** @type {string} */ (opened.el.dataset.deviceId));
    return;
  }
  const card = cardFor(button);
  if (!button || !card) return;
  if (button.dataset.action === 'cancel-interval') return card.closeIntervalForm(true);
  const name = button.dataset.command;
  if (!name) return;
  if (name === 'set-interval') {
    if (card.intervalForm.hidden) card.openIntervalForm();
    else card.closeIntervalForm(false);
    return;
  }
  if (button.getAttribute('aria-disabled') === 'true') return;
  // A reboot takes the device offline: the first click only asks, a second, deliberate one
  // sends (not the second half of a double-click, nor a key held down).
  if (CONFIRM.has(name)) {
    const state = armed.get(button);
    if (!state) return arm(button);
    if (e.detail > 1 || performance.now() - state.at < CONFIRM_MIN_MS) return;
  }
  disarm(button);
  run(/** @type {string} */ (card.el.dataset.deviceId), name, {});
});

/** Commands that disrupt a device, and how long their "confirm" state lasts. */
const CONFIRM = new Set(['reboot']);
const CONFIRM_MS = 4_000;
const CONFIRM_MIN_MS = 400;
/** @type {WeakMap<HTMLElement, { label: string, at: number, timer: ReturnType<typeof setTimeout>, onBlur: () => void }>} */
const armed = new WeakMap();

/** @param {HTMLElement} button */
function arm(button) {
  const label = button.textContent ?? '';
  const onBlur = () => disarm(button);
  button.dataset.armed = 'true';
  // Barely longer than the label: a wider button would shift its neighbours under the pointer.
  button.textContent = `${label}?`;
  button.setAttribute('aria-label', `Confirm ${label.toLowerCase()}: press again`);
  armed.set(button, { label, at: performance.now(), timer: setTimeout(onBlur, CONFIRM_MS), onBlur });
  button.addEventListener('blur', onBlur);
}

/** @param {HTMLElement} button */
function disarm(button) {
  const state = armed.get(button);
  if (!state) return;
  armed.delete(button);
  clearTimeout(state.timer);
  button.removeEventListener('blur', state.onBlur);
  delete button.dataset.armed;
  button.textContent = state.label;
  button.removeAttribute('aria-label');
}

grid.addEventListener('submit', (e) => {
  const form = e.target;
  const card = cardFor(form);
  if (!(form instanceof HTMLFormElement) || !card || form !== card.intervalForm) return;
  e.preventDefault();
  const input = form.elements.namedItem('intervalMs');
  if (!(input instanceof HTMLInputElement) || !input.reportValidity()) return;
  const id = /** @type {string} */ (card.el.dataset.deviceId);
  if (store.devices.get(id)?.inFlight) return;
  card.closeIntervalForm(true);
  run(id, 'set-interval', { intervalMs: Number(input.value) });
});

grid.addEventListener('keydown', (e) => {
  const card = cardFor(e.target);
  if (e.key === 'Escape' && card && !card.intervalForm.hidden && card.intervalForm.contains(/** @type {Node} */ (e.target))) {
    e.preventDefault();
    card.closeIntervalForm(true);
  }
});

/**
 * @param {string} id
 * @param {string} name
 * @param {Record<string, unknown>} params
 */
async function run(id, name, params) {
  const d = store.devices.get(id);
  if (!d || d.inFlight) return; // its buttons are aria-disabled meanwhile
  d.inFlight = true;
  store.setCommand(id, { id: null, name, status: 'pending', text: `Sending ${commandLabel(name).toLowerCase()}…`, at: performance.now() });
  schedule();
  const outcome = await sendCommand(tokens, id, name, params);
  d.inFlight = false;
  store.dirty.add(id);
  store.setCommand(id, { ...outcome, name, at: performance.now() });
  schedule();
}

// The page's state, for a look from the browser's console (and the e2e tests, which compare the
// charts' points with the service's history): `(await import('/app.js')).store`.
export { store };
