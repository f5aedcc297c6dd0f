import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { generateProjectUsers, Mosquitto } from '../../src/native/mosquitto.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { deviceLogin } from '../helpers/devices.js';
import { isolation, startService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';

// The broker goes away under a live stream; nothing published at QoS 1 may go missing or be
// shown twice, and the service must find its way back by itself.

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

function gaps(seqs: number[], total: number): string {
  const missing = Array.from({ length: total }, (_, i) => i + 1).filter((s) => !seqs.includes(s));
  const dupes = seqs.filter((s, i) => seqs.indexOf(s) !== i);
  const disorder = seqs.some((s, i) => i > 0 && s < seqs[i - 1]!);
  return `received ${seqs.length}/${total}; missing [${missing.slice(0, 20).join(',')}]; duplicates [${dupes.join(',')}]; out of order: ${disorder}`;
}

describe('broker faults', () => {
  it('delivers every QoS 1 event published before, during and after a broker restart to every client, in order, once', async () => {
    const users = generateProjectUsers();
    const broker = await Mosquitto.startProject({ users });
    cleanup.push(() => broker.stop());
    const logLines: string[] = [];
    const svc = await startService({
      MQTT_URL: broker.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      MQTT_CLIENT_ID: isolation('restart').MQTT_CLIENT_ID,
      LOG_LEVEL: 'info',
    }, { logStream: { write: (line: string) => void logLines.push(line) } });
    cleanup.push(() => svc.stop());
    const clients = Array.from({ length: 5 }, () => new SseCollector(`${svc.url}/events?types=telemetry,status`));
    cleanup.push(() => clients.forEach((c) => c.close()));
    await eventually(() => clients.every((c) => c.of('snapshot').length === 1), 'every stream open');

    // The device keeps a persistent session too, so what it queued while the broker was down is sent after.
    const device = await connectPublisher(broker.url, {
      ...(await deviceLogin(broker, 'rs-1')), clean: false, reconnectPeriod: 200, properties: { sessionExpiryInterval: 600 },
    });
    cleanup.push(() => device.endAsync(true));
    const total = 60;
    let restarted = false;
    for (let seq = 1; seq <= total; seq += 1) {
      device.publish('devices/rs-1/telemetry', telemetry(seq), { qos: 1 });
      if (seq === 20) {
        await broker.stop(); // SIGTERM: mosquitto saves its sessions
        await access(join(broker.dir, 'data', 'mosquitto.db')); // persistence really wrote
      }
      if (seq === 30) {
        await broker.restart();
        restarted = true;
      }
      await sleep(20);
    }
    expect(restarted).toBe(true);
    for (const [i, client] of clients.entries()) {
      await eventually(() => client.of('telemetry').length >= total, `client ${i} to receive ${total} events`, 20_000,
        () => gaps(client.of('telemetry').map((e) => e.data.seq), total));
      const seqs = client.of('telemetry').map((e) => e.data.seq as number);
      expect(seqs, gaps(seqs, total)).toEqual(Array.from({ length: total }, (_, k) => k + 1));
      expect(client.of('upstream').map((e) => e.data.mqtt)).toEqual(['down', 'up']);
    }
    const metrics = await (await fetch(`${svc.url}/metrics`)).text();
    expect(metrics).toMatch(/^mqtt_connected 1$/m);
    // The broker restored the service's session from its persistence file: the reconnect found
    // it (no resubscription needed), rather than the service silently starting a new one.
    const connects = logLines.map((l) => JSON.parse(l) as { msg: string; sessionPresent?: boolean }).filter((l) => l.msg === 'mqtt connected');
    expect(connects.map((l) => l.sessionPresent), 'sessionPresent on each connect').toEqual([false, true]);
    console.info(`broker restart (SIGTERM): ${clients.length} clients × ${total}/${total} events in order, 0 duplicates; session resumed; upstream down → up`);
  });

  it('after a crash that loses every session, resubscribes by itself: readiness 503 then 200, upstream down then up', async () => {
    const broker = await Mosquitto.start();
    cleanup.push(() => broker.stop());
    const ids = isolation('crash');
    const svc = await startService({ MQTT_URL: broker.url, ...ids });
    cleanup.push(() => svc.stop());
    const client = new SseCollector(`${svc.url}/events`);
    cleanup.push(() => client.close());
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');

    await broker.kill(); // SIGKILL: nothing saved
    await rm(join(broker.dir, 'data'), { recursive: true, force: true }); // and whatever was, gone
    await client.waitFor((e) => e.type === 'upstream' && e.data.mqtt === 'down', 'upstream down');
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(503);

    await broker.restart();
    await client.waitFor((e) => e.type === 'upstream' && e.data.mqtt === 'up', 'upstream up', 20_000);
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(200);

    // The broker remembered nothing: delivery works only because the service subscribed again.
    const pub = await connectPublisher(broker.url);
    cleanup.push(() => pub.endAsync());
    await pub.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/k1/telemetry`, telemetry(1), { qos: 1 });
    await client.waitFor((e) => e.type === 'telemetry' && e.data.device === 'k1', 'telemetry after the crash');
  });
});
