import type { Context } from 'koa';
import { DEVICE_ID, DEVICE_ID_RULE, MAX_DEVICE_PAGE } from '../protocol.js';
import type { DeviceCatalog } from '../devices/catalog.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { authenticate, sessionRoutes, type Gate } from './access.js';
import { HttpError } from './errors.js';
import type { Handler } from './router.js';
import { Router } from './router.js';

export interface RouteDeps {
  catalog: DeviceCatalog;
  metrics: Metrics;
  /** Connected and subscribed to the broker, and not shutting down. */
  isReady(): boolean;
  streamEvents: Handler;
  sendCommand: Handler;
  history: Handler;
  bulkHistory: Handler;
  gate: Gate;
  logger: Logger;
}

export function deviceId(raw: string | undefined): string {
  if (raw === undefined || !DEVICE_ID.test(raw)) {
    throw new HttpError(400, 'bad_device', `Device ids must match ${DEVICE_ID_RULE}.`);
  }
  return raw;
}

const LIMIT = /^[0-9]{1,7}$/;

/** `limit` (1 to MAX_DEVICE_PAGE, default MAX_DEVICE_PAGE) and `after` (the last id of the previous page). */
function parsePage(query: URLSearchParams): { limit: number; after: string | undefined } {
  const rawLimit = query.get('limit');
  let limit = MAX_DEVICE_PAGE;
  if (rawLimit !== null) {
    limit = LIMIT.test(rawLimit) ? Number(rawLimit) : Number.NaN;
    if (!(limit >= 1 && limit <= MAX_DEVICE_PAGE)) {
      throw new HttpError(400, 'bad_query', `limit must be a whole number from 1 to ${MAX_DEVICE_PAGE}; got ${JSON.stringify(rawLimit.slice(0, 40))}.`);
    }
  }
  const after = query.get('after') ?? undefined;
  if (after !== undefined && !DEVICE_ID.test(after)) {
    throw new HttpError(400, 'bad_query', `after must be a device id (${DEVICE_ID_RULE}), the last id of the previous page; got ${JSON.stringify(after.slice(0, 70))}.`);
  }
  return { limit, after };
}

export function createRouter(deps: RouteDeps): Router {
  const { catalog, metrics, gate } = deps;
  return new Router()
    .on('/events', /^\/events\/?$/, { GET: deps.streamEvents })
    .on('/api/session', /^\/api\/session\/?$/, sessionRoutes({ gate, metrics, logger: deps.logger }))
    .on('/api/devices', /^\/api\/devices\/?$/, {
      GET: async (ctx) => {
        const principal = await authenticate(ctx, gate, metrics);
        const { limit, after } = parsePage(new URLSearchParams(ctx.querystring));
        ctx.set('Cache-Control', 'no-store');
        ctx.type = 'application/json';
        ctx.body = catalog.page(limit, after, principal.role === 'admin' ? undefined : principal.canSee).body;
      },
    })
    .on('/api/devices/:id', /^\/api\/devices\/([^/]+)\/?$/, {
      GET: async (ctx, [id]) => {
        const principal = await authenticate(ctx, gate, metrics);
        const wanted = deviceId(id);
        // Ungranted is "never seen": its existence is not revealed.
        const device = principal.canSee(wanted) ? catalog.fragment(wanted) : undefined;
        if (!device) throw new HttpError(404, 'unknown_device', `No device "${id}" has been seen.`);
        ctx.set('Cache-Control', 'no-store');
        ctx.type = 'application/json';
        ctx.body = device;
      },
    })
    .on('/api/devices/:id/commands', /^\/api\/devices\/([^/]+)\/commands\/?$/, { POST: deps.sendCommand })
    .on('/api/devices/:id/history', /^\/api\/devices\/([^/]+)\/history\/?$/, { GET: deps.history })
    .on('/api/history', /^\/api\/history\/?$/, { GET: deps.bulkHistory })
    .on('/healthz', /^\/healthz$/, {
      GET: (ctx) => {
        ctx.body = { status: 'ok' };
      },
    })
    .on('/readyz', /^\/readyz$/, {
      GET: (ctx: Context) => {
        const ready = deps.isReady();
        ctx.status = ready ? 200 : 503;
        ctx.body = ready ? { status: 'ready' } : { error: 'not_ready', message: 'Not connected to the MQTT broker, or shutting down.' };
      },
    })
    .on('/metrics', /^\/metrics$/, {
      GET: async (ctx) => {
        ctx.type = metrics.registry.contentType;
        ctx.body = await metrics.registry.metrics();
      },
    });
}
