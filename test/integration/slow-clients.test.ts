import { connect, type Socket } from 'node:net';
import { getDefaultHighWaterMark } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { encodeJsonEvent } from '../../src/sse/frame.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';

let broker: Mosquitto;
let publisher: MqttClient;
let svc: RunningService;
let prefix: string;
/** SSE_CLIENT_BUFFER_BYTES here: what a client may have queued before it is cut. */
const BUFFER_BYTES = 262_144;

beforeAll(async () => {
  broker = await Mosquitto.start();
  publisher = await connectPublisher(broker.url);
  const ids = isolation('slow');
  prefix = ids.MQTT_TOPIC_PREFIX;
  // One publisher stands in for many devices, faster than the per-device limit lets through: off here.
  svc = await startService({ MQTT_URL: broker.url, ...ids, SSE_CLIENT_BUFFER_BYTES: String(BUFFER_BYTES), SSE_HEARTBEAT_MS: '55000', DEVICE_MAX_MSG_RATE: '0', DEVICE_MAX_EVENT_RATE: '0' });
});

afterAll(async () => {
  await svc?.stop();
  await publisher?.endAsync();
  await broker?.stop();
});

/** A client that sends a request and then never reads a byte: the kernel buffers fill, then ours. */
function stalledClient(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' }, () => {
      socket.write('GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n');
      socket.pause();
      resolve(socket);
    });
    socket.on('error', reject);
  });
}

describe('slow clients', () => {
  it('evicts a client that never reads once its queued bytes pass the bound, while others get every event', async () => {
    const stalled = await stalledClient(svc.port);
    const healthy = new SseCollector(`${svc.url}/events`);
    try {
      await healthy.waitFor((e) => e.type === 'snapshot', 'snapshot');
      await eventually(() => svc.service.hub.clientCount === 2, 'both streams open');
      let maxBacklog = 0;

      // Alerts are never conflated, so the stalled client's backlog can only grow until it is cut.
      const total = 6_000;
      const message = 'm'.repeat(1000);
      const base = Date.now();
      const burst = 100;
      // Paced in small bursts, as real devices send: a reading client keeps up, a stalled one cannot.
      for (let seq = 1; seq <= total; seq += 1) {
        publisher.publish(`${prefix}/d1/events`, JSON.stringify({ ts: base + seq, seq, type: 'load', severity: 'info', message }), { qos: 0 });
        if (seq % burst === 0) {
          await sleep(10);
          maxBacklog = Math.max(maxBacklog, svc.service.hub.backlogBytes);
        }
      }
      await eventually(() => svc.service.hub.clientCount === 1, 'the stalled client evicted', 20_000, () => [svc.service.hub.clientCount, healthy.of('alert').length, healthy.errors]);
      const alerts = await healthy.waitForCount('alert', total, 20_000);
      expect(alerts.map((e) => e.data.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));

      const metrics = await (await fetch(`${svc.url}/metrics`)).text();
      expect(metrics).toContain('sse_disconnects_total{reason="slow"} 1');
      console.info(`stalled client: evicted as slow; largest backlog held ${maxBacklog} bytes (queue bound ${BUFFER_BYTES}, plus the write the socket has not taken); the reading client got ${alerts.length}/${total} in order`);
      // Its backlog stayed bounded: at most the queue limit, plus the socket's own buffer and the
      // last batch it refused (MQTT may hand over two bursts in one turn), out of the 6 MB it was sent.
      const alertBytes = encodeJsonEvent('alert', `${'0'.repeat(32)}-${total}`, { device: 'd1', ts: base, seq: total, type: 'load', severity: 'info', message, at: base }).length;
      const bound = BUFFER_BYTES + getDefaultHighWaterMark(false) + 2 * burst * alertBytes;
      expect(maxBacklog, `largest backlog held for the stalled client: ${maxBacklog} bytes`).toBeGreaterThan(0);
      expect(maxBacklog, `largest backlog held for the stalled client: ${maxBacklog} bytes`).toBeLessThan(bound);
    } finally {
      healthy.close();
      stalled.destroy();
    }
  });

  it('conflates telemetry per device for a client that is behind instead of queueing every value', async () => {
    const stalled = await stalledClient(svc.port);
    try {
      await eventually(() => svc.service.hub.clientCount === 1, 'stream open');
      const before = await conflated();
      const base = Date.now();
      const pad = 'p'.repeat(60);
      // Many devices' worth of telemetry fills the socket; afterwards each device's values replace each other.
      for (let seq = 1; seq <= 3_000; seq += 1) {
        const metrics = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`${pad}${i}`, seq]));
        publisher.publish(`${prefix}/t${seq % 10}/telemetry`, JSON.stringify({ ts: base + seq, seq, metrics }), { qos: 0 });
        if (seq % 100 === 0) await sleep(10);
      }
      await eventually(async () => (await conflated()) > before, 'telemetry conflated', 20_000);
      // Conflation kept the backlog small: the client was never cut for size.
      expect(svc.service.hub.clientCount).toBe(1);
    } finally {
      stalled.destroy();
    }
  });
});

async function conflated(): Promise<number> {
  const text = await (await fetch(`${svc.url}/metrics`)).text();
  return Number(/^sse_events_conflated_total (\d+)/m.exec(text)?.[1] ?? 'NaN');
}
