import { describe, expect, it } from 'vitest';
import { HttpError } from '../../src/http/errors.js';
import { DEVICE_ID_MAX_CHARS, MAX_LAST_EVENT_ID } from '../../src/protocol.js';
import { ALL_TYPES, TYPE_BIT } from '../../src/sse/event.js';
import { parseStreamRequest } from '../../src/http/stream-query.js';

const parse = (qs: string, header?: string) => parseStreamRequest(new URLSearchParams(qs), header);

function rejects(qs: string, code: string, header?: string): void {
  try {
    parse(qs, header);
  } catch (err) {
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(400);
    expect((err as HttpError).code).toBe(code);
    return;
  }
  throw new Error(`expected ${qs} to be rejected`);
}

describe('stream filters', () => {
  it('defaults to every device and every type', () => {
    expect(parse('').filter).toEqual({ devices: null, mask: ALL_TYPES });
  });

  it('accepts repeated device and comma-separated devices together', () => {
    expect([...parse('device=a&device=b&devices=c,d').filter.devices!]).toEqual(['a', 'b', 'c', 'd']);
  });

  it('maps types to bits, with event selecting alerts', () => {
    expect(parse('types=status,event').filter.mask).toBe(TYPE_BIT.status | TYPE_BIT.event);
  });

  it('rejects unknown types and bad device ids with 400', () => {
    rejects('types=telemetry,alerts', 'bad_types');
    rejects('types=', 'bad_types');
    rejects('device=a%20b', 'bad_device');
    expect([...parse(`device=${'x'.repeat(DEVICE_ID_MAX_CHARS)}`).filter.devices!]).toEqual(['x'.repeat(DEVICE_ID_MAX_CHARS)]);
    rejects(`device=${'x'.repeat(DEVICE_ID_MAX_CHARS + 1)}`, 'bad_device');
    rejects('devices=a,,b', 'bad_device');
  });

  it('ignores parameters it does not know, such as cache busters', () => {
    const request = parse('_=1700000000&device=a-1&t=x');
    expect([...(request.filter.devices ?? [])]).toEqual(['a-1']);
    expect(request.filter.mask).toBe(ALL_TYPES);
  });

  it('takes Last-Event-ID from the header before the query parameter', () => {
    expect(parse('lastEventId=q-1', 'h-2').lastEventId).toBe('h-2');
    expect(parse('lastEventId=q-1').lastEventId).toBe('q-1');
    expect(parse('', '').lastEventId).toBeUndefined();
  });

  it('rejects a Last-Event-ID far longer than any id the service issues', () => {
    expect(parse('', 'x'.repeat(MAX_LAST_EVENT_ID)).lastEventId).toBe('x'.repeat(MAX_LAST_EVENT_ID));
    rejects('', 'bad_last_event_id', 'x'.repeat(MAX_LAST_EVENT_ID + 1));
  });
});
