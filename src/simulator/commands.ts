// Commands arrive from outside the device, so every field is checked before anything acts on it.
// Parsing and deciding are pure; the device only schedules the ack and applies the effect.

import { COMMAND_NAME, COMMAND_NAME_RULE, MAX_COMMAND_BYTES } from '../protocol.js';

export interface Command {
  id: string;
  name: string;
  params: Record<string, unknown>;
  ts: number | undefined;
}

export type ParsedCommand =
  | { ok: true; command: Command }
  /** `id` is set when the command can still be answered with a failed ack. */
  | { ok: false; id: string | undefined; error: string };

export type Effect = { kind: 'none' } | { kind: 'reboot' } | { kind: 'set-interval'; intervalMs: number };

export interface CommandResult {
  ok: boolean;
  result: Record<string, unknown>;
  error?: string;
  effect: Effect;
}

export interface Ack {
  id: string;
  ok: boolean;
  result: Record<string, unknown>;
  error?: string;
  ts: number;
}

const INTERVAL_RANGE = { min: 100, max: 60_000 } as const;
// Printable, no control characters: ids are echoed back and end up in logs and browsers.
const COMMAND_ID = /^[\x20-\x7e]{1,128}$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseCommand(payload: Buffer): ParsedCommand {
  if (payload.length > MAX_COMMAND_BYTES) {
    return { ok: false, id: undefined, error: `command larger than ${MAX_COMMAND_BYTES} bytes` };
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    return { ok: false, id: undefined, error: 'command is not valid UTF-8 JSON' };
  }
  if (!isPlainObject(body)) return { ok: false, id: undefined, error: 'command is not a JSON object' };
  const { id, name, params, ts } = body;
  if (typeof id !== 'string' || !COMMAND_ID.test(id)) {
    return { ok: false, id: undefined, error: 'command id missing or not 1-128 printable characters' };
  }
  if (typeof name !== 'string' || !COMMAND_NAME.test(name)) {
    return { ok: false, id, error: `command name missing or not ${COMMAND_NAME_RULE}` };
  }
  if (params !== undefined && !isPlainObject(params)) {
    return { ok: false, id, error: 'params must be a JSON object' };
  }
  if (ts !== undefined && (typeof ts !== 'number' || !Number.isFinite(ts))) {
    return { ok: false, id, error: 'ts must be a number of milliseconds' };
  }
  return { ok: true, command: { id, name, params: params ?? {}, ts } };
}

const fail = (error: string): CommandResult => ({ ok: false, result: {}, error, effect: { kind: 'none' } });

export function executeCommand(command: Command): CommandResult {
  switch (command.name) {
    case 'ping':
      return { ok: true, result: { pong: true }, effect: { kind: 'none' } };
    case 'reboot':
      return { ok: true, result: { rebooting: true }, effect: { kind: 'reboot' } };
    case 'set-interval': {
      const intervalMs = command.params['intervalMs'];
      if (typeof intervalMs !== 'number' || !Number.isInteger(intervalMs)
        || intervalMs < INTERVAL_RANGE.min || intervalMs > INTERVAL_RANGE.max) {
        return fail(`params.intervalMs must be an integer from ${INTERVAL_RANGE.min} to ${INTERVAL_RANGE.max}`);
      }
      return { ok: true, result: { intervalMs }, effect: { kind: 'set-interval', intervalMs } };
    }
    default:
      // The name passed COMMAND_NAME, so echoing it cannot smuggle anything into a log or page.
      return fail(`unknown command "${command.name}"`);
  }
}

/** `result` is always an object (empty on failure); `error` is present only when `ok` is false. */
export function buildAck(id: string, outcome: Pick<CommandResult, 'ok' | 'result' | 'error'>, ts: number): Ack {
  return outcome.ok
    ? { id, ok: true, result: outcome.result, ts }
    : { id, ok: false, result: {}, error: outcome.error ?? 'failed', ts };
}

/**
 * A command may name where its answer goes (MQTT 5 response topic), but a device writes only to
 * its own acks topic: anything else is ignored and reported, never followed.
 */
export function ackTopic(responseTopic: string | undefined, ownAcksTopic: string): { topic: string; refused: boolean } {
  return { topic: ownAcksTopic, refused: responseTopic !== undefined && responseTopic !== ownAcksTopic };
}

export interface CommandProperties {
  responseTopic?: string;
  correlationData?: Buffer;
}

export interface AckPlan {
  /** Undefined when the command cannot be answered at all (no usable id): log it, send nothing. */
  id: string | undefined;
  outcome: CommandResult;
  topic: string;
  /** The command's correlation data, echoed so the sender can match the ack without parsing it. */
  properties: CommandProperties;
  refusedResponseTopic: boolean;
}

/** Everything a device needs to answer one incoming command; acting on it is the caller's job. */
export function planAck(payload: Buffer, incoming: CommandProperties | undefined, ownAcksTopic: string): AckPlan {
  const { topic, refused } = ackTopic(incoming?.responseTopic, ownAcksTopic);
  const properties: CommandProperties = {};
  if (incoming?.correlationData !== undefined) properties.correlationData = incoming.correlationData;
  const parsed = parseCommand(payload);
  const outcome: CommandResult = parsed.ok
    ? executeCommand(parsed.command)
    : { ok: false, result: {}, error: parsed.error, effect: { kind: 'none' } };
  const id = parsed.ok ? parsed.command.id : parsed.id;
  return { id, outcome, topic, properties, refusedResponseTopic: refused };
}
