import type { Context } from 'koa';
import type { DeviceStore } from '../devices/store.js';
import { HttpError } from './errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Filter } from '../sse/client.js';
import { encodeFrame, encodeJsonEvent, encodeRetry, jitter } from '../sse/frame.js';
import type { Hub } from '../sse/hub.js';
import { parseStreamRequest } from './stream-query.js';

export interface StreamDeps {
  hub: Hub;
  store: DeviceStore;
  metrics: Metrics;
  logger: Logger;
  retryMs: number;
  maxClients: number;
  upstreamUp(): boolean;
  shuttingDown(): boolean;
}

const STREAM_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  // no-transform: proxies and CDNs must not compress or rewrite the stream (they buffer to do it).
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  // nginx: pass each chunk on at once, whatever proxy_buffering says.
  'X-Accel-Buffering': 'no',
} as const;

function wantsEventStream(ctx: Context): boolean {
  return (ctx.get('Accept') || '').includes('text/event-stream');
}

/**
 * A browser's EventSource gives up for good on any non-200 answer, so a refused stream is a short
 * 200 stream with a long, jittered retry and a `busy` event; other clients get a plain 503.
 */
function refuse(ctx: Context, deps: StreamDeps, reason: 'capacity' | 'shutdown'): void {
  const retryMs = jitter(reason === 'capacity' ? Math.max(deps.retryMs * 5, 15_000) : deps.retryMs);
  deps.metrics.sseConnections.inc({ outcome: reason === 'capacity' ? 'busy' : 'shutting_down' });
  if (!wantsEventStream(ctx)) {
    const message = reason === 'capacity' ? 'Too many open streams; try again later.' : 'The service is shutting down.';
    throw new HttpError(503, reason === 'capacity' ? 'busy' : 'shutting_down', message, {
      'Retry-After': String(Math.ceil(retryMs / 1000)),
    });
  }
  ctx.set(STREAM_HEADERS);
  ctx.status = 200;
  ctx.body = Buffer.concat([encodeRetry(retryMs), encodeJsonEvent('busy', undefined, { retryMs, reason })]);
  deps.metrics.eventsDelivered.inc({ event: 'busy' });
}

export function createSnapshotter(deps: Pick<StreamDeps, 'store' | 'upstreamUp'>) {
  let cached: { key: string; json: string } | undefined;
  /** The snapshot's data; the unfiltered one is built once per state change, not per client. */
  return function snapshotJson(filter: Filter): string {
    const mqtt = deps.upstreamUp() ? 'up' : 'down';
    if (filter.devices !== null) return JSON.stringify({ devices: deps.store.list(filter.devices), mqtt });
    const key = `${deps.store.version}:${mqtt}`;
    if (cached?.key !== key) cached = { key, json: JSON.stringify({ devices: deps.store.list(), mqtt }) };
    return cached.json;
  };
}

export function createStreamHandler(deps: StreamDeps) {
  const snapshotJson = createSnapshotter(deps);
  const { hub, metrics } = deps;

  return function streamEvents(ctx: Context): void {
    const header = ctx.headers['last-event-id'];
    let request;
    try {
      request = parseStreamRequest(new URLSearchParams(ctx.querystring), typeof header === 'string' ? header : undefined);
    } catch (err) {
      metrics.sseConnections.inc({ outcome: 'bad_request' });
      throw err;
    }
    if (deps.shuttingDown()) return refuse(ctx, deps, 'shutdown');
    if (hub.clientCount >= deps.maxClients) return refuse(ctx, deps, 'capacity');

    const parts: Buffer[] = [encodeRetry(jitter(deps.retryMs))];
    let outcome: 'opened' | 'resumed' | 'reset' = 'opened';
    const resume = request.lastEventId === undefined ? undefined : hub.resume(request.lastEventId, request.filter);
    if (resume?.kind === 'replay') {
      outcome = 'resumed';
      for (const event of resume.events) parts.push(event.frame);
      metrics.replayed.inc(resume.events.length);
      for (const event of resume.events) metrics.eventsDelivered.inc({ event: event.name });
    } else {
      if (resume?.kind === 'reset') {
        outcome = 'reset';
        metrics.resets.inc();
        parts.push(encodeJsonEvent('reset', hub.nextId().id, { reason: resume.reason }));
        metrics.eventsDelivered.inc({ event: 'reset' });
      }
      const data = snapshotJson(request.filter);
      parts.push(Buffer.from(encodeFrame({ event: 'snapshot', id: hub.nextId().id, data }), 'utf8'));
      metrics.eventsDelivered.inc({ event: 'snapshot' });
    }
    metrics.sseConnections.inc({ outcome });

    ctx.respond = false;
    const { req, res } = ctx;
    req.socket.setNoDelay(true);
    req.socket.setKeepAlive(true, 30_000);
    res.writeHead(200, { ...STREAM_HEADERS, 'X-Request-Id': String(ctx.state.requestId ?? '') });
    // The head goes out now; the client writes its chunks to the socket after it.
    res.flushHeaders();
    const client = hub.attach(res, request.filter, hub.head);
    client.write(parts);
    deps.logger.debug({ requestId: ctx.state.requestId, outcome, clients: hub.clientCount }, 'stream opened');
  };
}
