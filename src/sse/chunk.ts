// Stream bytes are written straight to the socket, not through ServerResponse.write: the hub
// frames a batch once and every client gets the very same buffer, instead of Node adding a size
// line and CRLF around each write for each client. So the framing of the response body is ours:
// HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), or, for an HTTP/1.0 request, where Node sends
// a body delimited by closing the connection, the bytes as they are.

const CRLF = Buffer.from('\r\n', 'latin1');

/** One chunk carrying `parts` concatenated; empty input gives an empty buffer (never the last-chunk). */
export function chunk(parts: readonly Buffer[]): Buffer {
  let size = 0;
  for (const part of parts) size += part.length;
  if (size === 0) return Buffer.alloc(0);
  const head = Buffer.from(`${size.toString(16)}\r\n`, 'latin1');
  return Buffer.concat([head, ...parts, CRLF], head.length + size + 2);
}

function join(parts: readonly Buffer[]): Buffer {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Body bytes for `parts` in the framing of a response: chunked or not. */
export function body(parts: readonly Buffer[], chunked: boolean): Buffer {
  return chunked ? chunk(parts) : join(parts);
}

/** The same frames, framed for every kind of response at most once: shared by all clients. */
export class SharedBody {
  private chunkedBytes: Buffer | undefined;
  private rawBytes: Buffer | undefined;

  constructor(private readonly parts: readonly Buffer[]) {}

  framed(chunked: boolean): Buffer {
    if (chunked) return (this.chunkedBytes ??= chunk(this.parts));
    return (this.rawBytes ??= join(this.parts));
  }
}

/** Bytes to send: a buffer, or a string sent as UTF-8 (the device list keeps its fragments as strings). */
export type Bytes = Buffer | string;

export interface Piece {
  parts: Bytes[];
  /** Their length in bytes, as UTF-8. */
  bytes: number;
}

/**
 * A cursor over bytes to be written in bounded pieces (a stream's opening): segments of parts,
 * written in order. A piece holds views into the given buffers and the given strings, never a
 * copy of them, so a snapshot shared by many clients stays one set of parts however many are
 * partway through it, and a segment shared between openings is referenced, not copied. Buffers
 * are cut at the size limit; a string is never cut (a piece may pass the limit by one string).
 */
export class Pieces {
  private segment = 0;
  private index = 0;
  private offset = 0;

  constructor(private readonly segments: readonly (readonly Bytes[])[]) {
    this.skipEmpty();
  }

  get done(): boolean {
    return this.segment >= this.segments.length;
  }

  /** The next piece: up to `max` bytes (or one string past it), as views into the parts. */
  next(max: number): Piece {
    const parts: Bytes[] = [];
    let bytes = 0;
    while (bytes < max && !this.done) {
      const part = this.segments[this.segment]![this.index]!;
      if (typeof part === 'string') {
        const length = Buffer.byteLength(part, 'utf8');
        if (bytes > 0 && bytes + length > max) break;
        parts.push(part);
        bytes += length;
        this.step();
        continue;
      }
      const take = Math.min(max - bytes, part.length - this.offset);
      parts.push(take === part.length ? part : part.subarray(this.offset, this.offset + take));
      this.offset += take;
      bytes += take;
      if (this.offset === part.length) this.step();
    }
    return { parts, bytes };
  }

  private step(): void {
    this.offset = 0;
    this.index += 1;
    this.skipEmpty();
  }

  /** Moves past empty parts and finished segments, so the cursor always points at a byte or the end. */
  private skipEmpty(): void {
    while (this.segment < this.segments.length) {
      const parts = this.segments[this.segment]!;
      while (this.index < parts.length && parts[this.index]!.length === 0) this.index += 1;
      if (this.index < parts.length) return;
      this.segment += 1;
      this.index = 0;
    }
  }
}
