import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { connectPublisher } from '../helpers/mqtt.js';
import { isolation } from '../helpers/service.js';
import { metric, withBrokerAndService, type TestService as Svc } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

// What the gateway believes about a device rests on arrival order and the device's MQTT
// connection, never on the device's clock. Against a real Mosquitto and a real EventSource.

const HOUR = 3_600_000;
const TOKEN = 'device-truth-token-0123456789';
const DAY = 24 * HOUR;

const stage = withBrokerAndService();
const { cleanup, service, collect } = stage;

async function device(svc: Svc, id: string): Promise<MqttClient> {
  const client = await connectPublisher(stage.broker.url, {
    clientId: `${svc.prefix.replaceAll('/', '-')}-${id}`.slice(0, 120),
    will: { topic: `${svc.prefix}/${id}/status`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
  });
  cleanup.push(() => client.endAsync(true));
  return client;
}

async function deviceView(svc: Svc, id: string): Promise<any> {
  const res = await fetch(`${svc.url}/api/devices/${id}`);
  return res.status === 200 ? res.json() : { status: res.status };
}

const json = (value: unknown) => JSON.stringify(value);

describe('device clocks decide nothing', () => {
  it('a device rebooting with its clock an hour behind and seq back at 1 is online at once, and its critical alert reaches a client', async () => {
    const svc = await service('reboot', { COMMAND_TOKEN: TOKEN });
    const t = Date.now();
    const first = await device(svc, 'boiler');
    const p = `${svc.prefix}/boiler`;
    await first.publishAsync(`${p}/status`, json({ state: 'online', ts: t }), { qos: 1, retain: true });
    for (let seq = 1; seq <= 50; seq += 1) await first.publishAsync(`${p}/telemetry`, json({ ts: t + seq, seq, metrics: { t: seq } }), { qos: 1 });
    await first.publishAsync(`${p}/events`, json({ ts: t + 60, seq: 7, type: 'pressure', severity: 'warning', message: 'high' }), { qos: 1 });
    await eventually(async () => (await deviceView(svc, 'boiler')).telemetry?.seq === 50, 'first life recorded');

    // Power cut: the broker publishes the last will. Then the device comes back with its RTC reset.
    first.stream.destroy();
    await eventually(async () => (await deviceView(svc, 'boiler')).state === 'offline', 'last will taken');
    const client = collect(`${svc.url}/events?device=boiler`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const behind = t - HOUR;
    const second = await device(svc, 'boiler');
    await second.publishAsync(`${p}/status`, json({ state: 'online', ts: behind }), { qos: 1, retain: true });
    await second.publishAsync(`${p}/telemetry`, json({ ts: behind + 1, seq: 1, metrics: { t: 99 } }), { qos: 1 });
    const sent = Date.now();
    await second.publishAsync(`${p}/events`, json({ ts: behind + 2, seq: 1, type: 'overheat', severity: 'critical', message: 'boiler overheating' }), { qos: 1 });

    const alert = await client.waitFor((e) => e.type === 'alert' && e.data.type === 'overheat', 'the critical alert of the rebooted device');
    expect(alert.data).toMatchObject({ device: 'boiler', severity: 'critical', ts: behind + 2, seq: 1 });
    expect(alert.data.at).toBeGreaterThanOrEqual(sent - 5);
    expect(alert.data.at).toBeLessThanOrEqual(Date.now());
    expect(client.of('status').map((e) => e.data.state)).toEqual(['online']);
    const view = await deviceView(svc, 'boiler');
    expect(view).toMatchObject({ state: 'online', stateTs: behind, telemetry: { seq: 1, ts: behind + 1, metrics: { t: 99 } } });
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}')).toBe(0);

    // And it takes commands (no 409 "offline"): the rebooted device answers on its acks topic.
    await second.subscribeAsync(`${p}/commands`, { qos: 1 });
    second.on('message', (topic, payload) => {
      if (topic !== `${p}/commands`) return;
      const { id } = JSON.parse(payload.toString()) as { id: string };
      void second.publishAsync(`${p}/acks`, json({ id, ok: true, ts: behind + 3 }), { qos: 1 });
    });
    const res = await fetch(`${svc.url}/api/devices/boiler/commands`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: json({ name: 'ping', timeoutMs: 5_000 }),
    });
    expect(res.status).toBe(200);
  });

  it('a device with no last will that reboots and sends the same ts-less online starts again at seq 1, alert delivered', async () => {
    const svc = await service('nowill');
    const p = `${svc.prefix}/pump`;
    const t = Date.now();
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online' }), { qos: 1 });
    for (let seq = 1; seq <= 5; seq += 1) await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + seq, seq, metrics: { t: seq } }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/events`, json({ ts: t + 6, seq: 4, type: 'flow', severity: 'warning', message: 'low' }), { qos: 1 });
    await eventually(async () => (await deviceView(svc, 'pump')).telemetry?.seq === 5, 'first life recorded');
    const client = collect(`${svc.url}/events?device=pump`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    // Rebooted within its will delay (or it has no will): no offline in between, the same online.
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online' }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t - HOUR, seq: 1, metrics: { t: 42 } }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/events`, json({ ts: t - HOUR, seq: 1, type: 'pressure', severity: 'critical', message: 'burst' }), { qos: 1 });
    const alert = await client.waitFor((e) => e.type === 'alert' && e.data.type === 'pressure', 'the critical alert after the reboot');
    expect(alert.data).toMatchObject({ device: 'pump', severity: 'critical', seq: 1 });
    expect((await deviceView(svc, 'pump')).telemetry).toMatchObject({ seq: 1, metrics: { t: 42 } });
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}')).toBe(0);
  });

  it('a status with a clock far ahead does not pin the state: the last status to arrive wins', async () => {
    const svc = await service('ahead');
    const t = Date.now();
    const p = `${svc.prefix}/clocky`;
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: t + 365 * DAY }), { qos: 1 });
    await eventually(async () => (await deviceView(svc, 'clocky')).state === 'online', 'online');
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'offline', ts: t }), { qos: 1 });
    await eventually(async () => (await deviceView(svc, 'clocky')).state === 'offline', 'the truthful offline taken');
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: t + 1 }), { qos: 1 });
    await eventually(async () => (await deviceView(svc, 'clocky')).state === 'online', 'online again');
    expect((await deviceView(svc, 'clocky')).stateTs).toBe(t + 1);
  });

  it('accepts epoch milliseconds with a fractional part, end to end', async () => {
    const svc = await service('fraction');
    const client = collect(`${svc.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const ts = Date.now() + 0.123;
    await stage.publisher.publishAsync(`${svc.prefix}/frac/telemetry`, `{"ts":${ts},"seq":1,"metrics":{"t":1}}`, { qos: 1 });
    const event = await client.waitFor((e) => e.type === 'telemetry', 'telemetry with a fractional ts');
    expect(event.data.ts).toBe(ts);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_shape"}')).toBe(0);
  });
});

/** Relays one TCP connection at a time; while `swallowUpstream` is set, nothing from the client reaches the broker. */
class LossyRelay {
  swallowUpstream = false;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server, readonly url: string) {}

  static async start(target: number): Promise<LossyRelay> {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const relay = new LossyRelay(server, `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('connection', (client) => {
      const upstream = connect({ host: '127.0.0.1', port: target });
      for (const s of [client, upstream]) {
        relay.sockets.add(s);
        s.on('error', () => undefined).on('close', () => {
          client.destroy();
          upstream.destroy();
          relay.sockets.delete(s);
        });
      }
      client.on('data', (chunk) => {
        if (!relay.swallowUpstream) upstream.write(chunk);
      });
      upstream.on('data', (chunk) => client.write(chunk));
    });
    return relay;
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.cut();
    this.server.close();
  }
}

describe('QoS 1 redeliveries are still dropped', () => {
  it('drops the broker\'s redelivery (DUP) of a message whose PUBACK was lost, after the service reconnects to its session', async () => {
    const relay = await LossyRelay.start(Number(new URL(stage.broker.url).port));
    cleanup.push(() => relay.stop());
    const ids = isolation('redelivery');
    const svc = await service('redelivery', { MQTT_URL: relay.url }, { ids });
    const p = `${svc.prefix}/meter`;
    const t = Date.now();
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: t }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 1, seq: 1, metrics: { kwh: 1 } }), { qos: 1 });
    await eventually(() => svc.service.store.get('meter')?.telemetry?.seq === 1, 'seq 1');
    const published = () => metric(svc.url, 'sse_events_published_total{event="telemetry"}');
    const before = await published();
    const duplicates = await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}');

    // The service takes seq 2, but its PUBACK never reaches the broker; then the link breaks.
    relay.swallowUpstream = true;
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 2, seq: 2, metrics: { kwh: 2 } }), { qos: 1 });
    await eventually(() => svc.service.store.get('meter')?.telemetry?.seq === 2, 'seq 2 taken');
    relay.cut();
    relay.swallowUpstream = false;
    await eventually(() => !svc.service.bridge.isReady, 'link lost');
    await eventually(() => svc.service.bridge.isReady, 'reconnected to the kept session', 10_000);
    // The broker resends seq 2 (and whatever else it holds unacknowledged) with DUP set: dropped.
    await eventually(async () => (await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}')) > duplicates,
      'the redelivery counted as a duplicate', 10_000, () => [svc.service.store.get('meter')?.telemetry, svc.service.metrics.mqttReceived]);
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 3, seq: 3, metrics: { kwh: 3 } }), { qos: 1 });
    await eventually(() => svc.service.store.get('meter')?.telemetry?.seq === 3, 'seq 3');
    // seq 2 and seq 3 streamed once each, whatever the broker sent again.
    expect(await published()).toBe(before + 2);
  });

  it('drops a copy of an accepted message that arrives right after the device\'s new online status', async () => {
    const svc = await service('resend');
    const p = `${svc.prefix}/valve`;
    const t = Date.now();
    const client = collect(`${svc.url}/events?device=valve&types=telemetry`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: t }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 5, seq: 5, metrics: { open: 1 } }), { qos: 1 });
    // The device reconnects and resends seq 5 (its PUBACK was lost), then reboots' worth: seq 1.
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: t + 10 }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 5, seq: 5, metrics: { open: 1 } }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: t + 11, seq: 1, metrics: { open: 0 } }), { qos: 1 });
    await client.waitFor((e) => e.type === 'telemetry' && e.data.seq === 1, 'the new connection\'s seq 1');
    expect(client.of('telemetry').map((e) => e.data.seq)).toEqual([5, 1]);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}')).toBe(1);
  });

  it('drops the same payload published twice on one connection', async () => {
    const svc = await service('twice');
    const body = json({ ts: Date.now(), seq: 3, metrics: { a: 1 } });
    await stage.publisher.publishAsync(`${svc.prefix}/twin/telemetry`, body, { qos: 1 });
    await stage.publisher.publishAsync(`${svc.prefix}/twin/telemetry`, body, { qos: 1 });
    await eventually(async () => (await metric(svc.url, 'mqtt_messages_rejected_total{reason="duplicate"}')) === 1, 'second copy dropped');
    expect(await metric(svc.url, 'sse_events_published_total{event="telemetry"}')).toBe(1);
  });
});

describe('retained messages are history', () => {
  it('after a restart, retained telemetry, alerts and acks of a device silent for days do not show a recent last seen', async () => {
    const ids = isolation('history');
    const p = `${ids.MQTT_TOPIC_PREFIX}/cellar`;
    const then = Date.now() - 3 * DAY;
    // What the broker holds for a device that went quiet three days ago (its status retained online).
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'online', ts: then - 1000 }), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: then, seq: 9, metrics: { h: 80 } }), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/events`, json({ ts: then + 1, seq: 2, type: 'damp', severity: 'warning', message: 'damp' }), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/acks`, json({ id: 'c1', ok: true, ts: then + 2 }), { qos: 1, retain: true });
    cleanup.push(async () => {
      for (const kind of ['status', 'telemetry', 'events', 'acks']) await stage.publisher.publishAsync(`${p}/${kind}`, '', { qos: 1, retain: true });
    });
    const svc = await service('history', {}, { ids });
    await eventually(async () => (await deviceView(svc, 'cellar')).alerts?.length === 1 && (await deviceView(svc, 'cellar')).telemetry, 'retained history read');
    await eventually(() => svc.service.store.get('cellar')?.lastSeen === then + 2, 'the retained ack read');
    const view = await deviceView(svc, 'cellar');
    expect(view.telemetry).toMatchObject({ seq: 9, ts: then });
    expect(view.lastSeen).toBe(then + 2);
    expect(Date.now() - view.lastSeen).toBeGreaterThan(3 * DAY - 60_000);
    expect(view.alarms).toMatchObject([{ type: 'damp', severity: 'warning' }]);
    // Raised three days ago as far as anyone can tell: not "since" the restart.
    expect(view.alarms[0].at).toBe(then + 1);
    expect(view.alerts[0].at).toBe(then + 1);
  });

  it('after a restart, retained messages with a clock ahead of now move neither last seen nor date an alert by the restart', async () => {
    const ids = isolation('ahead-history');
    const p = `${ids.MQTT_TOPIC_PREFIX}/fast`;
    const then = Date.now() - 3 * DAY;
    const ahead = Date.now() + DAY;
    await stage.publisher.publishAsync(`${p}/status`, json({ state: 'offline', ts: then }), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/telemetry`, json({ ts: ahead, seq: 9, metrics: { h: 80 } }), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/events`, json({ ts: ahead + 1, seq: 2, type: 'door', severity: 'critical', message: 'open' }), { qos: 1, retain: true });
    cleanup.push(async () => {
      for (const kind of ['status', 'telemetry', 'events']) await stage.publisher.publishAsync(`${p}/${kind}`, '', { qos: 1, retain: true });
    });
    const started = Date.now();
    const svc = await service('ahead-history', {}, { ids });
    await eventually(async () => {
      const v = await deviceView(svc, 'fast');
      return v.alerts?.length === 1 && v.telemetry && v.state === 'offline';
    }, 'retained history read');
    const view = await deviceView(svc, 'fast');
    expect(view.telemetry).toMatchObject({ seq: 9, ts: ahead });
    expect(view.lastSeen).toBe(then);
    // Dated by the last seen it had when it arrived (then, or 0 = unknown if it came first): never the restart.
    expect(view.alarms[0].at).toBeLessThanOrEqual(then);
    expect(view.alarms[0].at).toBeLessThan(started);
    expect(view.alerts[0].at).toBe(view.alarms[0].at);
  });
});

describe('active alarms and recent alerts', () => {
  it('are in the snapshot and /api/devices/:id, most severe first, and an info of the same type clears its alarm', async () => {
    const svc = await service('alarms');
    const p = `${svc.prefix}/tank`;
    const t = Date.now();
    const alert = (seq: number, type: string, severity: string, message: string) =>
      stage.publisher.publishAsync(`${p}/events`, json({ ts: t + seq, seq, type, severity, message }), { qos: 1 });
    await alert(1, 'battery', 'warning', 'battery at 18 %');
    await alert(2, 'level', 'critical', 'tank overflowing');
    await alert(3, 'temp', 'info', 'temperature back to normal');
    await eventually(() => svc.service.store.get('tank')?.alerts.length === 3, 'three alerts');

    const page = collect(`${svc.url}/events`);
    const snapshot = await page.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const tank = snapshot.data.devices.find((d: any) => d.id === 'tank');
    expect(tank.alarms.map((a: any) => `${a.type}:${a.severity}`)).toEqual(['level:critical', 'battery:warning']);
    expect(tank.alarms[0]).toEqual({ type: 'level', severity: 'critical', message: 'tank overflowing', ts: t + 2, seq: 2, at: expect.any(Number) });
    expect(tank.alerts.map((a: any) => a.seq)).toEqual([1, 2, 3]);

    await alert(4, 'battery', 'info', 'battery back to normal');
    const cleared = await page.waitFor((e) => e.type === 'alert' && e.data.seq === 4, 'the clearing alert');
    expect(cleared.data).toMatchObject({ device: 'tank', type: 'battery', severity: 'info', at: expect.any(Number) });
    const view = await deviceView(svc, 'tank');
    expect(view.alarms.map((a: any) => a.type)).toEqual(['level']);
    expect(view.alerts.map((a: any) => a.seq)).toEqual([1, 2, 3, 4]);
  });
});
