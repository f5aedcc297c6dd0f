import type { Context } from 'koa';
import { DEVICE_ID, DEVICE_ID_RULE } from '../protocol.js';
import type { DeviceStore } from '../devices/store.js';
import type { Metrics } from '../metrics.js';
import { HttpError } from './errors.js';
import type { Handler } from './router.js';
import { Router } from './router.js';

export interface RouteDeps {
  store: DeviceStore;
  metrics: Metrics;
  /** Connected and subscribed to the broker, and not shutting down. */
  isReady(): boolean;
  streamEvents: Handler;
  sendCommand: Handler;
}

export function deviceId(raw: string | undefined): string {
  if (raw === undefined || !DEVICE_ID.test(raw)) {
    throw new HttpError(400, 'bad_device', `Device ids must match ${DEVICE_ID_RULE}.`);
  }
  return raw;
}

export function createRouter(deps: RouteDeps): Router {
  const { store, metrics } = deps;
  return new Router()
    .on('/events', /^\/events\/?$/, { GET: deps.streamEvents })
    .on('/api/devices', /^\/api\/devices\/?$/, {
      GET: (ctx) => {
        ctx.set('Cache-Control', 'no-store');
        ctx.body = store.list();
      },
    })
    .on('/api/devices/:id', /^\/api\/devices\/([^/]+)\/?$/, {
      GET: (ctx, [id]) => {
        const device = store.get(deviceId(id));
        if (!device) throw new HttpError(404, 'unknown_device', `No device "${id}" has been seen.`);
        ctx.set('Cache-Control', 'no-store');
        ctx.body = device;
      },
    })
    .on('/api/devices/:id/commands', /^\/api\/devices\/([^/]+)\/commands\/?$/, { POST: deps.sendCommand })
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
