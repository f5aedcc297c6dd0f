import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandExpirySeconds } from '../../src/commands/expiry.js';
import { createLogger } from '../../src/logger.js';
import { COMMAND_TIMEOUT_MIN_MS, MAX_BODY_BYTES, MAX_COMMAND_BYTES, MAX_NESTING } from '../../src/protocol.js';
import { generateProjectUsers, Mosquitto, type ProjectUsers } from '../../src/native/mosquitto.js';
import { loadSimConfig } from '../../src/simulator/config.js';
import { startFleet, type Fleet } from '../../src/simulator/fleet.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { deviceLogin, fleetCredentials } from '../helpers/devices.js';
import { startService, type RunningService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';

// The whole command chain with real parts: HTTP → service → Mosquitto (project config, ACL) →
// simulated device → ack → service → HTTP answer, and every open stream told about it.

const TOKEN = 'test-command-token-0123456789';
let broker: Mosquitto;
let users: ProjectUsers;
let svc: RunningService;
let fleet: Fleet;
let watcher: SseCollector;

beforeAll(async () => {
  users = generateProjectUsers();
  broker = await Mosquitto.startProject({ users });
  svc = await serviceWith(`svc-commands-${process.pid}`, { COMMAND_TOKEN: TOKEN });
  const config = loadSimConfig({
    MQTT_URL: broker.url,
    SIM_CREDENTIALS_FILE: await fleetCredentials(broker, 'cmd', 4),
    SIM_DEVICES: '4',
    SIM_ID_PREFIX: 'cmd',
    SIM_ACK_DELAY_MS: '100',
    SIM_INTERVAL_MS: '1000',
  });
  fleet = await startFleet(config, createLogger('warn', 'fleet'));
  await fleet.waitForOnline(4, 10_000);
  await eventually(() => svc.service.store.online === 4, 'every device online in the service');
  watcher = new SseCollector(`${svc.url}/events?types=command`);
  await watcher.waitFor((e) => e.type === 'snapshot', 'snapshot');
});

afterAll(async () => {
  watcher?.close();
  await fleet?.stop();
  await svc?.stop();
  await broker?.stop();
});

/** The service (another replica, for the broker) with the project broker's service login. */
function serviceWith(clientId: string, env: Record<string, string> = {}): Promise<RunningService> {
  return startService({
    MQTT_URL: broker.url,
    MQTT_USERNAME: users.service.username,
    MQTT_PASSWORD: users.service.password,
    MQTT_CLIENT_ID: clientId,
    ...env,
  });
}

function command(device: string, body: unknown, token: string | null = TOKEN): Promise<Response> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  return fetch(`${svc.url}/api/devices/${device}/commands`, { method: 'POST', headers, body: JSON.stringify(body) });
}

describe('command round trip with the simulator', () => {
  it('publishes a command, waits for the device ack, answers 200 and tells every stream', async () => {
    const res = await command('cmd-001', { name: 'ping' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { id: string; roundtripMs: number };
    expect(body).toMatchObject({ device: 'cmd-001', name: 'ping', ok: true, result: { pong: true } });
    expect(body.roundtripMs).toBeGreaterThanOrEqual(50);
    const sent = await watcher.waitFor((e) => e.data.id === body.id && e.data.status === 'sent', 'sent event');
    const acked = await watcher.waitFor((e) => e.data.id === body.id && e.data.status === 'acked', 'acked event');
    expect(sent.data).toMatchObject({ device: 'cmd-001', name: 'ping' });
    expect(acked.data).toMatchObject({ device: 'cmd-001', result: { pong: true } });
    expect(Number(acked.id.split('-').pop())).toBeGreaterThan(Number(sent.id.split('-').pop()));
  });

  it('returns the device refusal as ok:false with its error', async () => {
    const res = await command('cmd-002', { name: 'self-destruct' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: false, error: expect.any(String) });
  });

  it('gives 20 concurrent commands to several devices each its own ack', async () => {
    const requests = Array.from({ length: 20 }, (_, i) =>
      command(`cmd-00${(i % 4) + 1}`, { name: 'set-interval', params: { intervalMs: 1000 + i } }));
    const answers = await Promise.all(requests.map(async (pending) => {
      const r = await pending;
      return { status: r.status, body: (await r.json()) as { id: string } };
    }));
    for (const [i, { status, body }] of answers.entries()) {
      expect(status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ device: `cmd-00${(i % 4) + 1}`, ok: true, result: { intervalMs: 1000 + i } });
    }
    expect(new Set(answers.map((a) => a.body.id)).size).toBe(20);
  });

  it('answers 504 and sends a timed-out event when the device never acks', async () => {
    // A device that is online (retained status) but has no process behind it to answer.
    const ghost = await connectPublisher(broker.url, await deviceLogin(broker, 'ghost-1'));
    await ghost.publishAsync('devices/ghost-1/status', JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1 });
    await eventually(() => svc.service.store.get('ghost-1')?.state === 'online', 'ghost online');
    const started = Date.now();
    const res = await command('ghost-1', { name: 'ping', timeoutMs: COMMAND_TIMEOUT_MIN_MS });
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: 'timeout' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MIN_MS);
    expect(Date.now() - started).toBeLessThan(COMMAND_TIMEOUT_MIN_MS + 2_000);
    await watcher.waitFor((e) => e.data.device === 'ghost-1' && e.data.status === 'timeout', 'timeout event');
    await ghost.publishAsync('devices/ghost-1/status', '', { qos: 1, retain: true });
    await ghost.endAsync();
  });

  // Away without the service knowing: a persistent session (clean: false) subscribed at QoS 1,
  // online by its retained status, gone with a DISCONNECT (so no last will, no offline status).
  async function awayDevice(id: string) {
    const session = { ...(await deviceLogin(broker, id)), clean: false, properties: { sessionExpiryInterval: 300 } };
    const device = await connectPublisher(broker.url, session);
    await device.subscribeAsync(`devices/${id}/commands`, { qos: 1 });
    await device.publishAsync(`devices/${id}/status`, JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1, retain: true });
    await eventually(() => svc.service.store.get(id)?.state === 'online', `${id} online`);
    await device.endAsync();
    return session;
  }

  /**
   * The device back on its session at once: every command id the broker still delivers to it,
   * up to a marker published after the reconnect on the same queue (once the marker is in, so
   * would be anything queued before it).
   */
  async function reconnectAndCollect(id: string, session: mqtt.IClientOptions): Promise<string[]> {
    const received: string[] = [];
    // Listening before the connection is up: queued messages arrive right after the CONNACK.
    const back = mqtt.connect(broker.url, { protocolVersion: 5, reconnectPeriod: 0, ...session });
    back.on('message', (_topic, payload) => received.push(JSON.parse(payload.toString()).id as string));
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
      back.once('connect', resolve);
      back.once('error', reject);
    });
    expect(connack.sessionPresent, 'the device got its session back').toBe(true);
    await svc.service.bridge.publish(`devices/${id}/commands`, JSON.stringify({ id: 'marker', name: 'ping', params: {}, ts: Date.now() }), { qos: 1, properties: {} });
    await eventually(() => received.includes('marker'), 'the marker');
    await back.publishAsync(`devices/${id}/status`, '', { qos: 1, retain: true });
    await back.endAsync();
    return received;
  }

  it('never delivers a command after its 504 to a device that reconnects right after (4 trials)', async () => {
    // 2500 ms: the shortest wait (1 s expiry); 3250 ms: the tightest one (2 s expiry + 1 s of
    // broker rounding + 250 ms slack = exactly the wait).
    const waits = [COMMAND_TIMEOUT_MIN_MS, 3_250, COMMAND_TIMEOUT_MIN_MS, 3_250];
    for (const [trial, timeoutMs] of waits.entries()) {
      const id = `late-${trial}`;
      const session = await awayDevice(id);
      const res = await command(id, { name: 'reboot', timeoutMs });
      const answeredAt = Date.now();
      expect(res.status).toBe(504);
      const received = await reconnectAndCollect(id, session);
      const { id: commandId } = (await watcher.waitFor((e) => e.data.device === id && e.data.status === 'timeout', 'timeout event')).data;
      expect(received, `trial ${trial}: command ${commandId} (timeoutMs ${timeoutMs}) not delivered after the 504 (reconnected ${Date.now() - answeredAt} ms later)`).toEqual(['marker']);
    }
  });

  it('control: with the old rounded-up expiry the same reconnect does get the command', async () => {
    // What the service did before: expiry ceil(timeoutMs / 1000), the wait counted from the
    // publish. The device reconnecting when that wait ends still receives it: the check above can fail.
    const id = 'late-control';
    const session = await awayDevice(id);
    const timeoutMs = COMMAND_TIMEOUT_MIN_MS;
    const started = Date.now();
    await svc.service.bridge.publish(`devices/${id}/commands`, JSON.stringify({ id: 'old-rounding', name: 'reboot', params: {}, ts: started, timeoutMs }), {
      qos: 1, properties: { messageExpiryInterval: Math.ceil(timeoutMs / 1000) },
    });
    await new Promise((resolve) => setTimeout(resolve, started + timeoutMs - Date.now()));
    expect(await reconnectAndCollect(id, session)).toEqual(['old-rounding', 'marker']);
  });

  const offlineCount = async () => Number(/^commands_total\{outcome="offline"\} (\d+)$/m.exec(await (await fetch(`${svc.url}/metrics`)).text())?.[1]);

  it('answers 409 at once when the device goes offline (its last will) while the command waits, on every replica\'s streams', async () => {
    const id = 'vanishing-1';
    const other = await serviceWith(`svc-replica-offline-${process.pid}`);
    const elsewhere = new SseCollector(`${other.url}/events?types=command`);
    try {
      await elsewhere.waitFor((e) => e.type === 'snapshot', 'snapshot on the other replica');
      // A device that never acks, with the same last will as the simulator's.
      const device = await connectPublisher(broker.url, {
        ...(await deviceLogin(broker, id)),
        will: { topic: `devices/${id}/status`, payload: Buffer.from(JSON.stringify({ state: 'offline' })), qos: 1, retain: true },
      });
      await device.subscribeAsync(`devices/${id}/commands`, { qos: 1 });
      const arrived = new Promise<void>((resolve) => device.once('message', () => resolve()));
      await device.publishAsync(`devices/${id}/status`, JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1, retain: true });
      await eventually(() => svc.service.store.get(id)?.state === 'online', `${id} online`);
      const offlineBefore = await offlineCount();
      const timeoutMs = 30_000;
      const pending = command(id, { name: 'ping', timeoutMs });
      await arrived; // the command reached the device; now its connection dies without a DISCONNECT
      const killedAt = Date.now();
      device.stream.destroy();
      const res = await pending;
      const waitedMs = Date.now() - killedAt;
      expect(res.status).toBe(409);
      // Mosquitto delivers a queued message until its expiry + 1 s after it received it: that is the window to name.
      const window = `reconnects within ${commandExpirySeconds(timeoutMs) + 1} s of it being sent`;
      expect(await res.json()).toMatchObject({ error: 'device_offline', message: expect.stringContaining(window) });
      // The broker sends the will as soon as it notices the dead socket: far sooner than the timeout.
      expect(waitedMs).toBeLessThan(5_000);
      const { id: commandId } = (await watcher.waitFor((e) => e.data.device === id && e.data.status === 'offline', 'offline command event')).data;
      // The replica that did not take the POST follows the same command to the same end, at once.
      await elsewhere.waitFor((e) => e.data.id === commandId && e.data.status === 'offline', 'offline on the other replica', 2_000);
      expect(elsewhere.events.filter((e) => e.data.id === commandId).map((e) => e.data.status)).toEqual(['sent', 'offline']);
      expect(await offlineCount()).toBe(offlineBefore + 1);
      const cleaner = await connectPublisher(broker.url, await deviceLogin(broker, id));
      await cleaner.publishAsync(`devices/${id}/status`, '', { qos: 1, retain: true });
      await cleaner.endAsync();
    } finally {
      elsewhere.close();
      await other.stop();
    }
  });

  it('answers 409 for an offline device and 404 for an unknown one', async () => {
    fleet.dropConnection('cmd-004');
    await eventually(() => svc.service.store.get('cmd-004')?.state === 'offline', 'cmd-004 offline', 10_000);
    const offline = await command('cmd-004', { name: 'ping' });
    expect(offline.status).toBe(409);
    expect(await offline.json()).toMatchObject({ error: 'device_offline' });
    const unknown = await command('nobody', { name: 'ping' });
    expect(unknown.status).toBe(404);
  });

  it('refuses a missing or wrong token with 401 and bad bodies with 400, 413 or 415', async () => {
    const missing = await command('cmd-001', { name: 'ping' }, null);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toContain('Bearer');
    expect((await command('cmd-001', { name: 'ping' }, `${TOKEN}x`)).status).toBe(401);
    expect((await command('cmd-001', { name: 'bad name!' })).status).toBe(400);
    expect((await command('cmd-001', { name: 'ping', params: [] })).status).toBe(400);
    expect((await command('cmd-001', { name: 'ping', timeoutMs: 5 })).status).toBe(400);
    expect((await command('cmd-001', { name: 'ping', timeoutMs: COMMAND_TIMEOUT_MIN_MS - 1 })).status).toBe(400);
    expect((await command('cmd-001', { name: 'ping', extra: 1 })).status).toBe(400);
    // Thousands of levels fit in MAX_BODY_BYTES, more than JSON.stringify survives.
    const deep = await fetch(`${svc.url}/api/devices/cmd-001/commands`, {
      method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: `{"name":"ping","params":{"a":${'['.repeat(7_000)}${']'.repeat(7_000)}}}`,
    });
    expect(deep.status).toBe(400);
    expect(await deep.json()).toMatchObject({ error: 'bad_body', message: expect.stringContaining(`${MAX_NESTING} levels`) });
    const notJson = await fetch(`${svc.url}/api/devices/cmd-001/commands`, {
      method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, body: '{"name":',
    });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: 'bad_json' });
    const wrongType = await fetch(`${svc.url}/api/devices/cmd-001/commands`, {
      method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/plain' }, body: 'ping',
    });
    expect(wrongType.status).toBe(415);
    const huge = await command('cmd-001', { name: 'ping', params: { pad: 'x'.repeat(MAX_BODY_BYTES) } });
    expect(huge.status).toBe(413);
    const metrics = await (await fetch(`${svc.url}/metrics`)).text();
    expect(metrics).toMatch(/^commands_total\{outcome="unauthorized"\} 2$/m);
    expect(metrics).toMatch(/^commands_total\{outcome="acked"\} \d+$/m);
    expect(metrics).toMatch(/^command_roundtrip_seconds_count [1-9]\d*$/m);
  });

  it('refuses with 413 a body under MAX_BODY_BYTES whose published command would pass MAX_COMMAND_BYTES, and sends nothing', async () => {
    // `1e20` (5 bytes with its comma) is published as 21 digits: a body a quarter of the size
    // limit becomes a payload larger than a device accepts.
    const numbers = (count: number) => `{"name":"ping","params":{"n":[${Array(count).fill('1e20').join(',')}]}}`;
    const send = (body: string) => fetch(`${svc.url}/api/devices/cmd-002/commands`, {
      method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, body,
    });
    const badRequests = async () => Number(/^commands_total\{outcome="bad_request"\} (\d+)$/m.exec(await (await fetch(`${svc.url}/metrics`)).text())?.[1]);
    const before = await badRequests();
    const sentTo = () => watcher.events.filter((e) => e.data.device === 'cmd-002' && e.data.status === 'sent').length;
    const sentBefore = sentTo();

    const grown = numbers(Math.floor((MAX_BODY_BYTES - 100) / 5));
    expect(grown.length).toBeLessThan(MAX_BODY_BYTES);
    expect(JSON.stringify(JSON.parse(grown)).length).toBeGreaterThan(MAX_COMMAND_BYTES);
    const refused = await send(grown);
    expect(refused.status).toBe(413);
    const body = (await refused.json()) as { error: string; message: string };
    expect(body).toMatchObject({ error: 'payload_too_large', message: expect.stringContaining(`past the ${MAX_COMMAND_BYTES} a device accepts`) });
    expect(await badRequests()).toBe(before + 1);

    // The same numbers, as many as fit once written out: sent, and the device acks them.
    const fits = await send(numbers(Math.floor((MAX_COMMAND_BYTES - 1024) / 22)));
    expect(fits.status).toBe(200);
    const { id } = (await fits.json()) as { id: string };
    await watcher.waitFor((e) => e.data.id === id && e.data.status === 'acked', 'the fitting command acked');
    // Streams are told of every command sent, in order: the refused one was never among them.
    expect(sentTo()).toBe(sentBefore + 1);
    expect(await badRequests()).toBe(before + 1);
  });

  it('shows a command taken by one replica on every replica\'s streams, once each', async () => {
    const other = await serviceWith(`svc-replica-${process.pid}`);
    const elsewhere = new SseCollector(`${other.url}/events?types=command`);
    const ghost = await connectPublisher(broker.url, await deviceLogin(broker, 'ghost-2'));
    try {
      await elsewhere.waitFor((e) => e.type === 'snapshot', 'snapshot on the other replica');
      const res = await command('cmd-003', { name: 'ping' });
      expect(res.status).toBe(200);
      const { id } = (await res.json()) as { id: string };
      const sent = await elsewhere.waitFor((e) => e.data.id === id && e.data.status === 'sent', 'sent on the other replica');
      const acked = await elsewhere.waitFor((e) => e.data.id === id && e.data.status === 'acked', 'acked on the other replica');
      expect(sent.data).toMatchObject({ device: 'cmd-003', name: 'ping' });
      expect(acked.data).toMatchObject({ device: 'cmd-003', name: 'ping', result: { pong: true } });

      // A command nobody answers times out everywhere.
      await ghost.publishAsync('devices/ghost-2/status', JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1 });
      await eventually(() => svc.service.store.get('ghost-2')?.state === 'online', 'ghost online');
      const lost = await command('ghost-2', { name: 'ping', timeoutMs: COMMAND_TIMEOUT_MIN_MS });
      expect(lost.status).toBe(504);
      const lostId = (await elsewhere.waitFor((e) => e.data.device === 'ghost-2' && e.data.status === 'sent', 'sent to the ghost')).data.id as string;
      await elsewhere.waitFor((e) => e.data.id === lostId && e.data.status === 'timeout', 'timeout on the other replica', 3_000);

      // The replica that took them never shows its own commands twice (it does not hear them back).
      await watcher.waitFor((e) => e.data.id === lostId && e.data.status === 'timeout', 'timeout here');
      for (const which of [id, lostId]) {
        expect(watcher.events.filter((e) => e.data.id === which).map((e) => e.data.status)).toEqual(which === id ? ['sent', 'acked'] : ['sent', 'timeout']);
        expect(elsewhere.events.filter((e) => e.data.id === which).map((e) => e.data.status)).toEqual(which === id ? ['sent', 'acked'] : ['sent', 'timeout']);
      }
      // Counted once, by the replica that sent them.
      const metrics = await (await fetch(`${other.url}/metrics`)).text();
      expect(metrics).toMatch(/^commands_total\{outcome="acked"\} 0$/m);
    } finally {
      elsewhere.close();
      await ghost.publishAsync('devices/ghost-2/status', '', { qos: 1, retain: true });
      await ghost.endAsync();
      await other.stop();
    }
  });

  it('disables commands with a clear 503 when no token is configured', async () => {
    const open = await serviceWith(`svc-notoken-${process.pid}`);
    try {
      const res = await fetch(`${open.url}/api/devices/cmd-001/commands`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"ping"}',
      });
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ error: 'commands_disabled' });
    } finally {
      await open.stop();
    }
  });
});
