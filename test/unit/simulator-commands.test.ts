import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { COMMAND_TIMEOUT_MAX_MS, MAX_BODY_BYTES, MAX_COMMAND_BYTES } from '../../src/protocol.js';
import { ackTopic, buildAck, executeCommand, parseCommand, planAck, type Command } from '../../src/simulator/commands.js';

const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const command = (name: string, params: Record<string, unknown> = {}): Command => ({ id: 'c1', name, params, ts: 1 });

describe('command parsing', () => {
  it('accepts a well-formed command and defaults missing params to an empty object', () => {
    expect(parseCommand(json({ id: 'abc', name: 'ping', ts: 1_700_000_000_000 }))).toEqual({
      ok: true, command: { id: 'abc', name: 'ping', params: {}, ts: 1_700_000_000_000 },
    });
  });

  it.each([
    ['not JSON', Buffer.from('reboot now')],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
    ['a JSON array', json([{ id: 'a', name: 'ping' }])],
    ['JSON null', json(null)],
    ['a missing id', json({ name: 'ping' })],
    ['a numeric id', json({ id: 7, name: 'ping' })],
    ['an id with a line break', json({ id: 'a\r\nb', name: 'ping' })],
    ['an id of 129 characters', json({ id: 'x'.repeat(129), name: 'ping' })],
    ['a payload over MAX_COMMAND_BYTES', json({ id: 'a', name: 'ping', params: { pad: 'x'.repeat(MAX_COMMAND_BYTES) } })],
  ])('rejects %s without an id to answer to', (_, payload) => {
    const parsed = parseCommand(payload);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.id).toBeUndefined();
  });

  it('accepts the largest command the API lets through, as the service publishes it', () => {
    // An API body of exactly MAX_BODY_BYTES, then the envelope the service adds (commands.ts).
    const body = { name: 'set-interval', params: { intervalMs: 500, pad: '' }, timeoutMs: COMMAND_TIMEOUT_MAX_MS };
    body.params.pad = 'x'.repeat(MAX_BODY_BYTES - JSON.stringify(body).length);
    expect(JSON.stringify(body).length).toBe(MAX_BODY_BYTES);
    const payload = json({ id: randomUUID(), name: body.name, params: body.params, ts: Date.now(), timeoutMs: body.timeoutMs });
    expect(payload.length).toBeGreaterThan(MAX_BODY_BYTES);
    expect(parseCommand(payload)).toMatchObject({ ok: true, command: { name: 'set-interval' } });
  });

  it.each([
    ['a missing name', { id: 'a' }],
    ['a name that is not a word', { id: 'a', name: 'reboot; rm -rf /' }],
    ['params that are not an object', { id: 'a', name: 'ping', params: [1] }],
    ['a ts that is not a number', { id: 'a', name: 'ping', ts: 'now' }],
  ])('rejects %s but keeps the id so the failure can be acked', (_, body) => {
    const parsed = parseCommand(json(body));
    expect(parsed).toMatchObject({ ok: false, id: 'a' });
  });
});

describe('command execution', () => {
  it('answers ping with pong', () => {
    expect(executeCommand(command('ping'))).toMatchObject({ ok: true, result: { pong: true }, effect: { kind: 'none' } });
  });

  it('acknowledges reboot and asks the device to reboot', () => {
    expect(executeCommand(command('reboot'))).toMatchObject({ ok: true, effect: { kind: 'reboot' } });
  });

  it('sets a new interval within 100 to 60000 ms', () => {
    expect(executeCommand(command('set-interval', { intervalMs: 250 }))).toEqual({
      ok: true, result: { intervalMs: 250 }, effect: { kind: 'set-interval', intervalMs: 250 },
    });
  });

  it.each([[99], [60_001], [1.5], ['500'], [null], [undefined]])('refuses set-interval with intervalMs %s', (intervalMs) => {
    const outcome = executeCommand(command('set-interval', { intervalMs }));
    expect(outcome.ok).toBe(false);
    expect(outcome.error).toMatch(/intervalMs/);
    expect(outcome.effect).toEqual({ kind: 'none' });
  });

  it('refuses an unknown command by name', () => {
    expect(executeCommand(command('self-destruct'))).toMatchObject({ ok: false, error: 'unknown command "self-destruct"' });
  });
});

describe('acks', () => {
  it('carry the command id, result and time on success, without an error field', () => {
    expect(buildAck('c1', { ok: true, result: { pong: true } }, 5)).toEqual({ id: 'c1', ok: true, result: { pong: true }, ts: 5 });
  });

  it('carry an error string and an empty result on failure', () => {
    expect(buildAck('c1', { ok: false, result: { leaked: 1 }, error: 'nope' }, 5)).toEqual({
      id: 'c1', ok: false, result: {}, error: 'nope', ts: 5,
    });
  });

  it('always go to the device\'s own acks topic, refusing a foreign response topic', () => {
    const own = 'devices/sim-001/acks';
    expect(ackTopic(undefined, own)).toEqual({ topic: own, refused: false });
    expect(ackTopic(own, own)).toEqual({ topic: own, refused: false });
    expect(ackTopic('devices/sim-002/commands', own)).toEqual({ topic: own, refused: true });
  });
});

describe('answering an incoming command', () => {
  const own = 'devices/sim-001/acks';

  it('echoes the correlation data and answers on the own acks topic', () => {
    const plan = planAck(json({ id: 'c9', name: 'ping' }), { responseTopic: own, correlationData: Buffer.from('xyz') }, own);
    expect(plan).toMatchObject({ id: 'c9', topic: own, refusedResponseTopic: false, outcome: { ok: true } });
    expect(plan.properties.correlationData?.toString()).toBe('xyz');
  });

  it('sends no correlation data when the command had none', () => {
    expect(planAck(json({ id: 'c9', name: 'ping' }), undefined, own).properties).toEqual({});
  });

  it('does not let a response topic steer the ack to another device', () => {
    const plan = planAck(json({ id: 'c9', name: 'ping' }), { responseTopic: 'devices/sim-002/acks' }, own);
    expect(plan).toMatchObject({ topic: own, refusedResponseTopic: true });
  });

  it('answers a bad command that has an id with a failed ack', () => {
    expect(planAck(json({ id: 'c9', name: 'set-interval', params: { intervalMs: 1 } }), undefined, own))
      .toMatchObject({ id: 'c9', outcome: { ok: false, error: expect.stringContaining('intervalMs') } });
  });

  it('leaves a command without a usable id unanswered', () => {
    const plan = planAck(Buffer.from('{oops'), { correlationData: Buffer.from('x') }, own);
    expect(plan.id).toBeUndefined();
    expect(plan.outcome.error).toBe('command is not valid UTF-8 JSON');
  });
});
