// Validation of everything devices send. Nothing from MQTT reaches the hub without passing here;
// what fails is reported with a reason from a fixed set and a short human detail.

import type { MqttKind, RejectReason } from '../metrics.js';
import {
  COMMAND_NAME,
  COMMAND_NAME_RULE,
  COMMAND_TIMEOUT_MAX_MS,
  DEVICE_ID,
  DEVICE_ID_RULE,
  MAX_MESSAGE_CHARS as MAX_MESSAGE,
  MAX_METRICS,
  MAX_NESTING,
  METRIC_NAME,
  TOPIC_KINDS,
  WORD,
  type Severity,
} from '../protocol.js';

export type { Severity };
const MAX_COMMAND_ID = 64;
// MAX_NESTING: a 64 KiB payload can nest thousands of levels; re-encoding that for the HTTP answer
// and the SSE event would overflow the stack. Real acks are a few levels deep.
// Timestamps must be plausible epoch milliseconds (2001 … 2286), not seconds or garbage.
const MIN_TS = 1e12;
const MAX_TS = 1e13;

export interface StatusMessage {
  kind: 'status';
  device: string;
  state: 'online' | 'offline';
  /** Absent in last-will payloads, which are composed long before they are sent. */
  ts: number | undefined;
}

export interface TelemetryMessage {
  kind: 'telemetry';
  device: string;
  ts: number;
  seq: number;
  metrics: Record<string, number>;
}

export interface AlertMessage {
  kind: 'events';
  device: string;
  ts: number;
  seq: number;
  type: string;
  severity: Severity;
  message: string;
}

export interface AckMessage {
  kind: 'acks';
  device: string;
  id: string;
  ok: boolean;
  result: Record<string, unknown> | undefined;
  error: string | undefined;
  ts: number | undefined;
}

/** A command another service replica sent (app → device), seen so this one can show it too. */
export interface CommandMessage {
  kind: 'commands';
  device: string;
  id: string;
  name: string;
  ts: number;
  /** How long its sender waits for the ack; absent from senders that do not say. */
  timeoutMs: number | undefined;
}

/** An empty payload: how an operator clears a retained message (`mosquitto_pub -r -n`). */
export interface ClearedMessage {
  kind: 'cleared';
  topicKind: MqttKind;
  device: string;
}

export type DeviceMessage = StatusMessage | TelemetryMessage | AlertMessage | AckMessage | CommandMessage | ClearedMessage;

export type Parsed =
  | { ok: true; message: DeviceMessage }
  | { ok: false; kind: MqttKind; reason: RejectReason; device: string | undefined; detail: string };

const KINDS = new Set<string>(TOPIC_KINDS);

export interface TopicMatch {
  kind: MqttKind;
  device: string | undefined;
}

/** Splits `<prefix>/<id>/<kind>`; `device` is undefined when the id is not a valid device id. */
export function parseTopic(prefix: string, topic: string): TopicMatch | undefined {
  if (!topic.startsWith(`${prefix}/`)) return undefined;
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest.length !== 2) return undefined;
  const [id, kind] = rest as [string, string];
  if (!KINDS.has(kind)) return undefined;
  return { kind: kind as MqttKind, device: DEVICE_ID.test(id) ? id : undefined };
}

function reject(kind: MqttKind, reason: RejectReason, device: string | undefined, detail: string): Parsed {
  return { ok: false, kind, reason, device, detail };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
// Fractional milliseconds (1796182012369.123) are what many devices send: still epoch milliseconds.
const isTs = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= MIN_TS && v < MAX_TS;
const isCommandId = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_COMMAND_ID;
const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The offending value as the device sent it, short enough for a log line. */
export function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    text = typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    text = String(value);
  }
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}
const MAX_SHOWN = 40;

function tsProblem(field: string, value: unknown): string {
  let hint = '';
  if (typeof value === 'number' && Number.isFinite(value)) {
    const size = Math.abs(value);
    if (size >= 1e9 && size < 1e10) hint = ' (seconds?)';
    else if (size >= 1e15 && size < 1e16) hint = ' (microseconds?)';
    else if (size >= 1e18 && size < 1e19) hint = ' (nanoseconds?)';
  } else if (typeof value === 'string') hint = ' (a string, not a number)';
  return `${field} must be epoch milliseconds (1e12 to 1e13); got ${shown(value)}${hint}`;
}

export function parseMessage(prefix: string, topic: string, payload: Buffer, maxBytes: number): Parsed {
  const match = parseTopic(prefix, topic);
  if (!match) {
    return reject('other', 'bad_topic', undefined, `topic ${shown(topic)} is not <prefix>/<id>/<status|telemetry|events|acks|commands> under ${shown(prefix)}`);
  }
  const { kind, device } = match;
  if (device === undefined) {
    const id = topic.slice(prefix.length + 1).split('/')[0];
    return reject(kind, 'bad_topic', undefined, `device id must match ${DEVICE_ID_RULE}; got ${shown(id)}`);
  }
  if (payload.length > maxBytes) return reject(kind, 'too_large', device, `payload of ${payload.length} bytes exceeds ${maxBytes}`);
  // How a retained message is cleared: not a malformed message, and not data either.
  if (payload.length === 0) return { ok: true, message: { kind: 'cleared', topicKind: kind, device } };
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    return reject(kind, 'bad_json', device, `payload is not valid JSON (${(err as Error).message.slice(0, 80)}); starts ${shown(payload.subarray(0, 40).toString('utf8'))}`);
  }
  if (!isObject(body)) return reject(kind, 'bad_shape', device, `payload must be one JSON object; got ${shown(body)}`);
  const problem = (detail: string) => reject(kind, 'bad_shape', device, detail);
  const seqProblem = () => problem(`seq must be a non-negative integer; got ${shown(body.seq)}`);

  switch (kind) {
    case 'status': {
      if (body.state !== 'online' && body.state !== 'offline') return problem(`state must be "online" or "offline"; got ${shown(body.state)}`);
      if (body.ts !== undefined && !isTs(body.ts)) return problem(tsProblem('ts', body.ts));
      return { ok: true, message: { kind, device, state: body.state, ts: body.ts as number | undefined } };
    }
    case 'telemetry': {
      if (!isTs(body.ts)) return problem(tsProblem('ts', body.ts));
      if (!isSeq(body.seq)) return seqProblem();
      if (!isObject(body.metrics)) return problem(`metrics must be an object of numbers; got ${shown(body.metrics)}`);
      const entries = Object.entries(body.metrics);
      if (entries.length === 0 || entries.length > MAX_METRICS) {
        return problem(`metrics must hold 1 to ${MAX_METRICS} values; got ${entries.length}`);
      }
      for (const [name, value] of entries) {
        if (!METRIC_NAME.test(name)) return problem(`metric names must match [A-Za-z0-9_.-]{1,64}; got ${shown(name)}`);
        if (typeof value !== 'number' || !Number.isFinite(value)) return problem(`metric ${name} must be a finite number; got ${shown(value)}`);
      }
      // Defined, not assigned: `metrics[name] = value` with the name "__proto__" would set the
      // object's prototype instead of a metric, and the reading would vanish.
      const metrics = Object.fromEntries(entries) as Record<string, number>;
      return { ok: true, message: { kind, device, ts: body.ts, seq: body.seq, metrics } };
    }
    case 'events': {
      if (!isTs(body.ts)) return problem(tsProblem('ts', body.ts));
      if (!isSeq(body.seq)) return seqProblem();
      if (typeof body.type !== 'string' || !WORD.test(body.type)) return problem(`type must be a word of [A-Za-z0-9_.-]{1,64}; got ${shown(body.type)}`);
      if (body.severity !== 'info' && body.severity !== 'warning' && body.severity !== 'critical') {
        return problem(`severity must be info, warning or critical; got ${shown(body.severity)}`);
      }
      if (typeof body.message !== 'string' || body.message.length > MAX_MESSAGE) {
        const got = typeof body.message === 'string' ? `${body.message.length} characters` : shown(body.message);
        return problem(`message must be a string of at most ${MAX_MESSAGE} characters; got ${got}`);
      }
      return {
        ok: true,
        message: { kind, device, ts: body.ts, seq: body.seq, type: body.type, severity: body.severity, message: body.message },
      };
    }
    case 'acks': {
      if (!isCommandId(body.id)) return problem(`id must be the command id (1 to ${MAX_COMMAND_ID} characters); got ${shown(body.id)}`);
      if (typeof body.ok !== 'boolean') return problem(`ok must be true or false; got ${shown(body.ok)}`);
      if (body.result !== undefined && !isObject(body.result)) return problem(`result must be an object; got ${shown(body.result)}`);
      if (body.result !== undefined && !nestedAtMost(body.result, MAX_NESTING)) {
        return problem(`result must nest at most ${MAX_NESTING} levels deep`);
      }
      if (body.error !== undefined && (typeof body.error !== 'string' || body.error.length > MAX_MESSAGE)) {
        const got = typeof body.error === 'string' ? `${body.error.length} characters` : shown(body.error);
        return problem(`error must be a string of at most ${MAX_MESSAGE} characters; got ${got}`);
      }
      if (body.ts !== undefined && !isTs(body.ts)) return problem(tsProblem('ts', body.ts));
      return {
        ok: true,
        message: {
          kind,
          device,
          id: body.id,
          ok: body.ok,
          // As JSON.parse built it: a "__proto__" key in it is an own property, kept as data.
          result: body.result as Record<string, unknown> | undefined,
          error: body.error as string | undefined,
          ts: body.ts as number | undefined,
        },
      };
    }
    case 'commands': {
      if (!isCommandId(body.id)) return problem(`id must be the command id (1 to ${MAX_COMMAND_ID} characters); got ${shown(body.id)}`);
      if (typeof body.name !== 'string' || !COMMAND_NAME.test(body.name)) return problem(`name must be ${COMMAND_NAME_RULE}; got ${shown(body.name)}`);
      if (!isTs(body.ts)) return problem(tsProblem('ts', body.ts));
      const timeoutMs = body.timeoutMs;
      if (timeoutMs !== undefined && !(typeof timeoutMs === 'number' && Number.isInteger(timeoutMs) && timeoutMs > 0 && timeoutMs <= COMMAND_TIMEOUT_MAX_MS)) {
        return problem(`timeoutMs must be an integer from 1 to ${COMMAND_TIMEOUT_MAX_MS}; got ${shown(timeoutMs)}`);
      }
      return { ok: true, message: { kind, device, id: body.id, name: body.name, ts: body.ts, timeoutMs } };
    }
    default:
      return reject('other', 'bad_topic', device, `unknown topic kind ${shown(kind)}`);
  }
}

/** True when objects and arrays inside `value` nest no deeper than `max` levels (iterative: no recursion limit). */
export function nestedAtMost(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (typeof item !== 'object' || item === null) continue;
    if (depth > max) return false;
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return true;
}
