import type { Socket } from 'node:net';
import type { DisconnectReason } from '../metrics.js';
import { body, Pieces, type Bytes, type Piece, type SharedBody } from './chunk.js';
import { ALWAYS, type HubEvent } from './event.js';
import type { StreamResponse } from './response.js';

export interface Filter {
  /** Only these devices, or every device when null. */
  readonly devices: ReadonlySet<string> | null;
  /** OR of TYPE_BITs. */
  readonly mask: number;
  /** The devices the stream's user may see (absent: all): applied to live events and replays alike. */
  readonly grant?: (device: string) => boolean;
}

export function matchesFilter(filter: Filter, event: HubEvent): boolean {
  if (event.bit !== ALWAYS && (filter.mask & event.bit) === 0) return false;
  if (event.device === null) return true;
  if (filter.devices !== null && !filter.devices.has(event.device)) return false;
  return filter.grant === undefined || filter.grant(event.device);
}

/** What the hub gives each client so the hot path stays free of closures and label lookups. */
export interface ClientHooks {
  readonly bufferLimit: number;
  now(): number;
  delivered(event: HubEvent): void;
  conflated(): void;
  closed(client: SseClient, reason: DisconnectReason): void;
}

/** Most opening bytes written at once: a client that does not read holds one piece, not a snapshot. */
export const PIECE_BYTES = 64 * 1024;

/**
 * One open stream. Its opening (snapshot or replay, possibly megabytes, shared between clients)
 * goes out in pieces of PIECE_BYTES as the socket drains; events published meanwhile wait behind
 * it. After that, event bytes go straight to the socket as ready-made HTTP chunks (see chunk.ts),
 * so a batch shared by every client is one buffer and one write each. While the socket is behind
 * (a write was not accepted whole, or the opening is not out yet), events wait in a queue where
 * telemetry is conflated to the newest value per device and everything else is kept in order. A
 * queue past the byte limit closes the stream: the browser reconnects and resumes from its
 * Last-Event-ID. The response object only ends the stream (its last-chunk follows ours).
 */
export class SseClient {
  /** Events up to this seq were already sent in the opening (snapshot or replay). */
  after: number;
  /** When the socket last stopped taking bytes; the hub's write deadline counts from here. */
  behindSince: number;
  /** Events this client's filter passed over since it was last told its position. */
  skipped = 0;
  private queue: (HubEvent | undefined)[] | undefined = [];
  private queuedBytes = 0;
  private latestTelemetry: Map<string, number> | undefined;
  private ended = false;

  /** Closed, for whatever reason: nothing more is written. */
  get isClosed(): boolean {
    return this.ended;
  }
  private opening: Pieces | undefined;
  /** Where the opening's current piece is framed; reused for the next once the socket took it. */
  private scratch: Buffer | undefined;
  /**
   * Null until the response has a connection of its own: a request pipelined behind another
   * gets its socket only once the earlier response is finished.
   */
  private socket: Socket | null = null;
  /** The connection a pipelined response waits for, while it has no socket of its own. */
  private waitingOn: Socket | null = null;
  /** Whether the response uses chunked transfer coding (HTTP/1.1) or ends with the connection. */
  private readonly chunked: boolean;

  /** `res` must have its head written (writeHead + flushHeaders); `opening` (segments of buffers) is sent first, in pieces. */
  constructor(
    readonly res: StreamResponse,
    readonly filter: Filter,
    after: number,
    private readonly hooks: ClientHooks,
    opening: readonly (readonly Bytes[])[],
  ) {
    this.after = after;
    this.behindSince = hooks.now();
    this.chunked = res.chunkedEncoding;
    this.opening = new Pieces(opening);
    this.onDrain = this.onDrain.bind(this);
    this.onClose = this.onClose.bind(this);
    res.on('close', this.onClose);
    res.on('error', this.onClose);
    if (res.socket) {
      this.socket = res.socket;
      this.pump();
    } else {
      // The connection may close before this response gets it: the response says nothing then.
      this.waitingOn = res.req?.socket ?? null;
      this.waitingOn?.once('close', this.onClose);
      // Node emits 'socket' and then writes the head it holds: our bytes must come after it.
      res.once('socket', (socket: Socket) =>
        process.nextTick(() => {
          if (this.ended) return;
          this.waitingOn?.off('close', this.onClose);
          this.waitingOn = null;
          this.socket = socket;
          this.pump();
        }),
      );
    }
  }

  get isBehind(): boolean {
    return this.queue !== undefined;
  }

  /** Everything held in this process for the client: our queue plus what the socket has not handed to the kernel. */
  get backlogBytes(): number {
    return this.queuedBytes + (this.socket?.writableLength ?? 0);
  }

  /**
   * Sends events (already filtered, in seq order); `shared` holds exactly these events' frames,
   * when the hub has them to share between clients.
   */
  send(events: readonly HubEvent[], shared?: SharedBody): void {
    if (this.ended || events.length === 0) return;
    if (this.queue) {
      for (const event of events) this.enqueue(event);
      if (this.queuedBytes > this.hooks.bufferLimit) this.close('slow');
      return;
    }
    for (const event of events) this.hooks.delivered(event);
    this.writeBody(shared ? shared.framed(this.chunked) : body(events.map((e) => e.frame), this.chunked));
  }

  /** Bytes shared by every client (a heartbeat, a position), framed for this one; only when not behind. */
  writeShared(shared: SharedBody): void {
    if (this.queue) return;
    this.writeBody(shared.framed(this.chunked));
  }

  /**
   * Framed body bytes: a heartbeat, a batch. A single write is never cut for size (it is bounded
   * by one batch, and shared batches are not copied per client); what counts against the bound is
   * what piles up behind it while the socket does not drain.
   */
  private writeBody(bytes: Buffer): void {
    if (this.ended) return;
    const socket = this.socket;
    if (socket === null || socket.destroyed) {
      this.close('client');
      return;
    }
    if (!socket.write(bytes)) this.fallBehind(socket);
  }

  private fallBehind(socket: Socket): void {
    this.queue = [];
    this.waitForDrain(socket);
  }

  private waitForDrain(socket: Socket): void {
    this.behindSince = this.hooks.now();
    socket.once('drain', this.onDrain);
  }

  private enqueue(event: HubEvent): void {
    const queue = this.queue!;
    if (event.name === 'telemetry' && event.device !== null) {
      this.latestTelemetry ??= new Map();
      const previous = this.latestTelemetry.get(event.device);
      if (previous !== undefined) {
        // Keep seq order: drop the older value and append the newer one at the end.
        this.queuedBytes -= queue[previous]!.frame.length;
        queue[previous] = undefined;
        this.hooks.conflated();
      }
      this.latestTelemetry.set(event.device, queue.length);
    }
    queue.push(event);
    this.queuedBytes += event.frame.length;
  }

  /** Writes what waits: the rest of the opening, piece by piece while the socket takes them, then the queue. */
  private pump(): void {
    const socket = this.socket;
    if (this.ended || socket === null) return;
    if (socket.destroyed) {
      this.close('client');
      return;
    }
    const opening = this.opening;
    if (opening) {
      // Progress: the deadline counts from the last time the socket took bytes.
      this.behindSince = this.hooks.now();
      if (!opening.done) {
        // One piece in flight at a time: the next is written once the kernel took this one (the
        // write callback), in a later turn of the event loop, so a fast reader on loopback does
        // not take megabytes in one callback and fifty openings interleave with everything else.
        // The piece is copied into this client's one scratch buffer, free again by then: no
        // garbage per piece, and a client that never reads holds one piece.
        socket.write(this.piece(opening.next(PIECE_BYTES)), this.afterPiece);
        return;
      }
      this.opening = undefined;
      this.scratch = undefined;
    }
    const queue = this.queue;
    if (!queue) return;
    this.queue = undefined;
    this.latestTelemetry = undefined;
    this.queuedBytes = 0;
    this.send(queue.filter((e): e is HubEvent => e !== undefined));
  }

  /** The piece, framed as one chunk (or bare for HTTP/1.0), in the scratch buffer. */
  private piece({ parts, bytes }: Piece): Buffer {
    // A piece passes PIECE_BYTES by at most one fragment (one device's view): rarely, a larger buffer.
    if (this.scratch === undefined || this.scratch.length < bytes + 16) this.scratch = Buffer.allocUnsafe(Math.max(PIECE_BYTES, bytes) + 16);
    const scratch = this.scratch;
    let at = this.chunked ? scratch.write(`${bytes.toString(16)}\r\n`, 0, 'latin1') : 0;
    for (const part of parts) at += typeof part === 'string' ? scratch.write(part, at, 'utf8') : part.copy(scratch, at);
    if (this.chunked) at += scratch.write('\r\n', at, 'latin1');
    return scratch.subarray(0, at);
  }

  private readonly afterPiece = (err?: Error | null): void => {
    if (err) this.close('client');
    else setImmediate(this.onDrain);
  };

  private onDrain(): void {
    this.pump();
  }

  private onClose(): void {
    this.close('client');
  }

  /** Ends the stream: `end` lets written bytes go out; otherwise the socket is dropped at once. */
  close(reason: DisconnectReason, graceful = false): void {
    if (this.ended) return;
    this.ended = true;
    this.queue = undefined;
    this.opening = undefined;
    this.scratch = undefined;
    this.latestTelemetry = undefined;
    this.socket?.off('drain', this.onDrain);
    this.waitingOn?.off('close', this.onClose);
    if (graceful) this.res.end();
    else if (reason !== 'client') this.res.destroy();
    this.hooks.closed(this, reason);
  }
}
