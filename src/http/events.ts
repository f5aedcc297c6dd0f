import type { Context } from 'koa';
import type { DeviceCatalog } from '../devices/catalog.js';
import type { Principal } from '../access/access.js';
import type { SseClient } from '../sse/client.js';
import { authenticate, type Gate } from './access.js';
import { HttpError } from './errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Filter } from '../sse/client.js';
import { encodeJsonEvent, encodeRetry, jitter } from '../sse/frame.js';
import type { Hub } from '../sse/hub.js';
import type { Bytes } from '../sse/chunk.js';
import { Snapshots, type SnapshotSource } from '../sse/snapshot.js';
import { parseStreamRequest } from './stream-query.js';
import type { RedisLog } from '../log/redis.js';
import { parseEventId } from '../log/log.js';

export interface StreamDeps {
  hub: Hub;
  catalog: DeviceCatalog;
  metrics: Metrics;
  logger: Logger;
  retryMs: number;
  maxClients: number;
  upstreamUp(): boolean;
  shuttingDown(): boolean;
  /** Who may open a stream and see which devices; open streams are checked again every second. */
  gate: Gate;
  /** Shared mode: the log this replica tails (ids of other replicas may be a little ahead of it). */
  shared?: Pick<RedisLog, 'epoch' | 'head' | 'waitFor' | 'isUp' | 'isLoaded'>;
}

/** How long a resume waits for this replica to read up to an id another replica already gave out. */
const CATCH_UP_MS = 2_000;

type Refusal = 'capacity' | 'shutdown' | 'unavailable';
const REFUSALS: Record<Refusal, { outcome: 'busy' | 'shutting_down'; code: 'busy' | 'shutting_down' | 'unavailable'; message: string }> = {
  capacity: { outcome: 'busy', code: 'busy', message: 'Too many open streams; try again later.' },
  shutdown: { outcome: 'shutting_down', code: 'shutting_down', message: 'The service is shutting down.' },
  unavailable: { outcome: 'busy', code: 'unavailable', message: 'The shared log is not loaded yet.' },
};

const STREAM_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  // no-transform: proxies and CDNs must not compress or rewrite the stream (they buffer to do it).
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  // nginx: pass each chunk on at once, whatever proxy_buffering says.
  'X-Accel-Buffering': 'no',
} as const;

/** An HTTP/1.0 response has no chunked coding: its body ends with the connection, and says so. */
function streamHeaders(ctx: Context): Record<string, string> {
  return ctx.req.httpVersionMajor === 1 && ctx.req.httpVersionMinor === 0 ? { ...STREAM_HEADERS, Connection: 'close' } : { ...STREAM_HEADERS };
}

function wantsEventStream(ctx: Context): boolean {
  return (ctx.get('Accept') || '').includes('text/event-stream');
}

/**
 * A browser's EventSource gives up for good on any non-200 answer, so a refused stream is a short
 * 200 stream with a long, jittered retry and a `busy` event; other clients get a plain 503.
 */
function refuse(ctx: Context, deps: StreamDeps, reason: Refusal): void {
  const retryMs = jitter(reason === 'capacity' ? Math.max(deps.retryMs * 5, 15_000) : deps.retryMs);
  const refusal = REFUSALS[reason];
  deps.metrics.sseConnections.inc({ outcome: refusal.outcome });
  if (!wantsEventStream(ctx)) {
    throw new HttpError(503, refusal.code, refusal.message, {
      'Retry-After': String(Math.ceil(retryMs / 1000)),
    });
  }
  ctx.set(streamHeaders(ctx));
  ctx.status = 200;
  ctx.body = Buffer.concat([encodeRetry(retryMs), encodeJsonEvent('busy', undefined, { retryMs, reason })]);
  deps.metrics.eventsDelivered.inc({ event: 'busy' });
}

/** The catalog as a snapshot source: the encoded device list plus the upstream state. */
function snapshotSource(deps: Pick<StreamDeps, 'catalog' | 'upstreamUp' | 'shared'>): SnapshotSource {
  return {
    get version() {
      return deps.catalog.version;
    },
    upstream: () => ({
      mqtt: deps.upstreamUp() ? 'up' : 'down',
      ...(deps.shared && { redis: deps.shared.isUp ? 'up' : 'down' }),
    }),
    data: (upstream, devices) => deps.catalog.snapshotData(upstream, devices),
  };
}

/** How often open streams are held against their session and grants (well within a heartbeat). */
const RECHECK_MS = 1_000;

export function createStreamHandler(deps: StreamDeps) {
  const { hub, metrics, gate } = deps;
  const snapshots = new Snapshots(hub, snapshotSource(deps), metrics.snapshotBuild);
  // Streams of signed-in users and tokens: closed when the session ends, the user is removed,
  // or their grants change (the browser then learns why from /api/session).
  const watched = new Map<SseClient, Principal>();
  const recheck = gate.enabled ? setInterval(() => {
    for (const [client, principal] of watched) {
      if (client.isClosed) {
        watched.delete(client);
        continue;
      }
      const refusal = gate.recheck(principal);
      if (refusal === undefined) continue;
      metrics.authRefusals.inc({ reason: refusal });
      watched.delete(client);
      client.close('signed_out');
    }
  }, RECHECK_MS).unref() : undefined;

  const handler = async function streamEvents(ctx: Context): Promise<void> {
    const principal = await authenticate(ctx, gate, metrics).catch((err: unknown) => {
      metrics.sseConnections.inc({ outcome: 'unauthorized' });
      throw err;
    });
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
    const shared = deps.shared;
    if (shared) {
      // Before the shared log is loaded (first, or again after it restarted) this replica has no
      // consistent view and ids to give.
      if (!shared.isLoaded) return refuse(ctx, deps, 'unavailable');
      // An id another replica gave out, not read here yet: wait (briefly) until it is.
      const id = request.lastEventId === undefined ? undefined : parseEventId(request.lastEventId);
      if (id && id.epoch === shared.epoch && id.pos > shared.head) await shared.waitFor(id.pos, CATCH_UP_MS);
      if (deps.shuttingDown()) return refuse(ctx, deps, 'shutdown');
      // The wait ends early when the log is loaded again: come back once it is.
      if (!shared.isLoaded) return refuse(ctx, deps, 'unavailable');
    }

    const first: Buffer[] = [encodeRetry(jitter(deps.retryMs))];
    let rest: (readonly Bytes[])[] = [];
    let after = hub.head;
    let outcome: 'opened' | 'resumed' | 'reset' = 'opened';
    // What this user may see, applied to the replay and the live events alike; the snapshot is
    // built from the granted devices (asking for an ungranted one gives an empty stream, never its data).
    const admin = principal.role === 'admin';
    const filter = admin ? request.filter : { ...request.filter, grant: principal.canSee };
    const resume = request.lastEventId === undefined ? undefined : hub.resume(request.lastEventId, filter);
    if (resume?.kind === 'replay') {
      outcome = 'resumed';
      for (const event of resume.events) first.push(event.frame);
      metrics.replayed.inc(resume.events.length);
      for (const event of resume.events) metrics.eventsDelivered.inc({ event: event.name });
    } else {
      // Only a snapshot needs the granted ids (a walk over every device): not a replay.
      const granted = admin
        ? request.filter
        : { ...request.filter, devices: request.filter.devices ? new Set([...request.filter.devices].filter(principal.canSee)) : deps.catalog.visible(principal.canSee) };
      const opening = snapshots.open(granted);
      if (resume?.kind === 'reset') {
        outcome = 'reset';
        metrics.resets.inc();
        // With the shared log a reset other than a lost log should be rare: say where this replica stood.
        if (shared && resume.reason !== 'history-lost') {
          deps.logger.info({ requestId: ctx.state.requestId, reason: resume.reason, lastEventId: request.lastEventId, hubHead: hub.head, logHead: shared.head, snapshotAt: opening.seq }, 'stream reset');
        }
        first.push(encodeJsonEvent('reset', hub.idOf(opening.seq), { reason: resume.reason }));
        metrics.eventsDelivered.inc({ event: 'reset' });
      }
      rest = opening.parts;
      after = opening.after;
      metrics.eventsDelivered.inc({ event: 'snapshot' });
    }
    metrics.sseConnections.inc({ outcome });

    ctx.respond = false;
    const { req, res } = ctx;
    // A pipelined request has no socket yet (it gets one when the response before it is done).
    req.socket?.setNoDelay(true);
    req.socket?.setKeepAlive(true, 30_000);
    res.writeHead(200, { ...streamHeaders(ctx), 'X-Request-Id': String(ctx.state.requestId ?? '') });
    // The head goes out now (or as soon as the connection is this response's); the client writes
    // its opening, in pieces, after it.
    res.flushHeaders();
    const client = hub.attach(res, filter, after, [first, ...rest]);
    if (principal.via !== 'open') watched.set(client, principal);
    deps.logger.debug({ requestId: ctx.state.requestId, outcome, clients: hub.clientCount, user: principal.user }, 'stream opened');
  };
  return Object.assign(handler, { stop: () => clearInterval(recheck) });
}
