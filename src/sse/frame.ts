// The SSE wire format, as browsers parse it (WHATWG HTML, "server-sent events"): lines end in
// CRLF, LF or a lone CR; a field ends at the first colon; an event is dispatched at a blank line.

import { POSITION_EVENT } from '../protocol.js';

export interface Frame {
  event?: string;
  id?: string;
  retry?: number;
  /** Any string: split into one `data:` line per line, so the parser rebuilds it exactly. */
  data?: string;
}

const LINE_BREAK = /\r\n|\r|\n/;
// Field values we control must not be able to end a line or, for ids, be ignored (NUL).
const UNSAFE = /[\r\n\0]/;

export function encodeFrame(frame: Frame): string {
  let out = '';
  if (frame.event !== undefined) {
    if (frame.event === '' || UNSAFE.test(frame.event)) throw new TypeError('SSE event name must be a non-empty single line');
    out += `event: ${frame.event}\n`;
  }
  if (frame.id !== undefined) {
    if (UNSAFE.test(frame.id)) throw new TypeError('SSE id must be a single line without NUL');
    out += `id: ${frame.id}\n`;
  }
  if (frame.retry !== undefined) {
    if (!Number.isSafeInteger(frame.retry) || frame.retry < 0) throw new TypeError('SSE retry must be a non-negative integer');
    out += `retry: ${frame.retry}\n`;
  }
  if (frame.data !== undefined) {
    for (const line of frame.data.split(LINE_BREAK)) out += `data: ${line}\n`;
  }
  return `${out}\n`;
}

/**
 * An event whose data is JSON. JSON.stringify escapes CR, LF and NUL inside strings, so the data
 * is always one line and nothing a device sends can start a new field.
 */
export function encodeJsonEvent(event: string, id: string | undefined, data: unknown): Buffer {
  const frame: Frame = { event, data: JSON.stringify(data) };
  if (id !== undefined) frame.id = id;
  return Buffer.from(encodeFrame(frame), 'utf8');
}

/** The opening of every stream: how long the browser waits before reconnecting. */
export function encodeRetry(ms: number): Buffer {
  return Buffer.from(`retry: ${Math.round(ms)}\n\n`, 'utf8');
}

export const HEARTBEAT = Buffer.from(': keepalive\n\n', 'utf8');

/**
 * A `position` event: its id moves the client's last event id to `id`, so a stream whose filter
 * let nothing through for a while resumes from here. WHATWG lets a block with an `id:` and no
 * `data:` do this without dispatching anything, and browsers do; but the `eventsource` package
 * (and the eventsource-parser most Node clients use) drops such a block, id and all, so the block
 * carries `data: {}` under its own event name, which no listener of the other names sees. As a
 * heartbeat, with the keepalive comment in front.
 */
export function encodePosition(id: string, heartbeat = false): Buffer {
  return Buffer.from(`${heartbeat ? ': keepalive\n' : ''}${encodeFrame({ event: POSITION_EVENT, id, data: '{}' })}`, 'utf8');
}

/** `base` spread uniformly over ±50 %, so a crowd of clients does not reconnect in step. */
export function jitter(base: number, random: () => number = Math.random): number {
  return Math.round(base * (0.5 + random()));
}
