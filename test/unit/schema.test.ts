import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parseMessage, parseTopic } from '../../src/devices/schema.js';
import { COMMAND_TIMEOUT_MAX_MS, DEFAULT_TOPIC_PREFIX as P, MAX_MESSAGE_CHARS, MAX_METRICS, MAX_NESTING } from '../../src/protocol.js';

const ts = 1_790_000_000_000;
const parse = (topic: string, body: unknown, max = loadConfig({ AUTH: 'off' }).mqtt.maxPayloadBytes) =>
  parseMessage(P, topic, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), max);

describe('device message validation', () => {
  it('reads the device id and kind from the topic', () => {
    expect(parseTopic(P, `${P}/pump-7/telemetry`)).toEqual({ kind: 'telemetry', device: 'pump-7' });
    expect(parseTopic('plant/a', 'plant/a/x_1/status')).toEqual({ kind: 'status', device: 'x_1' });
    expect(parseTopic(P, `${P}/a/b/telemetry`)).toBeUndefined();
    expect(parseTopic(P, 'other/a/telemetry')).toBeUndefined();
    expect(parseTopic(P, `${P}/a b/status`)).toEqual({ kind: 'status', device: undefined });
  });

  it('accepts each documented payload shape', () => {
    expect(parse(`${P}/d/status`, { state: 'online', ts }).ok).toBe(true);
    expect(parse(`${P}/d/status`, { state: 'offline' }).ok).toBe(true);
    expect(parse(`${P}/d/telemetry`, { ts, seq: 1, metrics: { t: 1.5, h: -2 } }).ok).toBe(true);
    expect(parse(`${P}/d/events`, { ts, seq: 2, type: 'temp-high', severity: 'warning', message: 'hot' }).ok).toBe(true);
    expect(parse(`${P}/d/acks`, { id: 'c1', ok: false, error: 'nope', ts }).ok).toBe(true);
    expect(parse(`${P}/d/commands`, { id: 'c1', name: 'reboot', params: {}, ts, timeoutMs: 5000 })).toMatchObject({
      ok: true, message: { kind: 'commands', device: 'd', id: 'c1', name: 'reboot', ts, timeoutMs: 5000 },
    });
    expect(parse(`${P}/d/commands`, { id: 'c1', name: 'reboot', ts })).toMatchObject({ ok: true, message: { timeoutMs: undefined } });
  });

  it.each([
    [`${P}/bad id/telemetry`, { ts, seq: 1, metrics: { t: 1 } }, 'bad_topic'],
    [`${P}/d/telemetry`, 'not json', 'bad_json'],
    [`${P}/d/telemetry`, [1, 2], 'bad_shape'],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: { t: 'warm' } }, 'bad_shape'],
    [`${P}/d/telemetry`, { ts, seq: -1, metrics: { t: 1 } }, 'bad_shape'],
    [`${P}/d/telemetry`, { ts: 1790000000, seq: 1, metrics: { t: 1 } }, 'bad_shape'],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: {} }, 'bad_shape'],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: { 'a\nb': 1 } }, 'bad_shape'],
    [`${P}/d/status`, { state: 'sleeping', ts }, 'bad_shape'],
    [`${P}/d/events`, { ts, seq: 1, type: 'x y', severity: 'info', message: '' }, 'bad_shape'],
    [`${P}/d/events`, { ts, seq: 1, type: 'x', severity: 'fatal', message: '' }, 'bad_shape'],
    [`${P}/d/events`, { ts, seq: 1, type: 'x', severity: 'info', message: 'm'.repeat(MAX_MESSAGE_CHARS + 1) }, 'bad_shape'],
    [`${P}/d/acks`, { id: '', ok: true }, 'bad_shape'],
    [`${P}/d/commands`, { id: 'c1', name: 'a b', ts }, 'bad_shape'],
    [`${P}/d/commands`, { id: 'c1', name: 'ping', ts, timeoutMs: COMMAND_TIMEOUT_MAX_MS + 1 }, 'bad_shape'],
  ])('rejects %s %j as %s', (topic, body, reason) => {
    const result = parse(topic, body);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toBe(reason);
  });

  it(`refuses an ack result nested deeper than ${MAX_NESTING} levels, which re-encoding could not survive`, () => {
    const nest = (levels: number): unknown => {
      let value: unknown = 1;
      for (let i = 0; i < levels; i += 1) value = i % 2 ? [value] : { v: value };
      return value;
    };
    expect(parse(`${P}/d/acks`, { id: 'c1', ok: true, result: { a: nest(MAX_NESTING - 1) } }).ok).toBe(true);
    // What fits in the default 64 KiB payload limit: ~6,500 levels.
    const deep = '{"id":"c1","ok":true,"result":' + '{"a":'.repeat(6_500) + '1' + '}'.repeat(6_501);
    const result = parse(`${P}/d/acks`, deep);
    expect(result).toMatchObject({ ok: false, reason: 'bad_shape' });
    if (!result.ok) expect(result.detail).toContain(`${MAX_NESTING} levels`);
  });

  it('rejects a payload over the limit before parsing it', () => {
    const result = parse(`${P}/d/telemetry`, { ts, seq: 1, metrics: { t: 1 }, pad: 'x'.repeat(100) }, 64);
    expect(result).toMatchObject({ ok: false, reason: 'too_large', device: 'd' });
  });

  it('keeps CR, LF and NUL inside alert messages as data, to be escaped on the way out', () => {
    const result = parse(`${P}/d/events`, { ts, seq: 1, type: 'x', severity: 'info', message: 'a\r\nb\0' });
    expect(result.ok && result.message.kind === 'events' && result.message.message).toBe('a\r\nb\0');
  });

  it('accepts epoch milliseconds with a fractional part', () => {
    const result = parse(`${P}/d/telemetry`, '{"ts":1796182012369.123,"seq":1,"metrics":{"t":1}}');
    expect(result).toMatchObject({ ok: true, message: { ts: 1796182012369.123 } });
    expect(parse(`${P}/d/status`, { state: 'online', ts: 1796182012369.5 }).ok).toBe(true);
    expect(parse(`${P}/d/events`, { ts: 1796182012369.25, seq: 1, type: 'x', severity: 'info', message: '' }).ok).toBe(true);
  });

  it.each([
    [`${P}/d/telemetry`, { ts: 1796182012, seq: 1, metrics: { t: 1 } }, 'ts must be epoch milliseconds (1e12 to 1e13); got 1796182012 (seconds?)'],
    [`${P}/d/telemetry`, { ts: 1796182012369123, seq: 1, metrics: { t: 1 } }, 'got 1796182012369123 (microseconds?)'],
    [`${P}/d/telemetry`, { ts: '1796182012369', seq: 1, metrics: { t: 1 } }, 'got "1796182012369" (a string, not a number)'],
    [`${P}/d/status`, { state: 'online' }, undefined],
    [`${P}/d/status`, { state: 'sleeping', ts }, 'state must be "online" or "offline"; got "sleeping"'],
    [`${P}/d/telemetry`, { ts, seq: 1.5, metrics: { t: 1 } }, 'seq must be a non-negative integer; got 1.5'],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: { t: 'warm' } }, 'metric t must be a finite number; got "warm"'],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: { ['x'.repeat(80)]: 1 } }, `got "${'x'.repeat(39)}…`],
    [`${P}/d/telemetry`, { ts, seq: 1, metrics: {} }, `metrics must hold 1 to ${MAX_METRICS} values; got 0`],
    [`${P}/d/events`, { ts, seq: 1, type: 'x', severity: 'fatal', message: '' }, 'severity must be info, warning or critical; got "fatal"'],
    [`${P}/d/events`, { ts, seq: 1, type: 'x', severity: 'info', message: 'm'.repeat(MAX_MESSAGE_CHARS + 1) }, `got ${MAX_MESSAGE_CHARS + 1} characters`],
    [`${P}/d/acks`, { id: 'c1', ok: 'yes' }, 'ok must be true or false; got "yes"'],
    [`${P}/d/telemetry`, 'not json', 'payload is not valid JSON'],
    [`${P}/bad id/telemetry`, { ts, seq: 1, metrics: { t: 1 } }, 'got "bad id"'],
  ])('says exactly what is wrong with %s %j', (topic, body, detail) => {
    const result = parse(topic, body);
    if (detail === undefined) return expect(result.ok).toBe(true);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.detail).toContain(detail);
  });

  it('keeps a metric named __proto__ as a metric, never as the object\'s prototype', () => {
    const result = parse(`${P}/d/telemetry`, '{"ts":1790000000000,"seq":1,"metrics":{"__proto__":1,"constructor":2}}');
    expect(result.ok).toBe(true);
    if (!result.ok || result.message.kind !== 'telemetry') return;
    const { metrics } = result.message;
    expect(Object.keys(metrics)).toEqual(['__proto__', 'constructor']);
    expect(JSON.stringify(metrics)).toBe('{"__proto__":1,"constructor":2}');
    expect(Object.getPrototypeOf(metrics)).toBe(Object.prototype);
  });

  it('cannot be tricked by __proto__ elsewhere: no inherited field passes, an ack result keeps it as data', () => {
    expect(parse(`${P}/d/status`, '{"__proto__":{"state":"online"}}')).toMatchObject({ ok: false, reason: 'bad_shape' });
    expect(parse(`${P}/d/telemetry`, '{"__proto__":{"ts":1790000000000,"seq":1,"metrics":{"t":1}}}').ok).toBe(false);
    expect(parse(`${P}/d/telemetry`, '{"ts":1790000000000,"seq":1,"metrics":{"__proto__":{"t":1}}}')).toMatchObject({ ok: false, reason: 'bad_shape' });
    const ack = parse(`${P}/d/acks`, '{"id":"c1","ok":true,"result":{"__proto__":{"x":1}}}');
    expect(ack.ok && ack.message.kind === 'acks' && JSON.stringify(ack.message.result)).toBe('{"__proto__":{"x":1}}');
  });

  it('reads an empty payload (a cleared retained message) as cleared, never as bad JSON', () => {
    expect(parseMessage(P, `${P}/d/status`, Buffer.alloc(0), 64)).toEqual({
      ok: true, message: { kind: 'cleared', topicKind: 'status', device: 'd' },
    });
    expect(parseMessage(P, `${P}/d/telemetry`, Buffer.alloc(0), 64)).toMatchObject({ ok: true, message: { kind: 'cleared' } });
  });
});
