import type { Context } from 'koa';
import { HttpError } from './errors.js';

/** Reads a JSON object body of at most `limit` bytes; anything else is a clear 4xx. */
export async function readJsonObject(ctx: Context, limit: number): Promise<Record<string, unknown>> {
  if (!ctx.is('application/json')) {
    throw new HttpError(415, 'unsupported_media_type', 'Send the body as application/json.');
  }
  const declared = Number(ctx.get('Content-Length') || '0');
  if (declared > limit) throw tooLarge(ctx, limit);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw tooLarge(ctx, limit);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    // The client went away, or the server cut a body that took too long (the client already
    // has its 408): an expected end, not a defect.
    throw new HttpError(400, 'bad_request', 'The request body did not arrive in full.');
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'bad_json', 'The body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, 'bad_body', 'The body must be one JSON object.');
  }
  return body as Record<string, unknown>;
}

function tooLarge(ctx: Context, limit: number): HttpError {
  // The rest of the body is not read: the connection cannot be reused.
  ctx.set('Connection', 'close');
  return new HttpError(413, 'payload_too_large', `The body must be at most ${limit} bytes.`);
}
