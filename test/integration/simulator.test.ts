import { access, chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions, MqttClient, OnMessageCallback } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parseMessage } from '../../src/devices/schema.js';
import { createLogger } from '../../src/logger.js';
import { generateProjectUsers, Mosquitto, type ProjectUsers } from '../../src/native/mosquitto.js';
import { ManagedProcess, waitForLine } from '../../src/native/process.js';
import { PROJECT_ROOT } from '../../src/native/project.js';
import { DEFAULT_TOPIC_PREFIX } from '../../src/protocol.js';
import { loadSimConfig } from '../../src/simulator/config.js';
import { startFleet, type Fleet } from '../../src/simulator/fleet.js';
import { MALFORMED_KINDS } from '../../src/simulator/malformed.js';
import { readCredentials } from '../../src/broker/credentials.js';
import { fleetCredentials } from '../helpers/devices.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { startService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { FreezableProxy } from '../helpers/tcp-proxy.js';
import { eventually } from '../helpers/wait.js';

// The simulator against Debian's mosquitto with the project's own mosquitto.conf and dynamic
// security: each device logs in with its own credentials (SIM_CREDENTIALS_FILE), bound to its
// client id, and may write only its own topics.

type Packet = Parameters<OnMessageCallback>[2];

interface Received {
  topic: string;
  body: unknown;
  raw: Buffer;
  packet: Packet;
  at: number;
}

const KEEPALIVE_S = 2;
/** The service's default MQTT_MAX_PAYLOAD_BYTES. */
const MAX_PAYLOAD = loadConfig({ AUTH: 'off' }).mqtt.maxPayloadBytes;
const logger = createLogger('warn', 'simulator-test');
let broker: Mosquitto;
let users: ProjectUsers;
let credentialsDir: string;
const cleanup: (() => unknown)[] = [];

beforeAll(async () => {
  users = generateProjectUsers();
  broker = await Mosquitto.startProject({ users });
  credentialsDir = await mkdtemp(join(tmpdir(), 'sim-credentials-'));
});

afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

afterAll(async () => {
  await broker?.stop();
  if (credentialsDir) await rm(credentialsDir, { recursive: true, force: true });
});

/** A client with the service's credentials that records everything it receives. */
async function watch(topics: string[], options: IClientOptions = {}): Promise<{ client: MqttClient; seen: Received[] }> {
  const client = await connectPublisher(broker.url, { ...users.service, ...options });
  cleanup.push(() => client.endAsync(true));
  const seen: Received[] = [];
  client.on('message', (topic, raw, packet) => {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      body = undefined;
    }
    seen.push({ topic, body, raw, packet, at: Date.now() });
  });
  await client.subscribeAsync(topics, { qos: 1 });
  return { client, seen };
}

async function fleet(idPrefix: string, env: Record<string, string> = {}): Promise<Fleet> {
  const config = loadSimConfig({
    MQTT_URL: broker.url,
    // Each device its own login, bound by the broker to client id = device id.
    SIM_CREDENTIALS_FILE: await fleetCredentials(broker, idPrefix, Number(env['SIM_DEVICES'] ?? 3), credentialsDir),
    SIM_ID_PREFIX: idPrefix,
    SIM_DEVICES: '3',
    SIM_KEEPALIVE_S: String(KEEPALIVE_S),
    SIM_ACK_DELAY_MS: '50',
    SIM_SEED: '7',
    ...env,
  });
  const started = await startFleet(config, logger);
  cleanup.push(() => started.stop());
  await started.waitForOnline(config.devices, 10_000);
  return started;
}

const status = (seen: Received[], id: string) => seen.filter((m) => m.topic === `devices/${id}/status`).map((m) => m.body);

describe('simulator against the project broker', () => {
  it('brings every device online with a retained online status under its own client id', async () => {
    const live = await watch(['devices/+/status']);
    const sim = await fleet('online');
    expect(sim.devices).toEqual(['online-001', 'online-002', 'online-003']);
    for (const id of sim.devices) {
      await eventually(() => status(live.seen, id).some((b) => (b as { state?: string }).state === 'online'), `${id} online`);
    }
    const late = await watch(sim.devices.map((id) => `devices/${id}/status`));
    await eventually(() => late.seen.length === 3, 'three retained statuses');
    for (const m of late.seen) {
      expect(m.packet.retain).toBe(true);
      expect(m.body).toEqual({ state: 'online', ts: expect.any(Number) });
    }
    expect(sim.stats()).toMatchObject({ devices: 3, online: 3, connects: 3 });
  });

  it('reports a device whose connection went silent (half-open) offline over SSE once its keepalive expires, then online again', async () => {
    const proxy = await FreezableProxy.start(broker.port);
    cleanup.push(() => proxy.stop());
    const svc = await startService({
      MQTT_URL: broker.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      MQTT_CLIENT_ID: `half-open-${process.pid}`,
    });
    cleanup.push(() => svc.stop());
    const sse = new SseCollector(`${svc.url}/events?device=mute-001&types=status`);
    cleanup.push(() => sse.close());
    await sse.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const sim = await fleet('mute', { MQTT_URL: proxy.url, SIM_DEVICES: '1' });
    await sse.waitFor((e) => e.type === 'status' && e.data.state === 'online', 'online over SSE');

    // No FIN, no RST, and the device cannot reach the broker again (which would take over the
    // session and fire the will too): only the broker's keepalive check can notice.
    const frozenAt = Date.now();
    expect(proxy.freeze()).toBe(1);
    // MQTT says 1.5 x keepalive; mosquitto 2.0 runs its keepalive check only every 5 s (whole
    // seconds), so it may take up to 6 s longer.
    const limitMs = KEEPALIVE_S * 1500 + 6_000;
    const offline = await sse.waitFor((e) => e.type === 'status' && e.data.state === 'offline', 'offline over SSE', limitMs + 3_000);
    const tookMs = Date.now() - frozenAt;
    expect(tookMs, `offline ${tookMs} ms after the connection went silent (keepalive ${KEEPALIVE_S} s)`).toBeLessThan(limitMs + 1_000);
    expect(tookMs, `offline ${tookMs} ms after the connection went silent: sooner than its keepalive allows`).toBeGreaterThan(KEEPALIVE_S * 500);
    expect(offline.data.device).toBe('mute-001');
    console.info(`half-open device connection: offline over SSE ${tookMs} ms after it went silent (keepalive ${KEEPALIVE_S} s)`);

    proxy.accepting = true;
    // The device notices the dead link by its own keepalive and reconnects through the proxy.
    await eventually(() => sse.events.slice(sse.events.indexOf(offline)).find((e) => e.type === 'status' && e.data.state === 'online'),
      'the device back online over SSE', 15_000);
    expect(sim.stats().online).toBe(1);
  });

  it('lets the broker publish the retained offline will within 1.5 x keepalive of an abrupt close, then comes back', async () => {
    const sim = await fleet('drop');
    const live = await watch(['devices/drop-002/status']);
    await eventually(() => live.seen.length > 0, 'the retained online status');
    const droppedAt = Date.now();
    expect(sim.dropConnection('drop-002')).toBe(true);
    const will = await eventually(() => live.seen.find((m) => (m.body as { state?: string }).state === 'offline'),
      'the last will', KEEPALIVE_S * 1500);
    expect(will.body).toEqual({ state: 'offline' }); // the will, not a graceful offline (which has ts)
    expect(will.at - droppedAt).toBeLessThan(KEEPALIVE_S * 1500);

    const late = await watch(['devices/drop-002/status']);
    await eventually(() => late.seen.length > 0, 'the retained status');
    expect(late.seen[0]!.packet.retain).toBe(true);
    expect(late.seen[0]!.body).toEqual({ state: 'offline' });

    await eventually(() => live.seen.slice(live.seen.indexOf(will)).some((m) => (m.body as { state?: string }).state === 'online'),
      'the device back online', 8_000);
    expect(sim.stats()).toMatchObject({ faults: 1, online: 3 });
    expect(sim.dropConnection('no-such-device')).toBe(false);
  });

  it('sends telemetry at QoS 1 with seq from 1 without gaps, all valid for the service, and goes offline with ts on stop', async () => {
    const live = await watch(['devices/+/telemetry', 'devices/+/status']);
    const sim = await fleet('seq', { SIM_INTERVAL_MS: '100', SIM_TELEMETRY_QOS: '1' });
    await eventually(() => live.seen.filter((m) => m.topic.endsWith('/telemetry')).length >= 60, '60 telemetry messages');
    await sim.stop();
    for (const id of sim.devices) {
      const telemetry = live.seen.filter((m) => m.topic === `devices/${id}/telemetry`);
      expect(telemetry.map((m) => (m.body as { seq: number }).seq)).toEqual(telemetry.map((_, i) => i + 1));
      for (const m of telemetry) {
        expect(m.packet.qos).toBe(1);
        expect(parseMessage(DEFAULT_TOPIC_PREFIX, m.topic, m.raw, MAX_PAYLOAD).ok).toBe(true);
      }
      expect(status(live.seen, id).at(-1)).toEqual({ state: 'offline', ts: expect.any(Number) });
    }
    expect(sim.stats().online).toBe(0);
  });

  it('answers commands on its own acks topic, echoing correlation data and ignoring foreign response topics', async () => {
    const live = await watch(['devices/+/acks']);
    await fleet('cmd');
    const send = (id: string, body: unknown, properties: Packet['properties'] = {}) =>
      live.client.publishAsync('devices/cmd-001/commands', typeof body === 'string' ? body : JSON.stringify({ id, ...body as object }),
        { qos: 1, properties });
    const ack = (id: string) => eventually(() => live.seen.find((m) => (m.body as { id?: string }).id === id), `ack ${id}`);

    await send('c-ping', { name: 'ping', params: {}, ts: Date.now() },
      { responseTopic: 'devices/cmd-001/acks', correlationData: Buffer.from('corr-1') });
    const pong = await ack('c-ping');
    expect(pong.topic).toBe('devices/cmd-001/acks');
    expect(pong.body).toEqual({ id: 'c-ping', ok: true, result: { pong: true }, ts: expect.any(Number) });
    expect(pong.packet.properties?.correlationData?.toString()).toBe('corr-1');
    expect(parseMessage(DEFAULT_TOPIC_PREFIX, pong.topic, pong.raw, MAX_PAYLOAD).ok).toBe(true);

    await send('c-steer', { name: 'ping' }, { responseTopic: 'devices/cmd-002/acks', correlationData: Buffer.from('corr-2') });
    const steered = await ack('c-steer');
    expect(steered.topic).toBe('devices/cmd-001/acks');
    expect(steered.packet.properties?.correlationData?.toString()).toBe('corr-2');

    await send('c-slow', { name: 'set-interval', params: { intervalMs: 5 } });
    expect((await ack('c-slow')).body).toMatchObject({ ok: false, error: expect.stringContaining('intervalMs') });
    await send('c-fast', { name: 'set-interval', params: { intervalMs: 200 } });
    expect((await ack('c-fast')).body).toMatchObject({ ok: true, result: { intervalMs: 200 } });
    await send('c-what', { name: 'self-destruct' });
    expect((await ack('c-what')).body).toMatchObject({ ok: false, error: 'unknown command "self-destruct"' });

    await send('', 'not json at all');
    await send('c-after', { name: 'ping' });
    await ack('c-after');
    expect(live.seen.every((m) => m.topic === 'devices/cmd-001/acks')).toBe(true);
    expect(live.seen).toHaveLength(6); // the unparseable command got no ack
  });

  it('reboots on command: acks, goes offline with ts, comes back online and keeps counting seq', async () => {
    const live = await watch(['devices/reboot-001/+']);
    await fleet('reboot', { SIM_INTERVAL_MS: '100' });
    await eventually(() => live.seen.some((m) => m.topic.endsWith('/telemetry')), 'telemetry before the reboot');
    await live.client.publishAsync('devices/reboot-001/commands', JSON.stringify({ id: 'r1', name: 'reboot', params: {}, ts: Date.now() }), { qos: 1 });
    const ack = await eventually(() => live.seen.find((m) => m.topic.endsWith('/acks')), 'the reboot ack');
    expect(ack.body).toMatchObject({ id: 'r1', ok: true });
    const offline = await eventually(() => live.seen.find((m) => m.topic.endsWith('/status') && (m.body as { state?: string }).state === 'offline'),
      'the offline status');
    expect(offline.body).toEqual({ state: 'offline', ts: expect.any(Number) });
    const online = await eventually(() => live.seen.find((m) => m.at > offline.at && (m.body as { state?: string }).state === 'online'),
      'back online', 6_000);
    expect(online.at - offline.at).toBeGreaterThan(1_000);
    await eventually(() => live.seen.some((m) => m.at > online.at && m.topic.endsWith('/telemetry')), 'telemetry after the reboot');
    const seqs = live.seen.filter((m) => m.topic.endsWith('/telemetry')).map((m) => (m.body as { seq: number }).seq);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
  });

  it('sends every kind of malformed telemetry on purpose without ever losing its connection', async () => {
    const live = await watch(['devices/bad-001/telemetry']);
    const sim = await fleet('bad', { SIM_DEVICES: '1', SIM_INTERVAL_MS: '100', SIM_MALFORMED_RATE: '1' });
    await eventually(() => live.seen.length >= 2 * MALFORMED_KINDS.length, `${2 * MALFORMED_KINDS.length} malformed messages`, 10_000);
    for (const m of live.seen) expect(parseMessage(DEFAULT_TOPIC_PREFIX, m.topic, m.raw, MAX_PAYLOAD).ok).toBe(false);
    expect(live.seen.some((m) => m.raw.length > MAX_PAYLOAD)).toBe(true); // the project broker allows up to 128 KiB
    expect(sim.stats()).toMatchObject({ connects: 1, online: 1, telemetry: 0, publishErrors: 0 });
  });
});

describe('simulator process (dist/simulator/main.js)', () => {
  const MAIN = join(PROJECT_ROOT, 'dist', 'simulator', 'main.js');

  async function spawnSimulator(env: Record<string, string>): Promise<ManagedProcess> {
    await access(MAIN).catch(() => {
      throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
    });
    const proc = new ManagedProcess('simulator', process.execPath, [MAIN], { env: { PATH: process.env['PATH'] ?? '', ...env } });
    cleanup.push(() => proc.stop('SIGKILL'));
    return proc;
  }

  it('keeps its ready file while connected, stops on SIGTERM within seconds, every device offline with ts, exit code 0', async () => {
    const live = await watch(['devices/proc-001/status', 'devices/proc-002/status']);
    const dir = await mkdtemp(join(tmpdir(), 'sim-ready-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const readyFile = join(dir, 'ready');
    const credentials = await fleetCredentials(broker, 'proc', 2, dir);
    const proc = await spawnSimulator({
      MQTT_URL: broker.url, SIM_CREDENTIALS_FILE: credentials,
      SIM_ID_PREFIX: 'proc', SIM_DEVICES: '2', SIM_INTERVAL_MS: '200', SIM_READY_FILE: readyFile,
    });
    await eventually(() => live.seen.filter((m) => (m.body as { state?: string }).state === 'online').length === 2, 'both online', 10_000);
    await eventually(() => access(readyFile).then(() => true, () => false), 'the ready file (compose healthcheck)', 5_000);
    const line = await waitForLine(proc, /devices online 2\/2, [\d.]+ msg\/s, acks 0, faults 0/, 8_000);
    expect(JSON.parse(line)).toMatchObject({ level: 30, name: 'simulator', online: 2, devices: 2 });
    const signalledAt = Date.now();
    proc.signal('SIGTERM');
    const exit = await proc.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
    for (const id of ['proc-001', 'proc-002']) {
      expect(status(live.seen, id).at(-1)).toEqual({ state: 'offline', ts: expect.any(Number) });
    }
    for (const password of readCredentials(credentials).values()) expect(proc.output()).not.toContain(password);
    await expect(access(readyFile), 'no ready file once stopped').rejects.toThrow();
  });

  it('refuses a bad configuration with one line per variable and exit code 1', async () => {
    const proc = await spawnSimulator({ SIM_DEVICES: 'lots', SIM_MALFORMED_RATE: '2' });
    expect(await proc.exited).toEqual({ code: 1, signal: null });
    expect(proc.output().split('\n')).toEqual([
      'SIM_DEVICES="lots" is invalid: expected an integer from 1 to 10000',
      'SIM_MALFORMED_RATE="2" is invalid: expected a number from 0 to 1',
    ]);
  });

  it('refuses a credentials file that others may read, or that lacks a device, naming the file', async () => {
    const file = await fleetCredentials(broker, 'creds', 2, credentialsDir);
    await chmod(file, 0o644);
    const open = await spawnSimulator({ SIM_CREDENTIALS_FILE: file, SIM_ID_PREFIX: 'creds', SIM_DEVICES: '2' });
    expect(await open.exited).toEqual({ code: 1, signal: null });
    expect(open.output().trim()).toBe(`SIM_CREDENTIALS_FILE="${file}" is invalid: it is readable by others (mode 644): it holds passwords, chmod 600 it`);
    await chmod(file, 0o600);
    const short = await spawnSimulator({ SIM_CREDENTIALS_FILE: file, SIM_ID_PREFIX: 'creds', SIM_DEVICES: '3' });
    expect(await short.exited).toEqual({ code: 1, signal: null });
    expect(short.output().trim()).toBe(`SIM_CREDENTIALS_FILE="${file}" has no password for 1 of the 3 devices (creds-003)`);
  });
});
