// A stream filtered to a quiet device, with a real EventSource (the `eventsource` package) and a
// real Mosquitto: after far more than SSE_REPLAY_SIZE events from other devices, a short
// disconnect resumes with nothing missed and no reset, because the stream's position reached the
// client in a `position` event no listener of the other names sees. The control: the
// id of the last event the client was actually dispatched has left the window, so resuming from
// it (the old behaviour, with position-less heartbeats) gets `reset`.
import { describe, expect, it } from 'vitest';
import { telemetry } from '../helpers/mqtt.js';
import { CuttableRelay } from '../helpers/relay.js';
import { SseCollector } from '../helpers/sse-client.js';
import { parseAll } from '../helpers/sse-parser.js';
import { withBrokerAndService, type TestService } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

const REPLAY = 100;
const stage = withBrokerAndService();
const { cleanup } = stage;

async function service(name: string, heartbeatMs: number): Promise<TestService & { relay: CuttableRelay }> {
  const running = await stage.service(name, {
    SSE_REPLAY_SIZE: String(REPLAY),
    SSE_HEARTBEAT_MS: String(heartbeatMs),
    SSE_RETRY_MS: '200',
    // One publisher stands in for many devices, at a rate no per-device limit should shape here.
    DEVICE_MAX_MSG_RATE: '0',
    DEVICE_ADMIT_RATE: '0',
  });
  const relay = await CuttableRelay.start(running.port);
  cleanup.push(() => relay.stop());
  return Object.assign(running, { relay });
}

function alert(seq: number, severity: string, message: string): string {
  return JSON.stringify({ ts: Date.now(), seq, type: 'pressure', severity, message });
}

/** Telemetry from devices other than the quiet one; waits until the service has applied all of it. */
async function noise(svc: TestService, count: number, from: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    stage.publisher.publish(`${svc.prefix}/noisy-${i % 5}/telemetry`, telemetry(from + i, { n: from + i }), { qos: 0 });
    if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const last = from + count - 1;
  await eventually(() => svc.service.store.get(`noisy-${(count - 1) % 5}`)?.telemetry?.seq === last, `noise up to ${last} applied`, 10_000);
}

/** Resumes from `lastEventId` on a plain request and returns the first event of the answer. */
async function firstEventAfter(url: string, lastEventId: string): Promise<string> {
  const controller = new AbortController();
  const res = await fetch(`${url}/events?device=quiet`, { headers: { 'Last-Event-ID': lastEventId }, signal: controller.signal });
  const reader = res.body!.getReader();
  let text = '';
  try {
    for (let i = 0; i < 100 && parseAll(text).events.length === 0; i += 1) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
    }
  } finally {
    controller.abort();
  }
  return parseAll(text).events[0]?.type ?? 'none';
}

describe('quiet filtered streams', () => {
  for (const [name, heartbeatMs, carrier] of [
    ['heartbeat', 200, 'heartbeats 200 ms apart (and position blocks)'],
    ['position', 55_000, 'a position block after skipped events (heartbeats far apart)'],
  ] as const) {
    it(`resume after a short disconnect past ${REPLAY * 3} other events, with no reset and nothing missed: position carried by ${carrier}`, async () => {
      const svc = await service(`quiet-${name}`, heartbeatMs);
      await stage.publisher.publishAsync(`${svc.prefix}/quiet/events`, alert(1, 'info', 'first'), { qos: 1 });
      await eventually(() => svc.service.store.has('quiet'), 'quiet known');
      const client = new SseCollector(`${svc.relay.url}/events?device=quiet`);
      cleanup.push(() => client.close());
      await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
      await stage.publisher.publishAsync(`${svc.prefix}/quiet/events`, alert(2, 'info', 'second'), { qos: 1 });
      const dispatched = await client.waitFor((e) => e.type === 'alert' && e.data.message === 'second', 'the quiet device event');

      // Three replay windows of other devices' telemetry: the last dispatched id falls out.
      await noise(svc, REPLAY * 3, 1);
      const head = svc.service.hub.idOf(svc.service.hub.head);
      // The position the client was sent without an event; with heartbeats 55 s apart, only
      // the position block can have carried it (the last position block is at most a quarter
      // of the window behind the head).
      const position = await eventually(() => {
        const ids = [...svc.relay.sentToClients().matchAll(/event: position\nid: ([0-9a-z]+-(\d+))\ndata: \{\}\n\n/g)];
        const last = ids.at(-1);
        return last && Number(last[2]) >= svc.service.hub.head - REPLAY / 4 ? last[1] : undefined;
      }, 'a position id near the head relayed to the client', 5_000, () => head);
      expect(svc.service.hub.covers(Number(position.split('-')[1]))).toBe(true);

      // A short outage: the connection drops; meanwhile the quiet device raises an alert.
      expect(svc.relay.cut()).toBe(1);
      await stage.publisher.publishAsync(`${svc.prefix}/quiet/events`, alert(3, 'critical', 'during the gap'), { qos: 1 });
      const resumed = await client.waitFor((e) => e.type === 'alert' && e.data.message === 'during the gap', 'the alert raised during the gap', 10_000);
      expect(resumed.data.severity).toBe('critical');
      expect(client.opens).toBe(2);
      expect(client.of('reset'), 'no reset').toEqual([]);
      expect(client.of('snapshot'), 'one snapshot, the first').toHaveLength(1);
      const reconnect = svc.relay.fromClients.filter((r) => r.startsWith('GET /events')).at(-1)!;
      const sentId = /^last-event-id: (.*)$/im.exec(reconnect)?.[1]?.trim();
      expect(sentId, 'the reconnect named a position newer than the last dispatched event').not.toBe(dispatched.id);
      expect(Number(sentId!.split('-')[1])).toBeGreaterThanOrEqual(Number(position.split('-')[1]));

      // The control: from the last id the client was dispatched, the service cannot resume.
      expect(svc.service.hub.covers(Number(dispatched.id.split('-')[1]))).toBe(false);
      expect(await firstEventAfter(svc.url, dispatched.id)).toBe('reset');
    });
  }
});
