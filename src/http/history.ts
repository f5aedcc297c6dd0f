// `GET /api/devices/:id/history`: a device's recent past for charts (see src/devices/history.ts),
// filtered by the caller's grants like every other device path, and cached for a second per
// device and question, so a page full of cards opening at once costs one scan per device.
import type { Context } from 'koa';
import {
  DEFAULT_HISTORY_POINTS,
  DEFAULT_HISTORY_WINDOW_MS,
  MAX_HISTORY_METRICS,
  MAX_HISTORY_POINTS,
  MAX_HISTORY_WINDOW_MS,
  buildHistory,
  type HistoryQuery,
} from '../devices/history.js';
import type { DeviceCatalog } from '../devices/catalog.js';
import type { Metrics } from '../metrics.js';
import { METRIC_NAME } from '../protocol.js';
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

export function createHistoryHandler(deps: HistoryDeps): Handler {
  const now = deps.now ?? Date.now;
  const cache = new Map<string, { at: number; body: string }>();
  return async (ctx: Context, [id]) => {
    const principal = await authenticate(ctx, deps.gate, deps.metrics);
    const device = deviceId(id);
    const at = now();
    const query = parseHistoryQuery(device, new URLSearchParams(ctx.querystring), at);
    // Ungranted is "never seen", as for /api/devices/:id.
    if (!principal.canSee(device)) throw new HttpError(404, 'unknown_device', `No device "${device}" has been seen.`);
    // One answer per second per question: the window's start rounded to it, so that pages
    // opening together share one scan.
    const key = `${device}|${Math.floor(query.from / CACHE_MS)}|${query.points}|${query.metrics ? [...query.metrics].sort().join(',') : '*'}`;
    let hit = cache.get(key);
    if (!hit || at - hit.at >= CACHE_MS) {
      const { entries, until } = deps.retained();
      const history = buildHistory(query, entries, until);
      const known = deps.catalog.fragment(device) !== undefined || history.oldest !== null;
      if (!known) throw new HttpError(404, 'unknown_device', `No device "${device}" has been seen.`);
      hit = { at, body: JSON.stringify(history) };
      cache.delete(key);
      cache.set(key, hit);
      while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'application/json';
    ctx.body = hit.body;
  };
}
