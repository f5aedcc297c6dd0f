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
