import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Agent, get } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateProjectUsers, Mosquitto, type ProjectUsers } from '../../src/native/mosquitto.js';
import { ManagedProcess, waitForLine } from '../../src/native/process.js';
import { builtEntry, ROOT } from '../helpers/built.js';
import { isolation } from '../helpers/service.js';
import { deviceLogin } from '../helpers/devices.js';
import { eventually } from '../helpers/wait.js';

// One device floods its connection: the service's MQTT client gets a backlog of tens of thousands
// of messages, which mqtt.js would hand over back to back. The service (its own process, as
// deployed) must keep answering HTTP while it works through them, and still take every message
// once, in order. Figures (latency under the burst) belong to the bench; here only a sanity bound.

const TOTAL = Number(process.env.BURST_TOTAL ?? 30_000);

let broker: Mosquitto;
let users: ProjectUsers;
let service: ManagedProcess;
let url: string;

beforeAll(async () => {
  users = generateProjectUsers();
  broker = await Mosquitto.startProject({ users });
  service = new ManagedProcess('service', process.execPath, [process.env.BURST_ENTRY ?? (await builtEntry('main.js'))], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      AUTH: 'off',
      MQTT_URL: broker.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      // Every reading is taken (none throttled), so each costs the full ingest.
      DEVICE_MAX_MSG_RATE: '100000',
      // The project's ACL lets devices write under devices/ only: a broker of this file's own, so the default prefix.
      MQTT_CLIENT_ID: isolation('burst').MQTT_CLIENT_ID,
    },
  });
  const line = await waitForLine(service, /"msg":"listening"/, 10_000);
  url = `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
  await eventually(async () => (await fetch(`${url}/readyz`)).status === 200, 'service ready', 10_000);
}, 30_000);

afterAll(async () => {
  await service?.stop();
  await broker?.stop();
});

/** A device in a process of its own, publishing `total` QoS 1 readings as fast as mqtt.js lets it. */
async function flood(device: string, total: number): Promise<void> {
  const script = `
    import mqtt from 'mqtt';
    const [url, username, password, device, total] = process.argv.slice(1);
    const c = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, clientId: device, username, password });
    const acks = [];
    for (let seq = 1; seq <= Number(total); seq += 1) {
      acks.push(c.publishAsync('devices/' + device + '/telemetry', JSON.stringify({ ts: Date.now(), seq, metrics: { v: seq } }), { qos: 1 }));
    }
    await Promise.all(acks);
    await c.endAsync();
  `;
  const login = await deviceLogin(broker, device);
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, broker.url, login.username, login.password, device, String(total)], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`publisher exited with ${code}`);
}

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

/** One request on a kept-alive connection; resolves to its latency in ms and its body. */
function request(path: string): Promise<{ ms: number; body: string }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    get(`${url}${path}`, { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ ms: performance.now() - started, body }));
    }).on('error', reject);
  });
}

async function received(): Promise<number> {
  const { body } = await request('/metrics');
  const line = body.split('\n').find((l) => l.startsWith('mqtt_messages_received_total{kind="telemetry"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('a burst on one MQTT connection', () => {
  it('keeps /healthz answering while the service works through a 30,000-message backlog, and takes every message once, in order', async () => {
    const before = await received();
    const latencies: number[] = [];
    // Counts of messages taken, read between /healthz probes while the backlog is worked through.
    const progress: number[] = [];
    let flooding = true;
    const probe = (async () => {
      for (let i = 0; flooding && i < 100_000; i += 1) {
        latencies.push((await request('/healthz')).ms);
        if (i % 5 === 0) progress.push((await received()) - before);
        await sleep(2);
      }
    })();
    await flood('burst-1', TOTAL);
    await eventually(async () => (await received()) - before >= TOTAL, `all ${TOTAL} messages taken`, 30_000);
    flooding = false;
    await probe;

    const sorted = [...latencies].sort((a, b) => a - b);
    const pick = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    const during = new Set(progress.filter((n) => n > 0 && n < TOTAL));
    console.log(`burst ${TOTAL}: ${latencies.length} /healthz probes, p50 ${pick(0.5).toFixed(1)} ms, p99 ${pick(0.99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms; ${during.size} distinct progress readings mid-backlog`);

    // HTTP was served between slices of the backlog, not only before and after it.
    expect(during.size).toBeGreaterThanOrEqual(5);
    // The figure belongs to the bench; here a bound no yielding service meets and a yielding one
    // meets also on a busy CI machine: most probes quick, the slowest under a quarter second.
    // (Without yielding, one stretch of the backlog held the loop 170-390 ms, and the progress
    // readings above stay at one or two. With it, the max is ~10-40 ms on a quiet machine and
    // was seen at 103 ms with other test files starting beside it.)
    expect(pick(0.9)).toBeLessThan(50);
    expect(sorted.at(-1)!).toBeLessThan(250);

    // Nothing lost, nothing twice, in order: every reading counted once, none refused (a replayed
    // one would be a duplicate, an older one after a newer one out of order), the last one shown.
    expect((await received()) - before).toBe(TOTAL);
    const metrics = (await request('/metrics')).body;
    const rejected = metrics.split('\n').filter((l) => l.startsWith('mqtt_messages_rejected_total{') && !l.endsWith(' 0'));
    expect(rejected).toEqual([]);
    const device = JSON.parse((await request('/api/devices/burst-1')).body) as { telemetry?: { seq?: number; metrics?: { v?: number } } };
    expect(device.telemetry).toMatchObject({ seq: TOTAL, metrics: { v: TOTAL } });
  }, 90_000);
});
