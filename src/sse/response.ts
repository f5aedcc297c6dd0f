import type { Socket } from 'node:net';

/**
 * What the fan-out engine needs of a streaming response, and nothing more: the engine writes body
 * bytes to the socket itself (see chunk.ts) and only ends or drops the response. Node's
 * http.ServerResponse satisfies it as it is; keeping the engine to this shape keeps HTTP (and Koa)
 * out of sse/, so the engine can be driven by any transport, and tested without a server.
 */
export interface StreamResponse {
  /** The connection, or null while a pipelined response waits for the one ahead of it. */
  readonly socket: Socket | null;
  /** The request's connection, watched while the response has none of its own yet. */
  readonly req?: { readonly socket: Socket | null } | undefined;
  /** True when the body is framed as HTTP/1.1 chunks; false when it ends with the connection. */
  readonly chunkedEncoding: boolean;
  /** Lets written bytes go out, then finishes the body (the last-chunk follows ours). */
  end(): unknown;
  /** Drops the connection at once. */
  destroy(): unknown;
  on(event: 'close' | 'error', listener: () => void): unknown;
  once(event: 'socket', listener: (socket: Socket) => void): unknown;
}
