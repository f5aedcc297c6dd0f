import { randomUUID } from 'node:crypto';
import Koa, { type Context, type Next } from 'koa';
import type { Logger } from '../logger.js';
import type { HttpRoute, Metrics } from '../metrics.js';
import { HttpError, toErrorResponse } from './errors.js';
import { Router } from './router.js';

export interface AppDeps {
  logger: Logger;
  metrics: Metrics;
  router: Router;
}

type Middleware = (ctx: Context) => Promise<void>;
type HandleRequest = (this: Koa, ctx: Context, middleware: Middleware) => Promise<void>;
/**
 * Koa's own request handling (not in its types): what answers every response the app did not take
 * over. It is not public API, so package.json pins koa to 3.3.x, and a Koa without it fails here.
 */
const koaHandleRequest = (Koa.prototype as unknown as { handleRequest?: HandleRequest }).handleRequest;
if (typeof koaHandleRequest !== 'function') throw new Error('koa: Application.prototype.handleRequest is missing; this service is written for koa 3');

/**
 * Koa, except that a response the app takes over (`ctx.respond = false`: an event stream) keeps
 * nothing of Koa's alive. Koa watches every response until it finishes, with a listener that holds
 * the request's context: 3 KB of heap per open stream with the watch itself, a third of what an
 * idle stream held, kept for the hours a stream stays open while Koa has nothing left to do for
 * it. Here the middleware runs first, and a response the app did not take over then goes through
 * Koa's own handling, which answers it as it always does (body, HEAD, errors).
 */
class App extends Koa {
  handleRequest(ctx: Context, middleware: Middleware): Promise<void> {
    ctx.res.statusCode = 404; // Koa's default, set before the middleware as Koa's own handling does
    return middleware(ctx).then(
      () => {
        if (ctx.respond === false) return;
        // Koa's handling sets 404 again before its middleware: this one puts back what ours left.
        const status = ctx.res.statusCode;
        return koaHandleRequest!.call(this, ctx, async () => {
          ctx.res.statusCode = status;
        });
      },
      (err: unknown) => koaHandleRequest!.call(this, ctx, () => Promise.reject(err)),
    );
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
// Probes and scrapes arrive every few seconds: keep them out of the info log.
const QUIET_ROUTES = new Set<HttpRoute>(['/healthz', '/readyz', '/metrics', '/events']);

/** Builds the Koa app; never listens (the entry point and the tests do). */
export function createApp({ logger, metrics, router }: AppDeps): Koa {
  // Behind nginx, which appends the address it saw to X-Forwarded-For: only that last entry is
  // trusted (the ones before it are whatever the client sent).
  const app = new App({ proxy: true, maxIpsCount: 1 });
  app.silent = true; // errors are logged by our own middleware, once, with the request id

  app.use(async (ctx: Context, next: Next) => {
    const started = process.hrtime.bigint();
    const incoming = ctx.get('X-Request-Id');
    const requestId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    const route = router.routeName(ctx.path);
    try {
      await next();
    } catch (err) {
      const { status, body, headers } = toErrorResponse(err);
      // An HttpError is an answer we chose (a 504 for a device that did not ack, a 409, a 503):
      // expected, so no stack and no error level. Anything else thrown is a defect.
      if (!(err instanceof HttpError)) logger.error({ err, requestId, route, status }, 'request failed');
      else if (status >= 500) logger.warn({ requestId, route, status, error: body.error }, body.message);
      ctx.status = status;
      ctx.set(headers);
      ctx.body = body;
    }
    // Streams answer through the raw response; its status is the truth.
    const status = ctx.respond === false ? ctx.res.statusCode : ctx.status;
    const method = METHODS.has(ctx.method) ? ctx.method : 'other';
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    metrics.httpRequests.inc({ method, route, status: String(status) });
    metrics.httpDuration.observe({ method, route }, seconds);
    const line = { requestId, method, route, status, ms: Math.round(seconds * 1000) };
    if (QUIET_ROUTES.has(route) && status < 500) logger.debug(line, 'request');
    else logger.info(line, 'request');
  });

  app.use((ctx: Context) => router.dispatch(ctx));
  return app;
}
