import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type ServiceControl, type Stack } from '../../src/native/stack.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { loggedCounts } from '../helpers/redis.js';
import { metric } from '../helpers/stage.js';
import { SseCollector, type Received } from '../helpers/sse-client.js';
import { deviceLogin } from '../helpers/devices.js';
import { eventually } from '../helpers/wait.js';

// Deploys and crashes with the shared log: three replica processes of the built service behind
// the real nginx (an upstream group), one native redis-server, one Mosquitto. Every client must
// ride through a rolling restart and a replica's kill -9 with no reset, nothing lost, nothing
// twice, and the log must hold every message exactly once.

const STREAMS = 200;
/** Each test's four devices: `<tag>-1` … `<tag>-4`; the first also raises alerts. */
const devicesOf = (tag: string) => [1, 2, 3, 4].map((n) => `${tag}-${n}`);
const TELEMETRY_EVERY_MS = 200;
const ALERT_EVERY_MS = 700;
const KEY_PREFIX = 'mqtt-sse';
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({
    // Sign-in has its own tests (access.test.ts, the dashboard e2e); these are about streaming.
    auth: false,
    redis: true,
    replicas: 3,
    simulator: false,
    logDir: await mkdtemp(join(tmpdir(), 'shared-deploy-')),
    serviceEnv: { SHUTDOWN_DRAIN_MS: '2000', SSE_RETRY_MS: '500', SSE_HEARTBEAT_MS: '5000' },
    nginxVars: { SSE_PER_ADDRESS_LIMIT: '1000' },
  });
}, 90_000);

afterAll(async () => {
  await stack?.stop();
});

interface Feed {
  devices: string[];
  /** The last seq sent, per device, and of the alerts. */
  sent: () => { telemetry: number; alerts: number };
  stop: () => Promise<void>;
}

/**
 * Each device sends telemetry with consecutive seqs, and the first also alerts, QoS 1 over a
 * persistent session, until stopped: what devices do while the service is being deployed.
 */
async function feed(tag: string): Promise<Feed> {
  const DEVICES = devicesOf(tag);
  const clients: MqttClient[] = [];
  for (const id of DEVICES) {
    clients.push(await connectPublisher(stack.urls.mqtt, {
      ...(await deviceLogin(stack.mosquitto, id)), clean: false, reconnectPeriod: 200, properties: { sessionExpiryInterval: 600 },
    }));
  }
  let seq = 0;
  let alerts = 0;
  let running = true;
  const telemetryLoop = (async () => {
    while (running) {
      seq += 1;
      DEVICES.forEach((id, i) => clients[i]!.publish(`devices/${id}/telemetry`, telemetry(seq), { qos: 1 }));
      await sleep(TELEMETRY_EVERY_MS);
    }
  })();
  const alertLoop = (async () => {
    while (running) {
      alerts += 1;
      const message = JSON.stringify({ ts: Date.now(), seq: alerts, type: 'pressure', severity: 'warning', message: `alert ${alerts}` });
      clients[0]!.publish(`devices/${DEVICES[0]}/events`, message, { qos: 1 });
      await sleep(ALERT_EVERY_MS);
    }
  })();
  return {
    devices: DEVICES,
    sent: () => ({ telemetry: seq, alerts }),
    stop: async () => {
      running = false;
      await Promise.all([telemetryLoop, alertLoop]);
      for (const c of clients) await c.endAsync();
    },
  };
}

/**
 * What one client saw that it must not: a reset, a second snapshot, and per device any telemetry
 * that is not the previous seq + 1 after its snapshot (a gap or a duplicate), and alerts that are
 * not 1, 2, 3… each once (every client opened before the first alert).
 */
function problems(events: Received[], alerting: string): string[] {
  const found: string[] = [];
  const expected = new Map<string, number>();
  let alert = 0;
  for (const e of events) {
    if (e.type === 'reset') found.push(`reset ${JSON.stringify(e.data)}`);
    else if (e.type === 'snapshot') {
      if (expected.size > 0 || alert > 0) found.push('a second snapshot');
      for (const d of e.data.devices as { id: string; telemetry: { seq: number } | null }[]) {
        if (d.telemetry) expected.set(d.id, d.telemetry.seq + 1);
      }
    } else if (e.type === 'telemetry') {
      const want = expected.get(e.data.device);
      if (want !== undefined && e.data.seq !== want) found.push(`${e.data.device}: expected seq ${want}, got ${e.data.seq}`);
      expected.set(e.data.device, e.data.seq + 1);
    } else if (e.type === 'alert' && e.data.device === alerting) {
      if (e.data.seq !== alert + 1) found.push(`expected alert ${alert + 1}, got ${e.data.seq}`);
      alert = e.data.seq;
    }
  }
  return found;
}

/** Opens the streams through nginx and waits for each to be past its snapshot, before any alert. */
async function openStreams(): Promise<SseCollector[]> {
  const clients = Array.from({ length: STREAMS }, () => new SseCollector(stack.urls.events));
  await eventually(() => clients.every((c) => c.of('snapshot').length === 1), `all ${STREAMS} streams open`, 30_000,
    () => clients.filter((c) => c.of('snapshot').length === 1).length);
  return clients;
}

/** Stops the feed and waits until every client has the last of everything it sent. */
async function drainFeed(f: Feed, clients: SseCollector[]): Promise<{ telemetry: number; alerts: number }> {
  await f.stop();
  const last = f.sent();
  const caughtUp = (c: SseCollector) =>
    c.events.findLast((e) => e.type === 'alert' && e.data.device === f.devices[0])?.data.seq === last.alerts &&
    f.devices.every((d) => c.events.findLast((e) => e.type === 'telemetry' && e.data.device === d)?.data.seq === last.telemetry);
  await eventually(() => clients.every(caughtUp), 'every client has the last reading and alert', 30_000,
    () => clients.filter((c) => !caughtUp(c)).length);
  return last;
}

/** The log holds every telemetry message and alert sent, each exactly once. */
async function expectLoggedOnce(f: Feed, last: { telemetry: number; alerts: number }): Promise<void> {
  const ours = (counts: Map<string, number>) => new Map([...counts].filter(([key]) => f.devices.includes(key.split('#')[0]!)));
  const telemetryCounts = ours(await loggedCounts(stack.redis!.url, KEY_PREFIX, 'telemetry'));
  const alertCounts = ours(await loggedCounts(stack.redis!.url, KEY_PREFIX, 'alert'));
  const twice = [...telemetryCounts, ...alertCounts].filter(([, n]) => n !== 1);
  expect(twice, 'nothing appended twice').toEqual([]);
  const missing: string[] = [];
  for (const d of f.devices) {
    for (let seq = 1; seq <= last.telemetry; seq += 1) if (!telemetryCounts.has(`${d}#${seq}`)) missing.push(`${d}#${seq}`);
  }
  for (let seq = 1; seq <= last.alerts; seq += 1) if (!alertCounts.has(`${f.devices[0]}#${seq}`)) missing.push(`alert ${seq}`);
  expect(missing, 'nothing missing from the log').toEqual([]);
}

async function leaderOf(replicas: readonly ServiceControl[]): Promise<ServiceControl> {
  return eventually(async () => {
    const holders = [];
    for (const r of replicas) if ((await metric(r.url, 'ingest_leader')) === 1) holders.push(r);
    return holders.length === 1 ? holders[0] : undefined;
  }, 'one replica holds the ingest lease', 15_000);
}

/** Streams each replica serves, from its /metrics. */
async function spread(): Promise<number[]> {
  return Promise.all(stack.replicas.map((r) => metric(r.url, 'sse_clients')));
}

describe('deploying and crashing replicas of the shared log, through nginx', () => {
  it(`restarts 3 replicas one by one under ${STREAMS} streams, telemetry and alerts: 0 resets, 0 lost, 0 duplicates`, { timeout: 180_000 }, async () => {
    const clients = await openStreams();
    const f = await feed('deploy');
    try {
      console.info(`rolling restart: streams per replica before ${JSON.stringify(await spread())}`);
      for (const replica of stack.replicas) {
        const opens = clients.map((c) => c.opens);
        await sleep(1_000);
        await replica.stop();
        await replica.start();
        // Its clients resumed on the others; the next restart waits for that.
        await eventually(() => clients.every((c, i) => c.opens === opens[i] || c.source.readyState === 1), `clients of ${replica.name} back`, 20_000,
          () => clients.filter((c) => c.source.readyState !== 1).slice(0, 3).map((c) => ({ state: c.source.readyState, opens: c.opens, errors: c.errors, last: c.events.slice(-2).map((e) => e.type) })));
      }
      const last = await drainFeed(f, clients);
      const reconnects = clients.reduce((n, c) => n + c.opens - 1, 0);
      const bad = clients.map((c, i) => ({ i, problems: problems(c.events, f.devices[0]!) })).filter((p) => p.problems.length > 0);
      console.info(`rolling restart of 3 replicas under ${STREAMS} streams: ${reconnects} reconnects, ${last.telemetry * f.devices.length} readings and ${last.alerts} alerts sent, ${bad.length} clients with a reset, gap or duplicate; streams per replica after ${JSON.stringify(await spread())}`);
      expect(reconnects, 'every replica served some streams, so some reconnected').toBeGreaterThan(0);
      expect(bad, JSON.stringify(bad.slice(0, 3))).toEqual([]);
      await expectLoggedOnce(f, last);
    } finally {
      for (const c of clients) c.close();
      await f.stop();
    }
  });

  it(`kill -9 of the replica holding the ingest session under ${STREAMS} streams: its clients resume on the others, the log has everything once`, { timeout: 180_000 }, async () => {
    const clients = await openStreams();
    const f = await feed('crash');
    try {
      await sleep(1_500);
      const victim = await leaderOf(stack.replicas);
      const served = await metric(victim.url, 'sse_clients');
      await victim.kill();
      const others = stack.replicas.filter((r) => r !== victim);
      const successor = await leaderOf(others);
      await sleep(2_000);
      await victim.start();
      const last = await drainFeed(f, clients);
      const reconnects = clients.reduce((n, c) => n + c.opens - 1, 0);
      const bad = clients.map((c, i) => ({ i, problems: problems(c.events, f.devices[0]!) })).filter((p) => p.problems.length > 0);
      console.info(`kill -9 of ${victim.name} (ingest holder, ${served} streams): ${successor.name} took over, ${reconnects} reconnects, ${bad.length} clients with a reset, gap or duplicate`);
      expect(served, 'the killed replica served streams').toBeGreaterThan(0);
      expect(reconnects).toBeGreaterThanOrEqual(served);
      expect(bad, JSON.stringify(bad.slice(0, 3))).toEqual([]);
      await expectLoggedOnce(f, last);
    } finally {
      for (const c of clients) c.close();
      await f.stop();
    }
  });
});
