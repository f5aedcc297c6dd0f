import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { COMMAND_TIMEOUT_MIN_MS } from '../../src/protocol.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { FreezableProxy } from '../helpers/tcp-proxy.js';
import { eventually } from '../helpers/wait.js';

// A broker that goes silent (half-open connection: no FIN, no RST) while a command is published:
// the service's MQTT client still believes it is connected, and no PUBACK ever comes. The caller's
// timeoutMs bounds that wait too, and the answer says the command may still arrive later.

const TOKEN = 'silent-broker-token-0123456789';
let broker: Mosquitto;
let proxy: FreezableProxy;
let svc: RunningService;
let device: MqttClient;
let prefix: string;

beforeAll(async () => {
  broker = await Mosquitto.start();
  proxy = await FreezableProxy.start(broker.port);
  const ids = isolation('silent-broker');
  prefix = ids.MQTT_TOPIC_PREFIX;
  svc = await startService({ MQTT_URL: proxy.url, ...ids, COMMAND_TOKEN: TOKEN });
  device = await connectPublisher(broker.url);
  await device.publishAsync(`${prefix}/quiet-1/status`, JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1 });
  await eventually(() => svc.service.store.get('quiet-1')?.state === 'online', 'device online');
});

afterAll(async () => {
  await device?.endAsync();
  await svc?.stop();
  await proxy?.stop();
  await broker?.stop();
});

describe('command to a broker that went silent', () => {
  it('answers 503 broker_unavailable once timeoutMs passes without a PUBACK, saying it may still arrive', async () => {
    expect(proxy.freeze()).toBe(1);
    expect(svc.service.bridge.isReady, 'the service has not noticed').toBe(true);
    const started = Date.now();
    const res = await fetch(`${svc.url}/api/devices/quiet-1/commands`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'ping', timeoutMs: COMMAND_TIMEOUT_MIN_MS }),
    });
    const took = Date.now() - started;
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('2');
    expect(await res.json()).toMatchObject({ error: 'broker_unavailable', message: expect.stringContaining('may still reach the device') });
    expect(took).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MIN_MS);
    expect(took).toBeLessThan(COMMAND_TIMEOUT_MIN_MS + 1_500);
  });
});
