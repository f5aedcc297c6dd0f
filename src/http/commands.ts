import type { Context } from 'koa';
import type { CommandRequest, Commands, Outcome } from '../commands/commands.js';
import { nestedAtMost } from '../devices/schema.js';
import type { Logger } from '../logger.js';
import type { CommandOutcome, Metrics } from '../metrics.js';
import {
  COMMAND_NAME,
  COMMAND_NAME_RULE,
  COMMAND_TIMEOUT_MAX_MS,
  COMMAND_TIMEOUT_MIN_MS,
  MAX_BODY_BYTES,
  MAX_COMMAND_BYTES,
  MAX_NESTING,
} from '../protocol.js';
import { authenticate, refuseCrossSite, type Gate } from './access.js';
import { bearerMatches } from './auth.js';
import { readJsonObject } from './body.js';
import { HttpError } from './errors.js';
import type { Handler } from './router.js';
import { deviceId } from './routes.js';

export interface CommandRouteDeps {
  /** Signed-in users and API tokens; with AUTH off (gate disabled) COMMAND_TOKEN guards commands. */
  gate: Gate;
  /** COMMAND_TOKEN, without users only; unset there disables commands (503). */
  token: string | undefined;
  /** COMMAND_TIMEOUT_MS, for a request that names no timeoutMs. */
  defaultTimeoutMs: number;
  commands: Pick<Commands, 'send'>;
  metrics: Metrics;
  logger: Logger;
}

function parseCommandBody(body: Record<string, unknown>, defaultTimeoutMs: number): CommandRequest {
  const { name, params = {}, timeoutMs = defaultTimeoutMs } = body;
  for (const key of Object.keys(body)) {
    if (!['name', 'params', 'timeoutMs'].includes(key)) {
      throw new HttpError(400, 'bad_body', `Unknown field "${key.slice(0, 40)}"; use name, params and timeoutMs.`);
    }
  }
  if (typeof name !== 'string' || !COMMAND_NAME.test(name)) {
    throw new HttpError(400, 'bad_body', `name must be ${COMMAND_NAME_RULE}.`);
  }
  if (typeof params !== 'object' || params === null || Array.isArray(params)) {
    throw new HttpError(400, 'bad_body', 'params must be a JSON object.');
  }
  if (!nestedAtMost(params, MAX_NESTING)) {
    throw new HttpError(400, 'bad_body', `params must nest at most ${MAX_NESTING} levels deep.`);
  }
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < COMMAND_TIMEOUT_MIN_MS || timeoutMs > COMMAND_TIMEOUT_MAX_MS) {
    throw new HttpError(400, 'bad_body', `timeoutMs must be an integer from ${COMMAND_TIMEOUT_MIN_MS} to ${COMMAND_TIMEOUT_MAX_MS}.`);
  }
  return { name, params: params as Record<string, unknown>, timeoutMs };
}

/**
 * `POST /api/devices/:id/commands`: the token, the body, and the outcome of the round trip as a
 * status and a JSON body. The round trip itself (src/commands/) knows nothing of HTTP.
 */
export function createCommandHandler(deps: CommandRouteDeps): Handler {
  const { gate, token, defaultTimeoutMs, commands, metrics } = deps;
  if (gate.enabled && token) deps.logger.warn('COMMAND_TOKEN is ignored with sign-in on: commands need an operator or admin (session or API token)');
  else if (!gate.enabled && !token) deps.logger.warn('COMMAND_TOKEN is not set: POST /api/devices/:id/commands answers 503');
  const refuse = (outcome: CommandOutcome, error: HttpError): HttpError => {
    metrics.commands.inc({ outcome });
    return error;
  };

  /** With users: who asks, and whether they may command this device (an ungranted one does not exist for them). */
  const admit = async (ctx: Context, raw: string | undefined): Promise<void> => {
    const principal = await authenticate(ctx, gate, metrics).catch((err: unknown) => {
      throw err instanceof HttpError ? refuse('unauthorized', err) : err;
    });
    if (principal.via === 'session') refuseCrossSite(ctx, metrics);
    if (raw !== undefined && !principal.canSee(raw)) throw refuse('unknown_device', new HttpError(404, 'unknown_device', `No device "${raw}" has been seen.`));
    if (principal.role === 'viewer') {
      metrics.authRefusals.inc({ reason: 'forbidden' });
      throw refuse('forbidden', new HttpError(403, 'forbidden', 'Viewers cannot send commands; an operator or admin can.'));
    }
  };

  return async (ctx: Context, params: string[]) => {
    if (gate.enabled) return send(ctx, params, () => admit(ctx, params[0]));
    if (!token) throw refuse('disabled', new HttpError(503, 'commands_disabled', 'Commands are disabled: the service has no COMMAND_TOKEN.'));
    if (!bearerMatches(ctx.get('Authorization') || undefined, token)) {
      throw refuse('unauthorized', new HttpError(401, 'unauthorized', 'Send Authorization: Bearer <COMMAND_TOKEN>.', {
        'WWW-Authenticate': 'Bearer realm="commands"',
      }));
    }
    return send(ctx, params, async () => undefined);
  };

  async function send(ctx: Context, params: string[], admitted: () => Promise<void>): Promise<void> {
    const bad = (err: unknown) => (err instanceof HttpError ? refuse('bad_request', err) : err);
    let device: string;
    try {
      device = deviceId(params[0]);
    } catch (err) {
      throw bad(err);
    }
    // Who asks before the body is read: a stranger's body is not worth parsing.
    await admitted();
    let request: CommandRequest;
    try {
      request = parseCommandBody(await readJsonObject(ctx, MAX_BODY_BYTES), defaultTimeoutMs);
    } catch (err) {
      throw bad(err);
    }
    const outcome = await commands.send(device, request);
    ctx.body = answer(device, request, outcome);
  }
}

/** The 200 body of an ack, or the HttpError every other outcome is. */
function answer(device: string, { name, timeoutMs }: CommandRequest, outcome: Outcome): Record<string, unknown> {
  switch (outcome.kind) {
    case 'acked':
    case 'failed': {
      const { id, roundtripMs, ts, result, error } = outcome;
      return { id, device, name, ok: outcome.kind === 'acked', roundtripMs, ts, ...(result !== undefined && { result }), ...(error !== undefined && { error }) };
    }
    case 'timeout':
      throw new HttpError(504, 'timeout', `Device "${device}" did not acknowledge within ${timeoutMs} ms; the command has expired and will not be delivered.`);
    case 'offline':
      if (outcome.id === undefined) throw new HttpError(409, 'device_offline', `Device "${device}" is offline.`);
      // Mosquitto still delivers a queued message until its expiry + 1 s after receiving it (expiry.ts).
      throw new HttpError(409, 'device_offline',
        `Device "${device}" went offline without acknowledging; it may still run the command if it had received it or reconnects within ${(outcome.expirySeconds ?? 0) + 1} s of it being sent.`);
    case 'too_large':
      throw new HttpError(413, 'payload_too_large',
        `The command would be published as ${outcome.bytes} bytes of JSON, past the ${MAX_COMMAND_BYTES} a device accepts; numbers are written out in full (1e20 as 21 digits).`);
    case 'unknown_device':
      throw new HttpError(404, 'unknown_device', `No device "${device}" has been seen.`);
    case 'busy':
      throw new HttpError(503, 'busy', 'Too many commands in flight; try again shortly.', { 'Retry-After': '1' });
    case 'broker_unavailable':
      if (outcome.unconfirmed) {
        throw new HttpError(503, 'broker_unavailable',
          `The MQTT broker did not confirm the command within ${timeoutMs} ms; it may still reach the device once the broker answers again.`, { 'Retry-After': '2' });
      }
      throw new HttpError(503, 'broker_unavailable', 'The MQTT broker is unreachable; try again shortly.', { 'Retry-After': '2' });
  }
}
