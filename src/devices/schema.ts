// Validation of everything devices send. Nothing from MQTT reaches the hub without passing here;
// what fails is reported with a reason from a fixed set and a short human detail.

import type { MqttKind, RejectReason } from '../metrics.js';
import {
  COMMAND_NAME,
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

export type DeviceMessage = StatusMessage | TelemetryMessage | AlertMessage | AckMessage | CommandMessage;

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
const isTs = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= MIN_TS && v < MAX_TS;
const isCommandId = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_COMMAND_ID;
const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export function parseMessage(prefix: string, topic: string, payload: Buffer, maxBytes: number): Parsed {
  const match = parseTopic(prefix, topic);
  if (!match) return reject('other', 'bad_topic', undefined, 'topic is not <prefix>/<id>/<status|telemetry|events|acks|commands>');
  const { kind, device } = match;
  if (device === undefined) return reject(kind, 'bad_topic', undefined, `device id must match ${DEVICE_ID_RULE}`);
  if (payload.length > maxBytes) return reject(kind, 'too_large', device, `payload of ${payload.length} bytes exceeds ${maxBytes}`);
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return reject(kind, 'bad_json', device, 'payload is not valid JSON');
  }
  if (!isObject(body)) return reject(kind, 'bad_shape', device, 'payload must be one JSON object');
  const problem = (detail: string) => reject(kind, 'bad_shape', device, detail);

  switch (kind) {
    case 'status': {
      if (body.state !== 'online' && body.state !== 'offline') return problem('state must be "online" or "offline"');
      if (body.ts !== undefined && !isTs(body.ts)) return problem('ts must be epoch milliseconds');
      return { ok: true, message: { kind, device, state: body.state, ts: body.ts as number | undefined } };
    }
    case 'telemetry': {
      if (!isTs(body.ts)) return problem('ts must be epoch milliseconds');
      if (!isSeq(body.seq)) return problem('seq must be a non-negative integer');
      if (!isObject(body.metrics)) return problem('metrics must be an object of numbers');
      const entries = Object.entries(body.metrics);
      if (entries.length === 0 || entries.length > MAX_METRICS) return problem(`metrics must hold 1 to ${MAX_METRICS} values`);
      const metrics: Record<string, number> = {};
      for (const [name, value] of entries) {
        if (!METRIC_NAME.test(name)) return problem('metric names must match [A-Za-z0-9_.-]{1,64}');
        if (typeof value !== 'number' || !Number.isFinite(value)) return problem(`metric ${name} must be a finite number`);
        metrics[name] = value;
      }
      return { ok: true, message: { kind, device, ts: body.ts, seq: body.seq, metrics } };
    }
    case 'events': {
      if (!isTs(body.ts)) return problem('ts must be epoch milliseconds');
      if (!isSeq(body.seq)) return problem('seq must be a non-negative integer');
      if (typeof body.type !== 'string' || !WORD.test(body.type)) return problem('type must be a word of [A-Za-z0-9_.-]');
      if (body.severity !== 'info' && body.severity !== 'warning' && body.severity !== 'critical') {
        return problem('severity must be info, warning or critical');
      }
      if (typeof body.message !== 'string' || body.message.length > MAX_MESSAGE) {
        return problem(`message must be a string of at most ${MAX_MESSAGE} characters`);
      }
      return {
        ok: true,
        message: { kind, device, ts: body.ts, seq: body.seq, type: body.type, severity: body.severity, message: body.message },
      };
    }
    case 'acks': {
      if (!isCommandId(body.id)) return problem('id must be the command id');
      if (typeof body.ok !== 'boolean') return problem('ok must be true or false');
      if (body.result !== undefined && !isObject(body.result)) return problem('result must be an object');
      if (body.result !== undefined && !nestedAtMost(body.result, MAX_NESTING)) {
        return problem(`result must nest at most ${MAX_NESTING} levels deep`);
      }
      if (body.error !== undefined && (typeof body.error !== 'string' || body.error.length > MAX_MESSAGE)) {
        return problem(`error must be a string of at most ${MAX_MESSAGE} characters`);
      }
      if (body.ts !== undefined && !isTs(body.ts)) return problem('ts must be epoch milliseconds');
      return {
        ok: true,
        message: {
          kind,
          device,
          id: body.id,
          ok: body.ok,
          result: body.result as Record<string, unknown> | undefined,
          error: body.error as string | undefined,
          ts: body.ts as number | undefined,
        },
      };
    }
    case 'commands': {
      if (!isCommandId(body.id)) return problem('id must be the command id');
      if (typeof body.name !== 'string' || !COMMAND_NAME.test(body.name)) return problem('name must be a command name');
      if (!isTs(body.ts)) return problem('ts must be epoch milliseconds');
      const timeoutMs = body.timeoutMs;
      if (timeoutMs !== undefined && !(typeof timeoutMs === 'number' && Number.isInteger(timeoutMs) && timeoutMs > 0 && timeoutMs <= COMMAND_TIMEOUT_MAX_MS)) {
        return problem(`timeoutMs must be an integer from 1 to ${COMMAND_TIMEOUT_MAX_MS}`);
      }
      return { ok: true, message: { kind, device, id: body.id, name: body.name, ts: body.ts, timeoutMs } };
    }
    default:
      return reject('other', 'bad_topic', device, 'unknown topic kind');
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
