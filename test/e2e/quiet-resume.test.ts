// Chromium's own EventSource on a stream filtered to a quiet device (real service, real
// Mosquitto): the position the service sends without a data event of the client's filter moves
// the browser's last event id, so after far more than SSE_REPLAY_SIZE other events a short
// disconnect resumes with nothing missed and no reset. Nothing reaches `onmessage` meanwhile.
import { access } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { CuttableRelay } from '../helpers/relay.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { eventually } from '../helpers/wait.js';

// Callbacks passed to page.evaluate run in the browser, not in Node.
declare const window: any;
declare const EventSource: any;

const CHROMIUM = '/usr/bin/chromium';
const REPLAY = 100;
let broker: Mosquitto;
let publisher: MqttClient;
let svc: RunningService;
let relay: CuttableRelay;
let prefix: string;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  await access(CHROMIUM);
  broker = await Mosquitto.start();
  publisher = await connectPublisher(broker.url);
  const ids = isolation('quiet-e2e');
  prefix = ids.MQTT_TOPIC_PREFIX;
  svc = await startService({
    MQTT_URL: broker.url,
    ...ids,
    SSE_REPLAY_SIZE: String(REPLAY),
    SSE_HEARTBEAT_MS: '300',
    SSE_RETRY_MS: '200',
    DEVICE_MAX_MSG_RATE: '0',
    DEVICE_ADMIT_RATE: '0',
  });
  relay = await CuttableRelay.start(svc.port);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  page = await browser.newPage();
});

afterAll(async () => {
  await browser?.close();
  await relay?.stop();
  await svc?.stop();
  await publisher?.endAsync();
  await broker?.stop();
});

interface Seen {
  type: string;
  data: any;
  id: string;
}

const seen = (): Promise<Seen[]> => page.evaluate(() => window.received);

describe('Chromium EventSource on a quiet filtered stream', () => {
  it('resumes after a short disconnect past three replay windows of other events, with no reset and nothing missed', async () => {
    await publisher.publishAsync(`${prefix}/quiet/events`, JSON.stringify({ ts: Date.now(), seq: 1, type: 'door', severity: 'info', message: 'first' }), { qos: 1 });
    await eventually(() => svc.service.store.has('quiet'), 'quiet known');
    // Same origin as the stream: a page of the service itself, through the relay.
    await page.goto(`${relay.url}/healthz`);
    await page.evaluate(() => {
      window.received = [];
      window.messages = 0;
      window.opens = 0;
      const es = new EventSource('/events?device=quiet');
      for (const name of ['snapshot', 'alert', 'reset']) {
        es.addEventListener(name, (e: any) => window.received.push({ type: name, data: JSON.parse(e.data), id: e.lastEventId }));
      }
      es.onmessage = () => (window.messages += 1);
      es.onopen = () => (window.opens += 1);
    });
    await eventually(async () => (await seen()).some((e) => e.type === 'snapshot'), 'the snapshot in the page');
    await publisher.publishAsync(`${prefix}/quiet/events`, JSON.stringify({ ts: Date.now(), seq: 2, type: 'door', severity: 'info', message: 'second' }), { qos: 1 });
    await eventually(async () => (await seen()).some((e) => e.data.message === 'second'), 'the quiet event in the page');
    const dispatched = (await seen()).at(-1)!;

    for (let i = 0; i < REPLAY * 3; i += 1) {
      publisher.publish(`${prefix}/noisy-${i % 5}/telemetry`, telemetry(i + 1, { n: i }), { qos: 0 });
      if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await eventually(() => svc.service.store.get('noisy-4')?.telemetry?.seq === REPLAY * 3, 'the noise applied', 10_000);
    const head = svc.service.hub.head;
    // A heartbeat after the noise has named the head to the page.
    await eventually(() => relay.sentToClients().includes(`id: ${svc.service.hub.idOf(head)}\ndata: {}\n\n`), 'a position at the head relayed to the page', 5_000);

    // The stream's connection, and the page's own kept-alive one if Chromium still holds it.
    expect(relay.cut()).toBeGreaterThanOrEqual(1);
    await publisher.publishAsync(`${prefix}/quiet/events`, JSON.stringify({ ts: Date.now(), seq: 3, type: 'door', severity: 'critical', message: 'during the gap' }), { qos: 1 });
    await eventually(async () => (await seen()).some((e) => e.data.message === 'during the gap'), 'the alert raised during the gap, in the page', 10_000, () => relay.fromClients.length);

    const events = await seen();
    expect(events.filter((e) => e.type === 'reset'), 'no reset').toEqual([]);
    expect(events.filter((e) => e.type === 'snapshot'), 'only the first snapshot').toHaveLength(1);
    expect(events.filter((e) => e.type === 'alert').map((e) => e.data.message)).toEqual(['second', 'during the gap']);
    expect(await page.evaluate(() => window.opens)).toBe(2);
    expect(await page.evaluate(() => window.messages), 'position events reach no onmessage handler').toBe(0);
    const reconnect = relay.fromClients.filter((r) => r.startsWith('GET /events')).at(-1)!;
    const sentId = /^last-event-id: (.*)$/im.exec(reconnect)?.[1]?.trim();
    expect(sentId, 'Chromium reconnected from the position, not from its last event').toBe(svc.service.hub.idOf(head));
    expect(svc.service.hub.covers(Number(dispatched.id.split('-')[1])), 'the last event id alone could not have resumed').toBe(false);
  });
});
