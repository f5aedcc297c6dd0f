// `GET /api/devices/:id/history`: a device's recent past for charts (see src/devices/history.ts),
// filtered by the caller's grants like every other device path, and cached for a second per
// device and question. `GET /api/history?devices=a,b,…`: the same for up to 100 devices in one
// answer and one scan of the log, so a page opening with a grid of cards sends one request per
// hundred cards instead of one per card (nginx allows 20 a second per address, bursts of 40).
import type { Context } from 'koa';
import {
  DEFAULT_HISTORY_POINTS,
  DEFAULT_HISTORY_WINDOW_MS,
  MAX_HISTORY_METRICS,
  MAX_HISTORY_POINTS,
  MAX_HISTORY_WINDOW_MS,
  buildHistories,
  type History,
  type HistoryQuery,
} from '../devices/history.js';
import type { DeviceCatalog } from '../devices/catalog.js';
import type { Metrics } from '../metrics.js';
import { DEVICE_ID, DEVICE_ID_RULE, METRIC_NAME } from '../protocol.js';
import type { HubEvent } from '../sse/event.js';
import { authenticate, type Gate } from './access.js';
import { HttpError } from './errors.js';
import type { Handler } from './router.js';
import { deviceId } from './routes.js';

export interface HistoryDeps {
  catalog: DeviceCatalog;
  gate: Gate;
  metrics: Metrics;
  /** What the log retains and has delivered, oldest first, and the id of its last entry. */
  retained(): { entries: Iterable<HubEvent>; until: string | null };
  now?: () => number;
}

const CACHE_MS = 1_000;
const CACHE_SIZE = 256;
const EPOCH_MS = /^[0-9]{13}$/;
const POINTS = /^[0-9]{1,5}$/;

function bad(message: string): HttpError {
  return new HttpError(400, 'bad_query', message);
}

/** The question in the query string, checked: `since` (epoch ms or an ISO 8601 time), `metrics`, `points`. */
export function parseHistoryQuery(device: string, query: URLSearchParams, now: number): HistoryQuery {
  let from = now - DEFAULT_HISTORY_WINDOW_MS;
  const since = query.get('since');
  if (since !== null) {
    const parsed = EPOCH_MS.test(since) ? Number(since) : /^\d{4}-\d\d-\d\dT/.test(since) ? Date.parse(since) : Number.NaN;
    if (!Number.isFinite(parsed)) throw bad(`since must be epoch milliseconds (13 digits) or an ISO 8601 time; got ${JSON.stringify(since.slice(0, 40))}.`);
    if (parsed >= now) throw bad('since must be in the past.');
    // Further back than the bound is the bound: the answer's `from` says where it starts.
    from = Math.max(parsed, now - MAX_HISTORY_WINDOW_MS);
  }
  let metrics: Set<string> | undefined;
  const names = query.get('metrics');
  if (names !== null) {
    const list = names.split(',').filter((n) => n !== '');
    const wrong = list.find((n) => !METRIC_NAME.test(n));
    if (list.length === 0 || list.length > MAX_HISTORY_METRICS || wrong !== undefined) {
      throw bad(`metrics must be 1 to ${MAX_HISTORY_METRICS} metric names ([A-Za-z0-9_.-]{1,64}) separated by commas${wrong === undefined ? '' : `; got ${JSON.stringify(wrong.slice(0, 70))}`}.`);
    }
    metrics = new Set(list);
  }
  let points = DEFAULT_HISTORY_POINTS;
  const rawPoints = query.get('points');
  if (rawPoints !== null) {
    points = POINTS.test(rawPoints) ? Number(rawPoints) : Number.NaN;
    if (!(points >= 2 && points <= MAX_HISTORY_POINTS)) throw bad(`points must be a whole number from 2 to ${MAX_HISTORY_POINTS}; got ${JSON.stringify(rawPoints.slice(0, 40))}.`);
  }
  return { device, from, to: now, metrics, points };
}

/** Devices one bulk question may name. */
export const MAX_BULK_HISTORY_DEVICES = 100;

/** The `devices` of a bulk question: 1 to MAX_BULK_HISTORY_DEVICES ids, each once, in the order given. */
export function parseBulkDevices(query: URLSearchParams): string[] {
  const raw = query.get('devices');
  const list = raw === null ? [] : raw.split(',').filter((id) => id !== '');
  const wrong = list.find((id) => !DEVICE_ID.test(id));
  const unique = [...new Set(list)];
  if (list.length === 0 || unique.length > MAX_BULK_HISTORY_DEVICES || wrong !== undefined) {
    throw bad(`devices must be 1 to ${MAX_BULK_HISTORY_DEVICES} device ids (${DEVICE_ID_RULE}) separated by commas${wrong === undefined ? '' : `; got ${JSON.stringify(wrong.slice(0, 70))}`}.`);
  }
  return unique;
}

const NOT_SEEN = (device: string) => new HttpError(404, 'unknown_device', `No device "${device}" has been seen.`);

/**
 * Both routes: the question checked, then the answer from the cache or one scan of the log.
 * `answer` gets the histories of the devices the caller may see and that were seen, in the order
 * asked, and makes the body.
 */
function historyRoute(
  deps: HistoryDeps,
  ask: (ctx: Context, params: string[]) => string[],
  answer: (asked: string[], histories: History[], until: string | null) => unknown,
): Handler {
  const now = deps.now ?? Date.now;
  const cache = new Map<string, { at: number; body: string }>();
  return async (ctx: Context, params) => {
    const principal = await authenticate(ctx, deps.gate, deps.metrics);
    const asked = ask(ctx, params);
    const at = now();
    const search = new URLSearchParams(ctx.querystring);
    const shape = parseHistoryQuery('', search, at);
    // Ungranted is "never seen", as for /api/devices/:id.
    const visible = asked.filter((device) => principal.canSee(device));
    // One answer per second per question: the window's start rounded to it, so that pages
    // opening together share one scan.
    const key = `${visible.join(',')}|${Math.floor(shape.from / CACHE_MS)}|${shape.points}|${shape.metrics ? [...shape.metrics].sort().join(',') : '*'}`;
    let hit = cache.get(key);
    if (!hit || at - hit.at >= CACHE_MS) {
      const { entries, until } = deps.retained();
      const histories = visible.length === 0 ? [] : buildHistories(visible.map((device) => ({ ...shape, device })), entries, until);
      const known = histories.filter((h) => deps.catalog.fragment(h.device) !== undefined || h.oldest !== null);
      hit = { at, body: JSON.stringify(answer(asked, known, until)) };
      cache.delete(key);
      cache.set(key, hit);
      while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'application/json';
    ctx.body = hit.body;
  };
}

/** `GET /api/devices/:id/history`: one device; a 404 when the caller may not see it or it was never seen. */
export function createHistoryHandler(deps: HistoryDeps): Handler {
  return historyRoute(
    deps,
    (_ctx, [id]) => [deviceId(id)],
    ([device], [history]) => {
      if (!history) throw NOT_SEEN(device!);
      return history;
    },
  );
}

/**
 * `GET /api/history?devices=a,b,…`: many devices, one scan. Devices the caller may not see, or
 * that were never seen, are left out of `devices` (which is which is not told).
 */
export function createBulkHistoryHandler(deps: HistoryDeps): Handler {
  return historyRoute(
    deps,
    (ctx) => parseBulkDevices(new URLSearchParams(ctx.querystring)),
    (_asked, histories, until) => ({ until, devices: histories }),
  );
}
