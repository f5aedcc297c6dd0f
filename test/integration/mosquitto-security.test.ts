import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DynsecAdmin } from '../../src/broker/control.js';
import { addDevice } from '../../src/broker/identities.js';
import {
  INSTALL_HINT,
  checkProjectUsers,
  Mosquitto,
  findBinary,
  findDynsecPlugin,
  generateProjectUsers,
  renderProjectConfig,
  type MosquittoUser,
  type ProjectUsers,
} from '../../src/native/mosquitto.js';
import { ManagedProcess } from '../../src/native/process.js';
import { freePort, waitForPort } from '../../src/native/ports.js';
import { PROJECT_FILES } from '../../src/native/project.js';
import { deviceLogin, deviceLogins, type DeviceLogin } from '../helpers/devices.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { startService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { testTls } from '../helpers/tls.js';
import { eventually } from '../helpers/wait.js';

// The project's own mosquitto.conf and dynamic security file (Mosquitto.startProject), not a
// test config: these are the rules the compose deployment runs with.

const run = promisify(execFile);
const REFUSED = /not authori[sz]ed|bad user name or password/i;
let broker: Mosquitto;
let users: ProjectUsers;
const clients: MqttClient[] = [];
/** Every line the broker logged (output() keeps only a tail). */
const brokerLines: string[] = [];

beforeAll(async () => {
  users = generateProjectUsers();
  broker = await Mosquitto.startProject({ users, onLine: (line) => brokerLines.push(line) });
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => undefined);
});

afterAll(async () => {
  await broker?.stop();
});

async function connect(user: MosquittoUser | DeviceLogin | undefined, clientId: string, extra: Record<string, unknown> = {}): Promise<MqttClient> {
  const client = await connectPublisher(broker.url, {
    ...(user ? { username: user.username, password: user.password } : {}),
    clientId,
    ...extra,
  });
  clients.push(client);
  return client;
}

/** A device with its own login, connected under its own id. */
async function device(id: string, extra: Record<string, unknown> = {}): Promise<MqttClient> {
  return connect(await deviceLogin(broker, id), id, extra);
}

/** Everything `client` receives, as `topic payload` strings. */
function record(client: MqttClient): string[] {
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  return seen;
}

/**
 * Waits for `marker` in `seen`. The marker is sent after the messages a test expects to be
 * refused, on a path that keeps order (one publishing connection, one subscribing connection,
 * QoS 1, each refused publish acknowledged first): once it has arrived, anything the broker had
 * let through would have arrived before it, so what `seen` lacks then was not delivered.
 */
async function untilMarker(seen: string[], marker: string): Promise<void> {
  await eventually(() => seen.includes(marker), `the marker "${marker}"`, 5_000, () => seen);
}

async function service(): Promise<{ client: MqttClient; seen: string[] }> {
  const client = await connect(users.service, `svc-${Math.random().toString(36).slice(2)}`);
  const seen = record(client);
  const granted = await client.subscribeAsync('devices/#', { qos: 1 });
  expect(granted[0]?.qos).toBe(1);
  return { client, seen };
}

/** A SUBSCRIBE the broker answers with "not authorized" (0x87) for every filter. */
async function expectSubscribeRefused(client: MqttClient, filter: string): Promise<void> {
  await expect(client.subscribeAsync(filter, { qos: 1 }), filter).rejects.toThrow(/not authori[sz]ed/i);
}

describe('the project Mosquitto (mosquitto/mosquitto.conf + the dynamic security plugin)', () => {
  it('refuses an anonymous client', async () => {
    await expect(connect(undefined, 'anon-1')).rejects.toThrow(REFUSED);
  });

  it('refuses a known login with a wrong password', async () => {
    const login = await deviceLogin(broker, 'dev-wrong');
    await expect(connect({ ...login, password: 'wrong-password' }, 'dev-wrong')).rejects.toThrow(REFUSED);
    await expect(connect({ username: users.service.username, password: `${users.service.password}x` }, 'svc-wrong')).rejects.toThrow(REFUSED);
    await expect(connect({ username: users.admin.username, password: `${users.admin.password}x` }, 'adm-wrong')).rejects.toThrow(REFUSED);
  });

  it('lets the service read every device topic and a device write its own topics', async () => {
    const svc = await service();
    const pump = await device('pump-1');
    for (const kind of ['status', 'telemetry', 'events', 'acks']) {
      await pump.publishAsync(`devices/pump-1/${kind}`, `{"kind":"${kind}"}`, { qos: 1 });
    }
    await eventually(() => svc.seen.length === 4, 'four messages at the service', 5_000, () => svc.seen);
    expect(svc.seen).toEqual([
      'devices/pump-1/status {"kind":"status"}',
      'devices/pump-1/telemetry {"kind":"telemetry"}',
      'devices/pump-1/events {"kind":"events"}',
      'devices/pump-1/acks {"kind":"acks"}',
    ]);
  });

  it("refuses what a device login publishes to a foreign device's topics or outside its own: the service never sees it", async () => {
    const svc = await service();
    await deviceLogin(broker, 'pump-3'); // the victim exists: its topics are someone's
    const pump = await device('pump-2');
    const forged: [string, string][] = [
      ['devices/pump-3/telemetry', '{"forged":true}'],
      ['devices/pump-3/status', '{"state":"offline"}'],
      ['devices/pump-3/acks', '{"forged":"ack"}'],
      ['devices/pump-2/commands', '{"self":"command"}'],
      ['devices/pump-2/other', '{"unknown":"kind"}'],
      ['elsewhere/pump-2/telemetry', '{"outside":true}'],
    ];
    for (const [topic, payload] of forged) {
      // MQTT 5 clients are told in the PUBACK; MQTT 3.1.1 clients are not: either way it goes nowhere.
      await expect(pump.publishAsync(topic, payload, { qos: 1 }), topic).rejects.toThrow(/not authori[sz]ed/i);
    }
    // A marker on an allowed topic, sent after the forged ones over the same connection.
    await pump.publishAsync('devices/pump-2/telemetry', '{"marker":true}', { qos: 1 });
    await untilMarker(svc.seen, 'devices/pump-2/telemetry {"marker":true}');
    expect(svc.seen).toEqual(['devices/pump-2/telemetry {"marker":true}']);
  });

  it('delivers a command only to its own device, and only from the service', async () => {
    const svc = await service();
    const own = await device('valve-1');
    const other = await device('valve-2');
    const ownSeen = record(own);
    const otherSeen = record(other);
    await own.subscribeAsync('devices/valve-1/commands', { qos: 1 });
    await other.subscribeAsync('devices/valve-2/commands', { qos: 1 });
    // Another device's commands, by name or by wildcard: refused at SUBSCRIBE.
    for (const filter of ['devices/valve-1/commands', 'devices/+/commands', 'devices/#', '#']) await expectSubscribeRefused(other, filter);
    await expect(other.publishAsync('devices/valve-1/commands', '{"from":"valve-2"}', { qos: 1 })).rejects.toThrow(/not authori[sz]ed/i);
    await svc.client.publishAsync('devices/valve-1/commands', '{"from":"service"}', { qos: 1 });
    // Sent after valve-1's command on the service's connection: valve-2 would have had that first.
    const marker = 'devices/valve-2/commands {"marker":true}';
    await svc.client.publishAsync('devices/valve-2/commands', '{"marker":true}', { qos: 1 });
    await untilMarker(ownSeen, 'devices/valve-1/commands {"from":"service"}');
    expect(ownSeen).toEqual(['devices/valve-1/commands {"from":"service"}']);
    await untilMarker(otherSeen, marker);
    expect(otherSeen).toEqual([marker]);
  });

  it('does not let a device read what only the service reads', async () => {
    const svc = await service();
    const sneaky = await device('sneaky');
    for (const filter of ['devices/+/telemetry', 'devices/pump-9/telemetry', '$SYS/broker/uptime', '$CONTROL/dynamic-security/v1/response']) {
      await expectSubscribeRefused(sneaky, filter);
    }
    const publisher = await device('pump-9');
    await publisher.publishAsync('devices/pump-9/telemetry', '{"seq":1}', { qos: 1 });
    await eventually(() => svc.seen.some((m) => m.startsWith('devices/pump-9/telemetry')), 'telemetry at the service', 5_000);
  });

  it('keeps the admin to the control topic: no device data, no commands', async () => {
    const admin = await connect(users.admin, 'adm-1');
    await expectSubscribeRefused(admin, 'devices/#');
    await expect(admin.publishAsync('devices/pump-1/commands', '{}', { qos: 1 })).rejects.toThrow(/not authori[sz]ed/i);
    await expect(admin.publishAsync('devices/pump-1/telemetry', '{}', { qos: 1 })).rejects.toThrow(/not authori[sz]ed/i);
  });

  it("refuses a device login at CONNECT under any client id but its own: another device's, the service's, a random one", async () => {
    const logins = await deviceLogins(broker, ['bound-1', 'bound-2']);
    const login = logins.get('bound-1')!;
    // The holders of the ids it tries: neither may be disturbed.
    const neighbour = await connect(logins.get('bound-2')!, 'bound-2');
    const svc = await connect(users.service, 'mqtt-sse-gateway-ingest', { clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 300 } });
    let dropped = 0;
    for (const c of [neighbour, svc]) c.on('close', () => (dropped += 1));
    for (const clientId of ['bound-2', 'mqtt-sse-gateway-ingest', 'random-client-7', 'BOUND-1']) {
      await expect(connect(login, clientId), clientId).rejects.toThrow(REFUSED);
      await expect(connect(login, clientId, { protocolVersion: 4 }), `${clientId} (MQTT 3.1.1)`).rejects.toThrow(REFUSED);
    }
    expect(dropped).toBe(0);
    expect(neighbour.connected && svc.connected).toBe(true);
    // Its own id works.
    expect((await connect(login, 'bound-1')).connected).toBe(true);
  });

  it('answers the compose healthcheck (mosquitto_sub on $SYS/broker/uptime with the service credentials)', async () => {
    const sub = await findBinary('mosquitto_sub', INSTALL_HINT);
    const { stdout } = await run(sub, [
      '-h', broker.host, '-p', String(broker.port),
      '-u', users.service.username, '-P', users.service.password,
      '-t', '$SYS/broker/uptime', '-C', '1', '-W', '3',
    ]);
    expect(stdout).toMatch(/^\d+ seconds/);
  });

  it('keeps the service session, its queued QoS 1 messages and the device identities across a broker restart', async () => {
    const clientId = 'svc-persistent';
    const first = await connect(users.service, clientId, { clean: false, protocolVersion: 4 });
    await first.subscribeAsync('devices/+/events', { qos: 1 });
    await first.endAsync();
    const login = await deviceLogin(broker, 'boiler-1');
    const boiler = await connect(login, 'boiler-1');
    await boiler.publishAsync('devices/boiler-1/events', '{"queued":1}', { qos: 1 });
    await boiler.endAsync();
    await broker.restart(); // SIGTERM (saves), then the same port and data directory
    expect((await stat(join(broker.dir, 'data', 'mosquitto.db'))).size).toBeGreaterThan(0);
    const seen: string[] = [];
    // The handler must be in place before CONNACK: the queued message follows it at once.
    const second = mqtt.connect(broker.url, {
      clientId, clean: false, protocolVersion: 4, reconnectPeriod: 0,
      username: users.service.username, password: users.service.password,
    });
    clients.push(second);
    second.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await eventually(() => seen.length > 0, 'the message queued while the service was away', 5_000);
    expect(seen).toEqual(['devices/boiler-1/events {"queued":1}']);
    // The plugin's file is on the data directory: the device added before the restart still logs in.
    expect((await connect(login, 'boiler-1')).connected).toBe(true);
  });
});

describe('devices written into the first identities file (Mosquitto.startProject devices, as npm run stack does)', () => {
  it('are bound like added ones: own client id and topics only', async () => {
    const fleet = new Map([['first-1', 'first-device-password-1'], ['first-2', 'first-device-password-2']]);
    const own = await Mosquitto.startProject({ devices: fleet });
    try {
      const url = own.url;
      const svc = await connectPublisher(url, { ...own.users!.service, clientId: 'svc-first' });
      clients.push(svc);
      const seen = record(svc);
      await svc.subscribeAsync('devices/#', { qos: 1 });
      const dev = await connectPublisher(url, { username: 'first-1', password: 'first-device-password-1', clientId: 'first-1' });
      clients.push(dev);
      await expect(dev.publishAsync('devices/first-2/telemetry', '{}', { qos: 1 })).rejects.toThrow(/not authori[sz]ed/i);
      await dev.publishAsync('devices/first-1/telemetry', '{"marker":true}', { qos: 1 });
      await untilMarker(seen, 'devices/first-1/telemetry {"marker":true}');
      expect(seen).toEqual(['devices/first-1/telemetry {"marker":true}']);
      await expect(connectPublisher(url, { username: 'first-1', password: 'first-device-password-1', clientId: 'first-2', reconnectPeriod: 0 }))
        .rejects.toThrow(REFUSED);
    } finally {
      await own.stop();
      await rm(own.dir, { recursive: true, force: true });
    }
  });
});

describe('the client-id takeover attack (a device login under the service\'s client id)', () => {
  const SERVICE_ID = 'mqtt-sse-gateway-takeover';
  const ATTACK_MS = 6_000;
  const RATE_PER_DEVICE = 20;
  const PUBLISHERS = ['feed-1', 'feed-2'];

  /**
   * The service (embedded: its MQTT_CLIENT_ID carries the data) with a stream open, two devices
   * publishing numbered readings at QoS 1 at a known rate, and an attacker that reconnects with
   * `attackerLogin` under the service's client id, as fast as it is answered, for ATTACK_MS.
   */
  async function attack(attackerLogin: MosquittoUser, attackMs: number, { untilComplete = true } = {}) {
    brokerLines.length = 0;
    const svc = await startService({
      MQTT_URL: broker.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      MQTT_CLIENT_ID: SERVICE_ID,
    });
    const stream = new SseCollector(`${svc.url}/events?types=telemetry&devices=${PUBLISHERS.join(',')}`);
    const feeds = await Promise.all(PUBLISHERS.map(async (id) => ({ id, client: await device(id), sent: 0 })));
    try {
      await stream.waitFor((e) => e.type === 'snapshot', 'snapshot');
      let publishing = true;
      const publishers = feeds.map(async (feed) => {
        while (publishing) {
          feed.sent += 1;
          await feed.client.publishAsync(`devices/${feed.id}/telemetry`, telemetry(feed.sent), { qos: 1 });
          await sleep(1000 / RATE_PER_DEVICE);
        }
      });
      const attempts = { made: 0, refused: 0, accepted: 0 };
      let serviceDown = 0;
      const watch = setInterval(() => {
        if (!svc.service.bridge.isReady) serviceDown += 1;
      }, 50);
      const deadline = Date.now() + attackMs;
      // Bounded: the deadline, and at most 2,000 attempts (a refused CONNECT takes about a millisecond).
      while (Date.now() < deadline && attempts.made < 2_000) {
        attempts.made += 1;
        try {
          const taken = await mqtt.connectAsync(broker.url, {
            protocolVersion: 4, clientId: SERVICE_ID, clean: false, reconnectPeriod: 0, connectTimeout: 2_000,
            username: attackerLogin.username, password: attackerLogin.password,
          });
          attempts.accepted += 1;
          await taken.endAsync(true);
        } catch (err) {
          if (REFUSED.test((err as Error).message)) attempts.refused += 1;
          else throw err;
        }
        await sleep(5);
      }
      clearInterval(watch);
      publishing = false;
      await Promise.all(publishers);
      // Every reading the devices had acknowledged must reach the stream, each once, in order.
      if (untilComplete) {
        await eventually(() => {
          const seqs = (id: string) => stream.of('telemetry').filter((e) => e.data.device === id).map((e) => e.data.seq as number);
          return feeds.every((f) => seqs(f.id).length >= f.sent);
        }, 'every reading on the stream', 15_000, () => feeds.map((f) => [f.id, f.sent, stream.of('telemetry').filter((e) => e.data.device === f.id).length]));
      }
      const received = Object.fromEntries(feeds.map((f) => [f.id, stream.of('telemetry').filter((e) => e.data.device === f.id).map((e) => e.data.seq as number)]));
      // Mosquitto's own word for a takeover: the old connection under that id is closed.
      const takeovers = brokerLines.filter((l) => l.includes(`Client ${SERVICE_ID} already connected, closing old connection`)).length;
      return { attempts, serviceDown, takeovers, sent: Object.fromEntries(feeds.map((f) => [f.id, f.sent])), received };
    } finally {
      stream.close();
      await svc.stop();
    }
  }

  it('is refused every time; the service loses no message and stays connected throughout', async () => {
    const attacker = await deviceLogin(broker, 'attacker-1');
    const result = await attack(attacker, ATTACK_MS);
    expect(result.attempts.made).toBeGreaterThan(50);
    expect(result.attempts).toEqual({ made: result.attempts.made, refused: result.attempts.made, accepted: 0 });
    expect(result.serviceDown).toBe(0);
    for (const id of PUBLISHERS) {
      const sent = result.sent[id]!;
      expect(sent).toBeGreaterThan((ATTACK_MS / 1000) * RATE_PER_DEVICE * 0.5);
      expect(result.received[id], `${id}: every seq from 1 to ${sent}, once, in order`).toEqual(Array.from({ length: sent }, (_, i) => i + 1));
    }
    expect(result.takeovers).toBe(0);
    console.info(`takeover attack for ${ATTACK_MS / 1000} s: ${result.attempts.made} CONNECTs under the service's client id, ` +
      `${result.attempts.refused} refused; readings ${PUBLISHERS.map((id) => `${id} ${result.received[id]!.length}/${result.sent[id]}`).join(', ')}: 0 lost; ` +
      'service connected throughout');
  }, 60_000);

  it('works when the broker lets the login use that id (the control: a login bound to no client id takes the session over)', async () => {
    // The service's own login may use any client id (it needs several): with it, the same loop
    // pushes the service off, so the test above would see the attack if the binding were missing.
    const result = await attack(users.service, 1_500, { untilComplete: false });
    expect(result.attempts.accepted).toBeGreaterThan(0);
    expect(result.takeovers).toBeGreaterThan(0);
    console.info(`control (a login bound to no client id) for 1.5 s: ${result.attempts.accepted} of ${result.attempts.made} CONNECTs took the session ` +
      `(${result.takeovers} times the broker closed the service's connection), service seen down in ${result.serviceDown} of its 50 ms samples`);
  }, 60_000);
});

describe('mosquitto/docker-entrypoint.sh (run natively with sh)', () => {
  async function entrypoint(env: Record<string, string>) {
    const dir = await mkdtemp(join(tmpdir(), 'mosquitto-entry-'));
    // mosquitto reads its files after dropping to the `mosquitto` user.
    await chmod(dir, 0o755);
    const paths = {
      MOSQUITTO_CONFIG_DIR: PROJECT_FILES.mosquittoDir, MOSQUITTO_DATA_DIR: join(dir, 'data'),
      // The TLS listener's certificate: the test run's, as compose's `certs` step would leave it.
      MOSQUITTO_TLS_SOURCE: dirname(testTls().cert), MOSQUITTO_TLS_DIR: join(dir, 'tls'),
    };
    return { dir, paths, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TMPDIR: dir, ...paths, ...env } };
  }

  const failure = (env: Record<string, string>) =>
    run('sh', [PROJECT_FILES.mosquittoEntrypoint, 'true'], { env }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );

  it('refuses to start, with one line naming the variable, when a password is missing', async () => {
    const { dir, env } = await entrypoint({ MQTT_SERVICE_PASSWORD: 'service-secret' });
    try {
      const result = await failure(env);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^mosquitto entrypoint: MQTT_ADMIN_PASSWORD is not set/)]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['service', 's', 'service', 'a', /USERNAME are both "service"/],
    ['service', 'same-secret', 'admin', 'same-secret', /PASSWORD are the same/],
    ['svc"x', 's', 'admin', 'a', /MQTT_SERVICE_USERNAME="svc"x" is invalid/],
  ])('refuses service credentials that are also the admin\'s, or unsafe (%s/%s, %s/%s)', async (serviceUser, servicePass, adminUser, adminPass, message) => {
    const { dir, env } = await entrypoint({
      MQTT_SERVICE_USERNAME: serviceUser, MQTT_SERVICE_PASSWORD: servicePass,
      MQTT_ADMIN_USERNAME: adminUser, MQTT_ADMIN_PASSWORD: adminPass,
    });
    try {
      const result = await failure(env);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringMatching(message) });
      const logins = { service: { username: serviceUser, password: servicePass }, admin: { username: adminUser, password: adminPass } };
      expect(() => checkProjectUsers(logins), 'the native stack refuses the same').toThrow(/both|same|invalid/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('makes a dynamic security file the broker accepts at the first start, keeps it at the next, then execs the command', async () => {
    const creds = generateProjectUsers();
    const { dir, paths, env } = await entrypoint({
      MQTT_SERVICE_PASSWORD: creds.service.password,
      MQTT_ADMIN_PASSWORD: creds.admin.password,
    });
    const port = await freePort();
    const tlsPort = await freePort();
    const dynsecFile = join(paths.MOSQUITTO_DATA_DIR, 'dynamic-security.json');
    // The image's config with this run's ports and paths: exactly what startProject does.
    const conf = renderProjectConfig(await readFile(PROJECT_FILES.mosquittoConf, 'utf8'), {
      port, host: '127.0.0.1', dataDir: `${paths.MOSQUITTO_DATA_DIR}/`, pluginPath: await findDynsecPlugin(), dynsecFile,
      tlsPort, certFile: join(paths.MOSQUITTO_TLS_DIR, 'server.crt'), keyFile: join(paths.MOSQUITTO_TLS_DIR, 'server.key'),
    });
    await writeFile(join(dir, 'mosquitto.conf'), conf);
    const binary = await findBinary('mosquitto', INSTALL_HINT);
    const url = `mqtt://127.0.0.1:${port}`;
    const start = (startEnv: Record<string, string>) => {
      const proc = new ManagedProcess('entrypoint', 'sh', [PROJECT_FILES.mosquittoEntrypoint, binary, '-c', join(dir, 'mosquitto.conf')], { env: startEnv });
      return { proc, up: waitForPort(port, '127.0.0.1', 10_000, () => proc.exitedEarly()) };
    };
    let current = start(env);
    try {
      await current.up;
      expect(current.proc.output()).toMatch(/made .*dynamic-security\.json with the logins "service" \(service\) and "admin" \(admin\)/);
      expect(((await stat(dynsecFile)).mode & 0o777).toString(8)).toBe('600');
      const svc = await connectPublisher(url, { ...creds.service, clientId: 'entry-svc' });
      clients.push(svc);
      await expect(connectPublisher(url, { username: creds.service.username, password: 'nope', clientId: 'entry-2' })).rejects.toThrow(REFUSED);
      const admin = await DynsecAdmin.connect({ url, ...creds.admin });
      await addDevice(admin, 'entry-dev', 'entry-device-password-0123');
      await admin.close();
      // Next start: the file is the plugin's now. No password in the environment is needed, and
      // the device added at run time is still there.
      await current.proc.stop();
      current = start({ ...env, MQTT_SERVICE_PASSWORD: '', MQTT_ADMIN_PASSWORD: '' });
      await current.up;
      expect(current.proc.output()).not.toMatch(/made /);
      const dev = await connectPublisher(url, { username: 'entry-dev', password: 'entry-device-password-0123', clientId: 'entry-dev' });
      clients.push(dev);
      expect(dev.connected).toBe(true);
      await current.proc.stop();
      // A service username the kept file does not know: refused with the reason, not a broker nobody can use.
      const renamed = await failure({ ...env, MQTT_SERVICE_USERNAME: 'gateway' });
      expect(renamed).toMatchObject({ code: 1, stderr: expect.stringMatching(/MQTT_SERVICE_USERNAME="gateway" is not a client in .*dynamic-security\.json/) });
    } finally {
      await current.proc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
