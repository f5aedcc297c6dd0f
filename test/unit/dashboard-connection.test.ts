// The dashboard's stream wrapper (web/connection.js) over a stand-in EventSource: what it does
// with the service's `position` events. The page in a real browser is test/e2e/dashboard.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Connection } from '../../web/connection.js';
import { POSITION_EVENT, SSE_EVENTS } from '../../web/protocol.js';

class FakeEventSource extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  static opened: FakeEventSource[] = [];
  readyState = FakeEventSource.OPEN;
  constructor(readonly url: string) {
    super();
    FakeEventSource.opened.push(this);
  }
  emit(type: string, data: string, lastEventId: string): void {
    this.dispatchEvent(new MessageEvent(type, { data, lastEventId }));
  }
  /** A permanent failure (non-200 answer): the browser will not retry this one. */
  failForGood(): void {
    this.readyState = FakeEventSource.CLOSED;
    this.dispatchEvent(new Event('error'));
  }
  close(): void {}
}

describe('dashboard connection', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeEventSource.opened = [];
    vi.stubGlobal('EventSource', FakeEventSource);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('resumes a fresh EventSource from the last position, which is no event to show', () => {
    const seen: string[] = [];
    const handler = (name: string) => () => seen.push(name);
    const handlers = Object.fromEntries(
      SSE_EVENTS.map((n) => [n, handler(n)]),
    ) as never;
    let events = 0;
    const connection = new Connection('/events', handlers, () => {}, () => (events += 1));
    connection.start();
    const first = FakeEventSource.opened[0]!;
    first.emit('snapshot', JSON.stringify({ devices: [], mqtt: 'up' }), 'run-10');
    first.emit(POSITION_EVENT, '{}', 'run-900');
    expect(seen).toEqual(['snapshot']);
    expect(events, 'a position is not an event with data').toBe(1);
    first.failForGood();
    vi.advanceTimersByTime(1_000); // the first backoff is 0.5 to 1 s
    expect(FakeEventSource.opened).toHaveLength(2);
    expect(FakeEventSource.opened[1]!.url).toBe('/events?lastEventId=run-900');
  });

  it('ignores a position from a stream it has already replaced', () => {
    const handlers = new Proxy({}, { get: () => () => {} }) as never;
    const connection = new Connection('/events', handlers, () => {}, () => {});
    connection.start();
    const first = FakeEventSource.opened[0]!;
    first.emit('telemetry', JSON.stringify({ device: 'd', ts: 1, seq: 1, metrics: {} }), 'run-5');
    first.failForGood();
    vi.advanceTimersByTime(1_000);
    first.emit(POSITION_EVENT, '{}', 'run-99');
    expect(connection.lastEventId).toBe('run-5');
  });
});
