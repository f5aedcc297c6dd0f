import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { POSITION_EVENT } from '../../src/protocol.js';
import { encodeFrame, encodeJsonEvent, encodePosition, encodeRetry, HEARTBEAT, jitter } from '../../src/sse/frame.js';
import { parseAll } from '../helpers/sse-parser.js';

describe('SSE frame encoding', () => {
  it('encodes event, id and one-line data that a browser parses back exactly', () => {
    const parsed = parseAll(encodeFrame({ event: 'telemetry', id: 'abc-1', data: '{"a":1}' }));
    expect(parsed.events).toEqual([{ type: 'telemetry', data: '{"a":1}', lastEventId: 'abc-1' }]);
  });

  it('splits multi-line data into data lines so every line break kind survives as LF', () => {
    const parsed = parseAll(encodeFrame({ event: 'x', data: 'one\ntwo\r\nthree\rfour' }));
    expect(parsed.events[0]?.data).toBe('one\ntwo\nthree\nfour');
  });

  it('keeps a leading space and colons inside data', () => {
    const parsed = parseAll(encodeFrame({ data: ' lead: ing' }));
    expect(parsed.events[0]?.data).toBe(' lead: ing');
  });

  it('never lets CR, LF or NUL inside JSON strings start a new field', () => {
    const hostile = { message: 'a\r\nevent: reset\rid: evil\n\ndata: x\0', type: 'x\u2028y' };
    const parsed = parseAll(encodeJsonEvent('alert', 'inst-7', hostile).toString('utf8'));
    expect(parsed.events).toHaveLength(1);
    expect(parsed.events[0]?.type).toBe('alert');
    expect(parsed.events[0]?.lastEventId).toBe('inst-7');
    expect(JSON.parse(parsed.events[0]!.data)).toEqual(hostile);
  });

  it('refuses event names and ids that could end a line or be ignored', () => {
    expect(() => encodeFrame({ event: 'a\nb', data: '' })).toThrow(TypeError);
    expect(() => encodeFrame({ event: '', data: '' })).toThrow(TypeError);
    expect(() => encodeFrame({ id: 'a\rb', data: '' })).toThrow(TypeError);
    expect(() => encodeFrame({ id: 'a\0b', data: '' })).toThrow(TypeError);
    expect(() => encodeFrame({ retry: 1.5 })).toThrow(TypeError);
  });

  it('writes retry as digits only, which the parser takes as the reconnection time', () => {
    expect(parseAll(encodeRetry(2999.6).toString()).retry).toBe(3000);
  });

  it('sends heartbeats as comments that dispatch no event', () => {
    const parsed = parseAll(HEARTBEAT.toString());
    expect(parsed.events).toEqual([]);
    expect(parsed.comments).toEqual([' keepalive']);
  });

  it('sends a position as a `position` event: it moves the last event id, and as a heartbeat it is also a comment', () => {
    const parsed = parseAll(`${encodeFrame({ event: 'alert', id: 'abc-3', data: '{}' })}${encodePosition('abc-90').toString()}`);
    expect(parsed.events.map((e) => [e.type, e.lastEventId])).toEqual([['alert', 'abc-3'], [POSITION_EVENT, 'abc-90']]);
    expect(parsed.lastEventId).toBe('abc-90');
    const beat = parseAll(encodePosition('abc-91', true).toString());
    expect(beat.comments).toEqual([' keepalive']);
    expect(beat.events).toEqual([{ type: POSITION_EVENT, data: '{}', lastEventId: 'abc-91' }]);
    expect(() => encodePosition('a\nb')).toThrow(TypeError);
  });

  it('jitters retry uniformly within half to one and a half times the base', () => {
    expect(jitter(3000, () => 0)).toBe(1500);
    expect(jitter(3000, () => 0.999999)).toBe(4500);
    const values = new Set(Array.from({ length: 50 }, () => jitter(3000)));
    expect(values.size).toBeGreaterThan(10);
  });

  it('round-trips any string, control characters and unicode included, through a spec parser', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.stringMatching(/^[a-z]{1,10}$/), (data, event) => {
        const parsed = parseAll(encodeFrame({ event, id: 'i-1', data }));
        expect(parsed.events).toHaveLength(1);
        expect(parsed.events[0]!.data).toBe(data.replace(/\r\n|\r/g, '\n'));
        expect(parsed.events[0]!.type).toBe(event);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips any JSON value exactly, as one data line', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string({ unit: 'binary' }), (value, text) => {
        const payload = { value, text };
        const frame = encodeJsonEvent('telemetry', 'i-2', payload).toString('utf8');
        expect(frame.split('\n').filter((l) => l.startsWith('data:'))).toHaveLength(1);
        const parsed = parseAll(frame);
        expect(JSON.parse(parsed.events[0]!.data)).toEqual(JSON.parse(JSON.stringify(payload)));
      }),
      { numRuns: 300 },
    );
  });
});
