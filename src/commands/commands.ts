import { randomUUID } from 'node:crypto';
import type { Context } from 'koa';
import { nestedAtMost, type AckMessage, type CommandMessage } from '../devices/schema.js';
import { COMMAND_NAME, COMMAND_NAME_RULE, COMMAND_TIMEOUT_MAX_MS, COMMAND_TIMEOUT_MIN_MS, MAX_BODY_BYTES, MAX_NESTING } from '../protocol.js';
import type { DeviceStore } from '../devices/store.js';
import { HttpError } from '../http/errors.js';
import { readJsonObject } from '../http/body.js';
import { deviceId } from '../http/routes.js';
import type { Logger } from '../logger.js';
import type { CommandOutcome, Metrics } from '../metrics.js';
import { TYPE_BIT } from '../sse/event.js';
import type { Hub } from '../sse/hub.js';
import { bearerMatches } from '../http/auth.js';

export interface CommandDeps {
  token: string | undefined;
  timeoutMs: number;
  topicPrefix: string;
  store: DeviceStore;
  hub: Hub;
  metrics: Metrics;
  logger: Logger;
  publish(topic: string, payload: string, options: { qos: 1; properties: Record<string, unknown> }): Promise<void>;
  now?: () => number;
}

/** Commands waiting for an ack at once; more is a 503, not unbounded memory. */
const MAX_PENDING = 1_000;

interface Pending {
  device: string;
  settle(ack: AckMessage | undefined): void;
}

/** A command another replica sent, followed here so this replica's streams see it too. */
interface Observed {
  device: string;
  name: string;
  seenAt: number;
  /** The ack arrived; kept until the deadline so a redelivered command is not shown again. */
  done: boolean;
  timer: NodeJS.Timeout;
}

/** Commands of other replicas followed at once; past it the oldest is forgotten. */
const MAX_OBSERVED = 10_000;

type CommandStatus = 'sent' | 'acked' | 'failed' | 'timeout';

export interface CommandRequest {
  name: string;
  params: Record<string, unknown>;
  timeoutMs: number;
}

export function parseCommandBody(body: Record<string, unknown>, defaultTimeoutMs: number): CommandRequest {
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
 * The command round trip: publish to the device, wait for its ack (matched by command id, and
 * only from that device), answer the HTTP request, and tell every open stream how it went.
 */
export class Commands {
  private readonly pending = new Map<string, Pending>();
  private readonly observed = new Map<string, Observed>();
  private readonly now: () => number;

  constructor(private readonly deps: CommandDeps) {
    this.now = deps.now ?? Date.now;
    if (!deps.token) deps.logger.warn('COMMAND_TOKEN is not set: POST /api/devices/:id/commands answers 503');
    this.handle = this.handle.bind(this);
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private fail(outcome: CommandOutcome, error: HttpError): HttpError {
    this.deps.metrics.commands.inc({ outcome });
    return error;
  }

  async handle(ctx: Context, params: string[]): Promise<void> {
    const { token, store, metrics, topicPrefix } = this.deps;
    if (!token) throw this.fail('disabled', new HttpError(503, 'commands_disabled', 'Commands are disabled: the service has no COMMAND_TOKEN.'));
    if (!bearerMatches(ctx.get('Authorization') || undefined, token)) {
      throw this.fail('unauthorized', new HttpError(401, 'unauthorized', 'Send Authorization: Bearer <COMMAND_TOKEN>.', {
        'WWW-Authenticate': 'Bearer realm="commands"',
      }));
    }
    let request: CommandRequest;
    let device: string;
    try {
      device = deviceId(params[0]);
      request = parseCommandBody(await readJsonObject(ctx, MAX_BODY_BYTES), this.deps.timeoutMs);
    } catch (err) {
      throw this.fail('bad_request', err as HttpError);
    }
    const view = store.get(device);
    if (!view) throw this.fail('unknown_device', new HttpError(404, 'unknown_device', `No device "${device}" has been seen.`));
    if (view.state === 'offline') throw this.fail('offline', new HttpError(409, 'device_offline', `Device "${device}" is offline.`));
    if (this.pending.size >= MAX_PENDING) {
      throw this.fail('unavailable', new HttpError(503, 'busy', 'Too many commands in flight; try again shortly.', { 'Retry-After': '1' }));
    }

    const id = randomUUID();
    const ts = this.now();
    const { name, params: args, timeoutMs } = request;
    const acks = `${topicPrefix}/${device}/acks`;
    const payload = JSON.stringify({ id, name, params: args, ts, timeoutMs });
    const waiting = this.waitForAck(id, device, timeoutMs);
    try {
      await this.deps.publish(`${topicPrefix}/${device}/commands`, payload, {
        qos: 1,
        properties: {
          responseTopic: acks,
          correlationData: Buffer.from(id, 'utf8'),
          // Past its timeout nobody waits for the outcome: a device that was away must not run
          // it later (a reboot hours after the 504). The broker drops it from the device's queue.
          messageExpiryInterval: Math.ceil(timeoutMs / 1000),
        },
      });
    } catch {
      this.pending.get(id)?.settle(undefined);
      this.pending.delete(id);
      throw this.fail('unavailable', new HttpError(503, 'broker_unavailable', 'The MQTT broker is unreachable; try again shortly.', { 'Retry-After': '2' }));
    }
    this.tell(device, id, name, 'sent', { ts });

    const ack = await waiting;
    const durationMs = this.now() - ts;
    if (!ack) {
      metrics.commands.inc({ outcome: 'timeout' });
      this.tell(device, id, name, 'timeout', { ts: this.now(), durationMs });
      throw new HttpError(504, 'timeout', `Device "${device}" did not acknowledge within ${timeoutMs} ms.`);
    }
    metrics.commands.inc({ outcome: ack.ok ? 'acked' : 'failed' });
    metrics.commandRoundtrip.observe(durationMs / 1000);
    const outcome = this.outcome(ack);
    this.tell(device, id, name, ack.ok ? 'acked' : 'failed', { durationMs, ...outcome });
    ctx.body = { id, device, name, ok: ack.ok, roundtripMs: durationMs, ...outcome };
  }

  private waitForAck(id: string, device: string, timeoutMs: number): Promise<AckMessage | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.pending.set(id, {
        device,
        settle: (ack) => {
          clearTimeout(timer);
          resolve(ack);
        },
      });
    });
  }

  /** An ack from the broker; one that is late, foreign or from the wrong device is ignored. */
  onAck(ack: AckMessage): void {
    const pending = this.pending.get(ack.id);
    if (pending && pending.device === ack.device) {
      this.pending.delete(ack.id);
      pending.settle(ack);
      return;
    }
    const observed = this.observed.get(ack.id);
    if (observed && observed.device === ack.device && !observed.done) {
      // Another replica's command: its streams hear it from that replica, ours from here. The
      // metrics stay with the replica that sent it, so a sum over replicas counts it once.
      observed.done = true;
      const durationMs = this.now() - observed.seenAt;
      this.tell(ack.device, ack.id, observed.name, ack.ok ? 'acked' : 'failed', { durationMs, ...this.outcome(ack) });
      return;
    }
    this.deps.logger.debug({ id: ack.id, device: ack.device }, 'ack for no pending command');
  }

  /**
   * A command another replica published (we subscribe without our own): shown as sent, then
   * acked, failed or timed out, as on the replica that took the request. One that is already
   * past its timeout (queued while we were away) or seen before is ignored.
   */
  onCommand(command: CommandMessage): void {
    if (this.pending.has(command.id) || this.observed.has(command.id)) return;
    const timeoutMs = command.timeoutMs ?? this.deps.timeoutMs;
    const now = this.now();
    const left = command.ts + timeoutMs - now;
    if (left <= 0) return;
    if (this.observed.size >= MAX_OBSERVED) {
      const [oldest, entry] = this.observed.entries().next().value as [string, Observed];
      clearTimeout(entry.timer);
      this.observed.delete(oldest);
    }
    const { device, id, name } = command;
    const timer = setTimeout(() => {
      const entry = this.observed.get(id);
      this.observed.delete(id);
      if (!entry || entry.done) return;
      const at = this.now();
      this.tell(device, id, name, 'timeout', { ts: at, durationMs: at - entry.seenAt });
    }, left);
    timer.unref();
    this.observed.set(id, { device, name, seenAt: now, done: false, timer });
    this.tell(device, id, name, 'sent', { ts: command.ts });
  }

  /** A `command` event to every stream that wants this device's commands. */
  private tell(device: string, id: string, name: string, status: CommandStatus, fields: Record<string, unknown>): void {
    this.deps.hub.publish('command', device, TYPE_BIT.command, { device, id, name, status, ...fields });
  }

  /** What an ack says, for the HTTP answer and the `command` event alike. */
  private outcome(ack: AckMessage): Record<string, unknown> {
    return {
      ts: ack.ts ?? this.now(),
      ...(ack.result !== undefined && { result: ack.result }),
      ...(ack.error !== undefined && { error: ack.error }),
    };
  }
}
