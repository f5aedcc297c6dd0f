import { createServer, type RequestListener, type Server } from 'node:http';
import { answerClientErrors } from './client-error.js';

/**
 * The request head may be this large (request line and every header line together). nginx's
 * `large_client_header_buffers 2 80k` (plus its 1 KiB first buffer) is the most it forwards, so
 * a request nginx accepts never becomes a 431 here: the documented 1,000-device filter
 * (~72 KB of URL in the `device=a&device=b` form) fits both.
 */
export const MAX_HEADER_BYTES = 192 * 1024;

export interface ServerLimits {
  /** The longest a client may take to send a whole request, head and body (0 < n). */
  requestTimeoutMs: number;
}

/** Idle time between requests on a kept-alive connection: above common load balancers' 60 s. */
const KEEP_ALIVE_MS = 65_000;
/** The head alone: nginx's client_header_timeout is 60 s; half of it, never past the request bound. */
const HEADERS_TIMEOUT_MS = 30_000;

/**
 * The one HTTP server of the service, with every limit and timeout: the entry point and the
 * tests build it here, so what the tests exercise is what runs.
 *
 * Node's requestTimeout bounds receiving the request only (head and body), so a body trickled
 * a byte at a time is cut with a 408 while a stream answered for hours is not; Node checks it
 * every connectionsCheckingInterval, so that runs often enough for the bound to hold within ~10 %.
 */
export function createHttpServer(listener: RequestListener, limits: ServerLimits): Server {
  const requestTimeout = limits.requestTimeoutMs;
  const server = createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    requestTimeout,
    headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeout),
    keepAliveTimeout: KEEP_ALIVE_MS,
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(requestTimeout / 10))),
  }, listener);
  answerClientErrors(server);
  return server;
}
