// The shared log on a real redis-server and a real Mosquitto: replicas of the service in this
// process, each with its own HTTP port and MQTT session, one Redis log between them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from '../../src/native/redis.js';
import { telemetry } from '../helpers/mqtt.js';
import { isolation } from '../helpers/service.js';
import { withBrokerAndService, type TestService } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

const stage = withBrokerAndService();
let redis: Redis;

beforeAll(async () => {
  redis = await Redis.start();
});
afterAll(async () => {
  await redis?.stop();
});

let deployments = 0;
/** N replicas of one deployment: one topic prefix, key prefix and ingest session; each its own client id. */
async function replicas(name: string, count: number, env: Record<string, string> = {}): Promise<{ prefix: string; all: TestService[]; env: Record<string, string> }> {
  deployments += 1;
  const base = isolation(name);
  const shared = {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: `${name}-${deployments}-${process.pid}`,
    MQTT_INGEST_CLIENT_ID: `ingest-${base.MQTT_CLIENT_ID}`,
    INGEST_LEASE_MS: '1500',
    ...env,
  };
  const all: TestService[] = [];
  for (let i = 0; i < count; i += 1) {
    all.push(await replica(base.MQTT_TOPIC_PREFIX, `${base.MQTT_CLIENT_ID}-r${i}`, shared));
  }
  await eventually(() => all.every((r) => r.service.shared!.log.isUp), 'every replica tails the log');
  await eventually(() => all.filter((r) => r.service.shared!.leader.isLeader).length === 1, 'one replica holds the ingest lease');
  await eventually(() => all.some((r) => r.service.shared!.leader.sessionUp), 'the ingest session is connected');
  return { prefix: base.MQTT_TOPIC_PREFIX, all, env: shared };
}

function replica(prefix: string, clientId: string, env: Record<string, string>): Promise<TestService> {
  return stage.service('replica', env, { ids: { MQTT_TOPIC_PREFIX: prefix, MQTT_CLIENT_ID: clientId } });
}

async function devices(url: string): Promise<unknown> {
  return ((await (await fetch(`${url}/api/devices`)).json()) as { devices: unknown }).devices;
}

describe('shared log on Redis Streams', () => {
  it('gives every replica the same view and ids from one log', async () => {
    const { prefix, all } = await replicas('view', 2);
    const [a, b] = all as [TestService, TestService];
    const ts = Date.now();
    await stage.publisher.publishAsync(`${prefix}/pump-1/status`, JSON.stringify({ state: 'online', ts }), { qos: 1 });
    await stage.publisher.publishAsync(`${prefix}/pump-1/telemetry`, telemetry(1, { pressure: 2.5 }, ts), { qos: 1 });
    await eventually(async () => JSON.stringify(await devices(a.url)).includes('"pressure":2.5'), 'replica A has the reading');
    await eventually(async () => JSON.stringify(await devices(b.url)) === JSON.stringify(await devices(a.url)), 'both replicas answer alike');
    expect(a.service.hub.instanceId).toBe(b.service.hub.instanceId);
  });

  it('resumes on replica B from the last id replica A gave: exact continuation, no duplicate, no gap', async () => {
    const { prefix, all } = await replicas('resume', 2);
    const [a, b] = all as [TestService, TestService];
    const first = stage.collect(`${a.url}/events`);
    await first.waitFor((e) => e.type === 'snapshot', 'snapshot on A');
    for (let seq = 1; seq <= 20; seq += 1) await stage.publisher.publishAsync(`${prefix}/m-1/telemetry`, telemetry(seq), { qos: 1 });
    await first.waitForCount('telemetry', 20);
    first.close();
    const lastId = first.events.at(-1)!.id;
    for (let seq = 21; seq <= 40; seq += 1) await stage.publisher.publishAsync(`${prefix}/m-1/telemetry`, telemetry(seq), { qos: 1 });
    await eventually(() => b.service.store.get('m-1')?.telemetry?.seq === 40, 'replica B read seq 40');
    const second = stage.collect(`${b.url}/events`, { 'Last-Event-ID': lastId });
    await second.waitForCount('telemetry', 20);
    expect(second.of('snapshot')).toHaveLength(0);
    expect(second.of('reset')).toHaveLength(0);
    expect(second.of('telemetry').map((e) => e.data.seq)).toEqual(Array.from({ length: 20 }, (_, i) => 21 + i));
  });
});
