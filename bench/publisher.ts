// The devices: one MQTT client per device, each with its own broker login (bound to its client
// id, allowed its own topics only), publishing telemetry round-robin at a fixed total rate. Each payload carries
// the send time with sub-millisecond precision (metrics.t, epoch ms as a float) next to the
// contract's integer `ts`, so clients in other processes measure device → client latency.
import mqtt, { type MqttClient } from 'mqtt';
import { DEFAULT_TOPIC_PREFIX } from '../src/protocol.js';
import { DEVICE_PREFIX, type PublishRequest, type PublisherReply, type PublisherRequest, type PublisherStart } from './protocol.js';

const CONNECT_CONCURRENCY = 50;
const TICK_MS = 1;

let devices: MqttClient[] = [];
let seqs: number[] = [];
let qos: 0 | 1 = 0;
let next = 0;

function send(reply: PublisherReply): void {
  process.send?.(reply);
}

function connectDevice(start: PublisherStart, id: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(start.url, {
      clientId: id,
      username: id,
      password: start.passwords[id] ?? '',
      clean: true,
      keepalive: 60,
      reconnectPeriod: 0, // a lost device connection must fail the run, not hide in a retry
      connectTimeout: 10_000,
    });
    client.once('connect', () => resolve(client));
    client.once('error', reject);
    client.once('close', () => reject(new Error(`${id}: connection closed before CONNACK`)));
  });
}

async function start(req: PublisherStart): Promise<void> {
  const started = Date.now();
  qos = req.qos;
  devices = new Array<MqttClient>(req.devices);
  seqs = new Array<number>(req.devices).fill(0);
  for (let i = 0; i < req.devices; i += CONNECT_CONCURRENCY) {
    const batch = [];
    for (let j = i; j < Math.min(i + CONNECT_CONCURRENCY, req.devices); j += 1) {
      batch.push(connectDevice(req, `${DEVICE_PREFIX}${j}`).then((c) => (devices[j] = c)));
    }
    await Promise.all(batch);
  }
  for (const client of devices) client.on('close', () => send({ type: 'error', message: 'a device lost its broker connection' }));
  send({ type: 'ready', ms: Date.now() - started });
}

function publishOne(window: 0 | 1): void {
  const i = next;
  next = (next + 1) % devices.length;
  seqs[i]! += 1;
  const t = performance.timeOrigin + performance.now();
  const payload = JSON.stringify({
    ts: Math.floor(t),
    seq: seqs[i],
    metrics: { temperature: 20 + (seqs[i]! % 50) / 10, humidity: 40.5, t, w: window },
  });
  devices[i]!.publish(`${DEFAULT_TOPIC_PREFIX}/${DEVICE_PREFIX}${i}/telemetry`, payload, { qos });
}

/** Publishes rate·seconds messages, spread evenly: each tick sends what is due by then. */
function publish(req: PublishRequest): Promise<void> {
  const total = Math.round(req.rate * req.seconds);
  const started = performance.now();
  let sent = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - started) * req.rate) / 1000) + 1);
      while (sent < due) {
        publishOne(req.window);
        sent += 1;
      }
      if (sent >= total) {
        clearInterval(timer);
        send({ type: 'published', count: sent, ms: Math.round(performance.now() - started) });
        resolve();
      }
    };
    const timer = setInterval(tick, TICK_MS);
    tick();
  });
}

process.on('message', (message: PublisherRequest) => {
  switch (message.type) {
    case 'start':
      start(message).catch((err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
      return;
    case 'publish':
      void publish(message);
      return;
    case 'stop':
      for (const client of devices) client.removeAllListeners('close');
      void Promise.all(devices.map((c) => c.endAsync())).finally(() => {
        send({ type: 'stopped' });
        setTimeout(() => process.exit(0), 50);
      });
      return;
  }
});
process.on('disconnect', () => process.exit(0));
