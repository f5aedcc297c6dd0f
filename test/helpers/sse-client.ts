import { EventSource } from 'eventsource';
import { SSE_EVENTS } from '../../src/protocol.js';
import { eventually } from './wait.js';

/** The service's event names, and `message` for an event without a name (which the service never sends). */
export const EVENT_NAMES = [...SSE_EVENTS, 'message'];

export interface Received {
  type: string;
  data: any;
  id: string;
}

/** A real EventSource (the `eventsource` package) that records every event it dispatches. */
export class SseCollector {
  readonly events: Received[] = [];
  /** When each event arrived (ms), index for index with `events`. */
  readonly arrivals: number[] = [];
  readonly source: EventSource;
  errors = 0;
  opens = 0;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.source = new EventSource(url, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
    });
    for (const type of EVENT_NAMES) {
      this.source.addEventListener(type, (e) => {
        const message = e as unknown as { data: string; lastEventId: string };
        this.events.push({ type, data: JSON.parse(message.data), id: message.lastEventId });
        this.arrivals.push(Date.now());
      });
    }
    this.source.addEventListener('error', () => {
      this.errors += 1;
    });
    this.source.addEventListener('open', () => {
      this.opens += 1;
    });
  }

  of(type: string): Received[] {
    return this.events.filter((e) => e.type === type);
  }

  async waitFor(predicate: (e: Received) => boolean, what: string, timeoutMs = 5_000): Promise<Received> {
    return eventually(() => this.events.find(predicate), what, timeoutMs, () => this.events.slice(-5));
  }

  async waitForCount(type: string, count: number, timeoutMs = 5_000): Promise<Received[]> {
    await eventually(() => this.of(type).length >= count, `${count} ${type} events`, timeoutMs, () => this.of(type).length);
    return this.of(type);
  }

  close(): void {
    this.source.close();
  }
}
