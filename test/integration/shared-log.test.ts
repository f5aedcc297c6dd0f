// The shared log on a real redis-server and a real Mosquitto: replicas of the service in this
// process, each with its own HTTP port and MQTT session, one Redis log between them.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@redis/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPEND } from '../../src/log/redis-scripts.js';
import { Redis } from '../../src/native/redis.js';
import { telemetry } from '../helpers/mqtt.js';
import { logEntries, loggedCounts } from '../helpers/redis.js';
import { hashPassword } from '../../src/access/secrets.js';
import { saveUsers } from '../../src/access/users.js';
import { isolation } from '../helpers/service.js';
import { metric, withBrokerAndService, type TestService } from '../helpers/stage.js';
import { FreezableProxy } from '../helpers/tcp-proxy.js';
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

/** Publishes `count` telemetry messages round-robin over `devices`, seq from `from`, `gapMs` apart. */
async function publishReadings(prefix: string, devices: string[], from: number, count: number, gapMs = 5): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    const device = devices[i % devices.length]!;
    const seq = from + Math.floor(i / devices.length);
    await stage.publisher.publishAsync(`${prefix}/${device}/telemetry`, telemetry(seq), { qos: 1 });
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  }
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

  it('stores a reading once per entry (the fold leaves it to the event), and folds entries that carry it twice too', async () => {
    const { prefix, all, env } = await replicas('once', 2);
    const ts = Date.now();
    await stage.publisher.publishAsync(`${prefix}/pump-1/telemetry`, telemetry(1, { pressure: 2.5 }, ts), { qos: 1 });
    await eventually(async () => all.every((r) => r.service.store.get('pump-1')?.telemetry?.seq === 1), 'every replica has the reading');
    const entries = await logEntries(redis.url, env.REDIS_KEY_PREFIX!);
    const reading = entries.find((e) => e.f.e === 'telemetry')!;
    expect(JSON.parse(reading.f.j!)).toMatchObject({ device: 'pump-1', seq: 1, metrics: { pressure: 2.5 } });
    expect(JSON.parse(reading.f.f!)).toEqual({ h: { state: 'unknown', stateTs: null, lastSeen: expect.any(Number) } });
    // An entry whose fold holds the reading itself, as the log stored every fold before: appended
    // outside any lease, read by both replicas from the tail.
    const client = createClient({ url: redis.url });
    await client.connect();
    try {
      const p = `{${env.REDIS_KEY_PREFIX!}}`;
      const epoch = (await client.sendCommand(['HGET', `${p}:meta`, 'epoch'])) as string;
      const keys = ['meta', 'log', 'lease', 'writer:test', 'ingested', 'ingested-order'].map((k) => `${p}:${k}`);
      const metrics = { pressure: 3.5 };
      const data = JSON.stringify({ device: 'pump-2', ts, seq: 4, metrics });
      const fold = JSON.stringify({ h: { state: 'online', stateTs: ts, lastSeen: ts, telemetry: { ts, seq: 4, metrics } } });
      await client.sendCommand(['EVALSHA', await client.scriptLoad(APPEND), String(keys.length), ...keys, epoch, '', '1', '100000', '900000', '', '1', '', 'telemetry', 'pump-2', '1', data, String(ts), fold]);
    } finally {
      await client.close();
    }
    await eventually(async () => all.every((r) => r.service.store.get('pump-2')?.telemetry?.metrics.pressure === 3.5), 'every replica folded the whole fold');
    const views = await Promise.all(all.map((r) => devices(r.url)));
    expect(JSON.stringify(views[1])).toBe(JSON.stringify(views[0]));
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

  it('delivers on the holder from its appends\' replies and on the others from the tail: every replica streams the same events, the others\' entries included', async () => {
    const token = 'replies-command-token-0123456789abcdef';
    const { prefix, all } = await replicas('replies', 2, { COMMAND_TOKEN: token });
    const holder = all.find((r) => r.service.shared!.leader.isLeader)!;
    const other = all.find((r) => r !== holder)!;
    await publishReadings(prefix, ['q-1', 'q-2'], 1, 2, 0);
    await eventually(() => other.service.store.get('q-2')?.telemetry?.seq === 1, 'both replicas know the devices');
    const streams = [stage.collect(`${holder.url}/events`), stage.collect(`${other.url}/events`)];
    for (const s of streams) await s.waitFor((e) => e.type === 'snapshot', 'snapshot');
    // Telemetry through the holder's ingest while the other replica appends command events of its own.
    const traffic = publishReadings(prefix, ['q-1', 'q-2'], 2, 300, 3);
    const commands: Promise<Response>[] = [];
    for (let i = 0; i < 8; i += 1) {
      commands.push(fetch(`${other.url}/api/devices/q-${1 + (i % 2)}/commands`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ name: 'ping', timeoutMs: 2500 }),
        }));
      await new Promise((r) => setTimeout(r, 40));
    }
    await traffic;
    // No device answers: each command ends in a timeout event, appended by the other replica.
    for (const res of await Promise.all(commands)) expect(`${res.status} ${await res.text()}`).toMatch(/^504 /);
    for (const s of streams) await s.waitFor(() => s.of('telemetry').length === 300 && s.of('command').length === 16, 'every reading and both events of every command');
    const seen = streams.map((s) => s.events.filter((e) => e.type === 'telemetry' || e.type === 'command').map((e) => `${e.id} ${e.type} ${JSON.stringify(e.data)}`));
    expect(seen[0]).toEqual(seen[1]);
    const positions = seen[0]!.map((line) => Number(line.split(' ')[0]!.split('-')[1]));
    expect(positions.every((p, i) => i === 0 || p > positions[i - 1]!)).toBe(true);
    // The device views folded from the replies and from the tail are the same.
    await eventually(async () => JSON.stringify(await devices(holder.url)) === JSON.stringify(await devices(other.url)), 'both replicas answer alike');
    expect(holder.service.shared!.log.head).toBe(other.service.shared!.log.head);
    for (const s of streams) s.close();
    // The holder took its own entries (and the commands between them) with its appends' replies.
    const read = (r: TestService, via: string) => metric(r.url, `log_entries_read_total{via="${via}"}`).then((n) => (Number.isNaN(n) ? 0 : n));
    expect(await read(holder, 'reply')).toBeGreaterThan(200);
    expect(await read(other, 'tail')).toBeGreaterThan(300);
    console.log(`replies: holder took ${await read(holder, 'reply')} entries with its appends, ${await read(holder, 'tail')} from the tail; the other ${await read(other, 'tail')} from the tail`);
  });

  it('hands the ingest session over when its holder stops under traffic: every message in the log exactly once', async () => {
    const { prefix, all, env } = await replicas('handover', 2);
    const holder = all.find((r) => r.service.shared!.leader.isLeader)!;
    const other = all.find((r) => r !== holder)!;
    const names = ['h-1', 'h-2', 'h-3', 'h-4'];
    const traffic = publishReadings(prefix, names, 1, 400, 5);
    await new Promise((r) => setTimeout(r, 600));
    await holder.stop();
    await traffic;
    await eventually(() => other.service.shared!.leader.isLeader, 'the other replica took the lease', 10_000);
    await eventually(() => names.every((d) => other.service.store.get(d)?.telemetry?.seq === 100), 'every reading reached the view', 15_000);
    const counts = await loggedCounts(redis.url, env.REDIS_KEY_PREFIX!, 'telemetry');
    expect(counts.size).toBe(400);
    expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
    // In the broker's order: the redelivered messages (checked against the log first) before the
    // ones that came after them, each device's readings in seq order.
    const seqs = new Map<string, number[]>();
    for (const { f } of await logEntries(redis.url, env.REDIS_KEY_PREFIX!)) {
      if (f.e !== 'telemetry') continue;
      const { device, seq } = JSON.parse(f.j!) as { device: string; seq: number };
      seqs.set(device, [...(seqs.get(device) ?? []), seq]);
    }
    for (const d of names) expect(seqs.get(d), d).toEqual(Array.from({ length: 100 }, (_, i) => 1 + i));
  });

  it('keeps ids and history across a Redis restart: held messages flow in after, no reset, no loss', async () => {
    const { prefix, all } = await replicas('redis-restart', 2);
    const [a, b] = all as [TestService, TestService];
    const client = stage.collect(`${a.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await publishReadings(prefix, ['r-1'], 1, 10, 0);
    await client.waitForCount('telemetry', 10);
    await redis.stop();
    await eventually(() => !a.service.shared!.log.isUp && !b.service.shared!.log.isUp, 'both replicas see Redis gone');
    expect((await fetch(`${a.url}/readyz`)).status).toBe(503);
    await client.waitFor((e) => e.type === 'upstream' && e.data.redis === 'down', 'an upstream event naming Redis');
    // Published while Redis is away: the broker holds them (no PUBACK) until the log has them.
    await publishReadings(prefix, ['r-1'], 11, 10, 0);
    await new Promise((r) => setTimeout(r, 500));
    expect(client.of('telemetry')).toHaveLength(10);
    await redis.restart();
    await client.waitForCount('telemetry', 20, 15_000);
    await eventually(async () => (await fetch(`${a.url}/readyz`)).status === 200, 'ready again', 10_000);
    expect(client.of('reset')).toHaveLength(0);
    expect(client.of('snapshot')).toHaveLength(1);
    expect(client.of('telemetry').map((e) => e.data.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(client.errors, 'the stream stayed open').toBe(0);
  });

  it('resets every stream with history-lost when Redis loses its data, and keeps the devices', async () => {
    const { prefix, all } = await replicas('redis-wipe', 2);
    const [a, b] = all as [TestService, TestService];
    await publishReadings(prefix, ['w-1', 'w-2'], 1, 6, 0);
    await eventually(() => b.service.store.get('w-2')?.telemetry?.seq === 3, 'replica B has the readings');
    const client = stage.collect(`${b.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const epoch = a.service.hub.instanceId;
    await redis.restart({ wipe: true });
    const reset = await client.waitFor((e) => e.type === 'reset', 'reset after the wipe', 15_000);
    expect(reset.data).toEqual({ reason: 'history-lost' });
    const snapshot = client.events[client.events.indexOf(reset) + 1]!;
    expect(snapshot.type).toBe('snapshot');
    expect(snapshot.data.devices.map((d: { id: string }) => d.id)).toEqual(['w-1', 'w-2']);
    expect(a.service.hub.instanceId).not.toBe(epoch);
    await eventually(() => b.service.hub.instanceId === a.service.hub.instanceId, 'one new epoch for both');
    await publishReadings(prefix, ['w-1'], 4, 1, 0);
    await client.waitFor((e) => e.type === 'telemetry' && e.data.seq === 4, 'live again on the new log', 10_000);
  });

  it('loses nothing and appends nothing twice when the broker restarts under 3 replicas', async () => {
    const { prefix, all, env } = await replicas('broker-restart', 3);
    await publishReadings(prefix, ['b-1', 'b-2'], 1, 40, 0);
    await stage.broker.restart();
    // The file's publisher does not reconnect by itself.
    stage.publisher.reconnect();
    await eventually(() => stage.publisher.connected, 'the publisher is back');
    await eventually(() => all.some((r) => r.service.shared!.leader.sessionUp), 'the ingest session is back', 15_000);
    await publishReadings(prefix, ['b-1', 'b-2'], 21, 40, 0);
    await eventually(() => all.every((r) => r.service.store.get('b-2')?.telemetry?.seq === 40), 'every replica has the last reading', 15_000);
    const counts = await loggedCounts(redis.url, env.REDIS_KEY_PREFIX!, 'telemetry');
    expect(counts.size).toBe(80);
    expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
  });

  it('replaces both connections when Redis goes silent on them (half-open): nothing lost, no reset', { timeout: 60_000 }, async () => {
    // Every connection open now stops carrying bytes and stays open, as after a dead NAT entry;
    // new ones pass. The blocking read would wait forever, and so would the next append.
    const proxy = await FreezableProxy.start(redis.port);
    stage.cleanup.push(() => proxy.stop());
    const { prefix, all, env } = await replicas('half-open', 1, { REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    const [a] = all as [TestService];
    const client = stage.collect(`${a.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await publishReadings(prefix, ['f-1'], 1, 5, 0);
    await client.waitForCount('telemetry', 5);
    expect(proxy.freeze()).toBeGreaterThanOrEqual(2);
    proxy.accepting = true;
    // Held by the broker (no PUBACK) until an append on a new connection has them.
    await publishReadings(prefix, ['f-1'], 6, 5, 0);
    await client.waitForCount('telemetry', 10, 30_000);
    const watchdog = await metric(a.url, 'redis_tail_watchdog_total');
    const timeouts = await metric(a.url, 'redis_command_timeouts_total');
    console.info(`half-open Redis connections: ${watchdog} tail watchdog restarts, ${timeouts} command timeouts, 10 of 10 readings delivered`);
    expect(watchdog + timeouts).toBeGreaterThanOrEqual(1);
    // The append that hung may have run: its retry, or the broker's resend to the next holding, must not add it again.
    const counts = await loggedCounts(redis.url, env.REDIS_KEY_PREFIX!, 'telemetry');
    expect([...counts.values()]).toEqual(Array.from({ length: 10 }, () => 1));
    expect(client.of('reset')).toHaveLength(0);
    expect(client.of('telemetry').map((e) => e.data.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it('fences a holder whose lease was taken: it appends nothing more, the next holder gets every message once', { timeout: 60_000 }, async () => {
    const { prefix, all, env } = await replicas('fenced', 2);
    const holder = all.find((r) => r.service.shared!.leader.isLeader)!;
    const other = all.find((r) => r !== holder)!;
    const names = ['g-1', 'g-2'];
    await publishReadings(prefix, names, 1, 20, 0);
    // Another owner takes the lease behind the holder's back (a pause longer than the lease,
    // a clock jump): for 2 s nobody may append ingest entries.
    const admin = createClient({ url: redis.url });
    await admin.connect();
    try {
      await admin.sendCommand(['SET', `{${env.REDIS_KEY_PREFIX}}:lease`, 'intruder', 'PX', '2000']);
    } finally {
      await admin.close();
    }
    await publishReadings(prefix, names, 11, 40, 10);
    await eventually(() => all.every((r) => r.service.store.get('g-2')?.telemetry?.seq === 30), 'every reading reached both views', 20_000);
    const fenced = await metric(holder.url, 'log_appends_total{outcome="fenced"}');
    const counts = await loggedCounts(redis.url, env.REDIS_KEY_PREFIX!, 'telemetry');
    console.info(`lease taken from the holder: ${fenced} fenced appends; ${counts.size} readings in the log; holder now ${all.find((r) => r.service.shared!.leader.isLeader) === other ? 'the other replica' : 'the same replica again'}`);
    expect(fenced).toBeGreaterThanOrEqual(1);
    expect(counts.size).toBe(60);
    expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
  });

  it('trims the log by size and by age, counts it, and resets only a resume from before what it keeps', { timeout: 60_000 }, async () => {
    const { prefix, all, env } = await replicas('trim', 1, { LOG_MAX_ENTRIES: '1000', LOG_RETENTION_S: '10' });
    const [a] = all as [TestService];
    const first = stage.collect(`${a.url}/events`);
    await first.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await publishReadings(prefix, ['t-1'], 1, 10, 0);
    await first.waitForCount('telemetry', 10);
    const oldId = first.events.find((e) => e.type === 'telemetry')!.id;
    first.close();
    // Size: 1,300 entries into a log that keeps 1,000.
    for (let i = 0; i < 13; i += 1) await publishReadings(prefix, [`t-${i + 2}`], 1, 100, 0);
    await eventually(async () => (await metric(a.url, 'log_trimmed_total{reason="size"}')) > 0, 'trimmed by size', 15_000);
    const kept = await logEntries(redis.url, env.REDIS_KEY_PREFIX!);
    expect(kept.length).toBeLessThanOrEqual(1_000 + 64);
    const stale = stage.collect(`${a.url}/events`, { 'Last-Event-ID': oldId });
    const reset = await stale.waitFor((e) => e.type === 'reset', 'a reset for an id that left the log');
    expect(reset.data).toEqual({ reason: 'expired' });
    stale.close();
    // A retained id still resumes.
    const recentId = `${a.service.hub.instanceId}-${kept.at(-5)!.pos}`;
    const fresh = stage.collect(`${a.url}/events`, { 'Last-Event-ID': recentId });
    await fresh.waitForCount('telemetry', 1);
    expect(fresh.of('reset')).toHaveLength(0);
    fresh.close();
    // Age: past LOG_RETENTION_S, the next appends trim what is older (never past the checkpoint).
    await new Promise((r) => setTimeout(r, 11_000));
    await publishReadings(prefix, ['t-age'], 1, 130, 0);
    await eventually(async () => (await metric(a.url, 'log_trimmed_total{reason="age"}')) > 0, 'trimmed by age', 15_000);
    const left = await logEntries(redis.url, env.REDIS_KEY_PREFIX!);
    const oldest = Math.min(...left.map((e) => Number(e.f.m)));
    console.info(`trim: ${kept.length} entries kept of 1,310 (max 1,000); after the age limit ${left.length} left, the oldest ${Math.round((Date.now() - oldest) / 1000)} s old`);
    expect(Date.now() - oldest).toBeLessThan(15_000);
  });

  it('starts a new epoch when Redis comes back from an older file (positions would repeat): reset history-lost', { timeout: 60_000 }, async () => {
    const { prefix, all } = await replicas('went-back', 2);
    const [a, b] = all as [TestService, TestService];
    const client = stage.collect(`${b.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await publishReadings(prefix, ['k-1'], 1, 10, 0);
    await client.waitForCount('telemetry', 10);
    const epoch = a.service.hub.instanceId;
    // A copy of Redis's files now, put back after more was written: a restore from a backup.
    const backup = `${redis.dir}.backup`;
    await redis.stop();
    await cp(redis.dir, backup, { recursive: true });
    await redis.restart();
    await publishReadings(prefix, ['k-1'], 11, 10, 0);
    await client.waitForCount('telemetry', 20, 15_000);
    expect(client.of('reset')).toHaveLength(0);
    await redis.stop();
    await rm(redis.dir, { recursive: true, force: true });
    await cp(backup, redis.dir, { recursive: true });
    await rm(backup, { recursive: true, force: true });
    await redis.restart();
    const reset = await client.waitFor((e) => e.type === 'reset', 'a reset after the log went back', 20_000);
    expect(reset.data).toEqual({ reason: 'history-lost' });
    expect(client.events[client.events.indexOf(reset) + 1]?.type).toBe('snapshot');
    await eventually(() => a.service.hub.instanceId !== epoch && a.service.hub.instanceId === b.service.hub.instanceId, 'one new epoch on both replicas', 15_000);
    await publishReadings(prefix, ['k-1'], 21, 1, 0);
    await client.waitFor((e) => e.type === 'telemetry' && e.data.seq === 21, 'live again', 10_000);
  });

  it('answers a device\'s history from the shared log on a replica started after it, and the stream after `until` continues it exactly', { timeout: 30_000 }, async () => {
    const { prefix, all, env } = await replicas('history', 1);
    const [a] = all as [TestService];
    const ts = Date.now() - 10_000;
    for (let seq = 1; seq <= 50; seq += 1) {
      await stage.publisher.publishAsync(`${prefix}/hist-1/telemetry`, telemetry(seq, { level: seq }, ts + seq * 100), { qos: 1 });
    }
    await eventually(() => a.service.store.get('hist-1')?.telemetry?.seq === 50, 'replica A took every reading');
    // A replica that was not there when the readings came: it has them from the log.
    const late = await replica(prefix, isolation('history-late').MQTT_CLIENT_ID, env);
    stage.cleanup.push(() => late.stop());
    await eventually(() => late.service.store.get('hist-1')?.telemetry?.seq === 50, 'the late replica loaded the log');
    const history = (await (await fetch(`${late.url}/api/devices/hist-1/history`)).json()) as { metrics: Record<string, { t: number[]; v: number[] }>; until: string };
    expect(history.metrics['level']!.v).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    // A page charts that, then streams from `until`: every later reading once, none before it again.
    // (Opened before or after the next readings: a resume from `until` holds them either way.)
    const stream = stage.collect(`${late.url}/events?device=hist-1`, { 'Last-Event-ID': history.until });
    for (let seq = 51; seq <= 60; seq += 1) await stage.publisher.publishAsync(`${prefix}/hist-1/telemetry`, telemetry(seq, { level: seq }), { qos: 1 });
    await stream.waitForCount('telemetry', 10);
    expect(stream.of('snapshot')).toHaveLength(0);
    expect(stream.of('reset')).toHaveLength(0);
    expect(stream.of('telemetry').map((e) => e.data.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 51 + i));
  });

  it('ends a session\'s streams on every replica when it signs out on one', { timeout: 30_000 }, async () => {
    const usersFile = join(await mkdtemp(join(tmpdir(), 'shared-users-')), 'users.json');
    await saveUsers(usersFile, { version: 1, users: { ann: { role: 'admin', devices: [], password: await hashPassword('ann password 123'), tokens: [] } } });
    const { all } = await replicas('revoke', 2, { USERS_FILE: usersFile, SESSION_SECRET: 'shared-log-test-session-secret-0123456789' });
    const [a, b] = all as [TestService, TestService];
    const signIn = await fetch(`${a.url}/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: 'ann', password: 'ann password 123' }) });
    const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
    const onB = stage.collect(`${b.url}/events`, { Cookie: cookie });
    await onB.waitFor((e) => e.type === 'snapshot', 'a stream on replica B');
    expect((await fetch(`${a.url}/api/session`, { method: 'DELETE', headers: { Cookie: cookie } })).status).toBe(204);
    await eventually(() => onB.source.readyState === 2, 'the stream on B ended for good', 10_000);
    const there = await fetch(`${b.url}/api/session`, { headers: { Cookie: cookie } });
    expect([there.status, ((await there.json()) as { error: string }).error]).toEqual([401, 'revoked']);
  });
});
