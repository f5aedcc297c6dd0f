import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  INSTALL_HINT,
  checkProjectUsers,
  Mosquitto,
  findBinary,
  generateProjectUsers,
  renderProjectConfig,
  type MosquittoUser,
  type ProjectUsers,
} from '../../src/native/mosquitto.js';
import { ManagedProcess } from '../../src/native/process.js';
import { freePort, waitForPort } from '../../src/native/ports.js';
import { PROJECT_FILES } from '../../src/native/project.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { testTls } from '../helpers/tls.js';
import { ensureCertificates } from '../../src/tls/certs.js';
import { eventually } from '../helpers/wait.js';

// The project's own mosquitto.conf and acl (Mosquitto.startProject), not a test config: these
// are the rules the compose deployment runs with.

const run = promisify(execFile);
let broker: Mosquitto;
let users: ProjectUsers;
const clients: MqttClient[] = [];

beforeAll(async () => {
  users = generateProjectUsers();
  broker = await Mosquitto.startProject({ users, tls: testTls() });
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => undefined);
});

afterAll(async () => {
  await broker?.stop();
});

async function connect(user: MosquittoUser | undefined, clientId: string, extra: Record<string, unknown> = {}): Promise<MqttClient> {
  const client = await connectPublisher(broker.url, {
    clientId,
    ...(user ? { username: user.username, password: user.password } : {}),
    ...extra,
  });
  clients.push(client);
  return client;
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

describe('the project Mosquitto (mosquitto/mosquitto.conf + mosquitto/acl)', () => {
  it('refuses an anonymous client', async () => {
    await expect(connect(undefined, 'anon-1')).rejects.toThrow(/not authori[sz]ed|bad user name or password/i);
  });

  it('refuses a known user with a wrong password', async () => {
    await expect(connect({ username: users.device.username, password: 'wrong-password' }, 'dev-wrong'))
      .rejects.toThrow(/not authori[sz]ed|bad user name or password/i);
    await expect(connect({ username: users.service.username, password: `${users.service.password}x` }, 'svc-wrong'))
      .rejects.toThrow(/not authori[sz]ed|bad user name or password/i);
  });

  it('lets the service read every device topic and a device write its own topics', async () => {
    const svc = await service();
    const device = await connect(users.device, 'pump-1');
    for (const kind of ['status', 'telemetry', 'events', 'acks']) {
      await device.publishAsync(`devices/pump-1/${kind}`, `{"kind":"${kind}"}`, { qos: 1 });
    }
    await eventually(() => svc.seen.length === 4, 'four messages at the service', 5_000, () => svc.seen);
    expect(svc.seen).toEqual([
      'devices/pump-1/status {"kind":"status"}',
      'devices/pump-1/telemetry {"kind":"telemetry"}',
      'devices/pump-1/events {"kind":"events"}',
      'devices/pump-1/acks {"kind":"acks"}',
    ]);
  });

  it('refuses what a device publishes under another device id or outside its topics', async () => {
    const svc = await service();
    const device = await connect(users.device, 'pump-2');
    const forged: [string, string][] = [
      ['devices/pump-3/telemetry', '{"forged":true}'],
      ['devices/pump-3/status', '{"state":"offline"}'],
      ['devices/pump-2/commands', '{"self":"command"}'],
      ['devices/pump-2/other', '{"unknown":"kind"}'],
      ['elsewhere/pump-2/telemetry', '{"outside":true}'],
    ];
    for (const [topic, payload] of forged) {
      // MQTT 5 clients are told in the PUBACK; MQTT 3.1.1 clients are not: either way it goes nowhere.
      await expect(device.publishAsync(topic, payload, { qos: 1 }), topic).rejects.toThrow(/not authori[sz]ed/i);
    }
    // A marker on an allowed topic, sent after the forged ones over the same connection: once it
    // has arrived, anything the broker had let through would have arrived before it.
    await device.publishAsync('devices/pump-2/telemetry', '{"marker":true}', { qos: 1 });
    await untilMarker(svc.seen, 'devices/pump-2/telemetry {"marker":true}');
    expect(svc.seen).toEqual(['devices/pump-2/telemetry {"marker":true}']);
  });

  it('delivers a command only to its own device, and only from the service', async () => {
    const svc = await service();
    const own = await connect(users.device, 'valve-1');
    const other = await connect(users.device, 'valve-2');
    const ownSeen = record(own);
    const otherSeen = record(other);
    await own.subscribeAsync('devices/valve-1/commands', { qos: 1 });
    // mosquitto 2.0 acknowledges these subscriptions but checks read access on every delivery.
    await other.subscribeAsync(['devices/valve-1/commands', 'devices/+/commands', 'devices/#'], { qos: 1 });
    await expect(other.publishAsync('devices/valve-1/commands', '{"from":"valve-2"}', { qos: 1 })).rejects.toThrow(/not authori[sz]ed/i);
    await svc.client.publishAsync('devices/valve-1/commands', '{"from":"service"}', { qos: 1 });
    // valve-2 may read its own commands: the service's marker follows valve-1's command on the
    // service's connection, so valve-2 would have been handed that command before the marker.
    const marker = 'devices/valve-2/commands {"marker":true}';
    await svc.client.publishAsync('devices/valve-2/commands', '{"marker":true}', { qos: 1 });
    // valve-2's refused publish was acknowledged before the service's command was sent.
    await untilMarker(ownSeen, 'devices/valve-1/commands {"from":"service"}');
    expect(ownSeen).toEqual(['devices/valve-1/commands {"from":"service"}']);
    await untilMarker(otherSeen, marker);
    // Its overlapping subscriptions may each deliver the marker; nothing else may arrive.
    expect(otherSeen.filter((m) => m !== marker)).toEqual([]);
  });

  it('does not let the device user read what only the service reads', async () => {
    const svc = await service();
    await svc.client.subscribeAsync('$SYS/broker/uptime', { qos: 0 });
    const device = await connect(users.device, 'sneaky');
    const deviceSeen = record(device);
    // Its own commands topic too, which it may read: the channel for the marker.
    await device.subscribeAsync(['devices/+/telemetry', '$SYS/broker/uptime', 'devices/sneaky/commands'], { qos: 1 });
    const publisher = await connect(users.device, 'pump-9');
    await publisher.publishAsync('devices/pump-9/telemetry', '{"seq":1}', { qos: 1 });
    await eventually(() => svc.seen.some((m) => m.startsWith('$SYS/broker/uptime')), 'uptime at the service', 5_000);
    await eventually(() => svc.seen.some((m) => m.startsWith('devices/pump-9/telemetry')), 'telemetry at the service', 5_000);
    // Sent after the retained uptime (handed out on SUBSCRIBE) and after pump-9's telemetry
    // reached the service: either would have been queued for "sneaky" ahead of the marker.
    const marker = 'devices/sneaky/commands {"marker":true}';
    await svc.client.publishAsync('devices/sneaky/commands', '{"marker":true}', { qos: 1 });
    await untilMarker(deviceSeen, marker);
    expect(deviceSeen).toEqual([marker]);
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

  it('keeps the service session and its queued QoS 1 messages across a broker restart', async () => {
    const clientId = 'svc-persistent';
    const first = await connect(users.service, clientId, { clean: false, protocolVersion: 4 });
    await first.subscribeAsync('devices/+/events', { qos: 1 });
    await first.endAsync();
    const device = await connect(users.device, 'boiler-1');
    await device.publishAsync('devices/boiler-1/events', '{"queued":1}', { qos: 1 });
    await device.endAsync();
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
  });
});

/** mosquitto_pub as a device would run it; resolves with its exit code and what it printed. */
async function mosquittoPub(args: string[]): Promise<{ code: number; output: string }> {
  const binary = await findBinary('mosquitto_pub', INSTALL_HINT);
  return run(binary, ['-h', '127.0.0.1', '-q', '1', ...args], { timeout: 10_000 }).then(
    (r) => ({ code: 0, output: `${r.stdout}${r.stderr}` }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, output: `${err.stdout}${err.stderr}` }),
  );
}

describe('the TLS listener for devices (8883 in compose)', () => {
  it('takes a device over TLS with valid credentials, the client verifying the broker with the CA alone (mosquitto_pub --cafile)', async () => {
    const { seen } = await service();
    const result = await mosquittoPub([
      '-p', String(broker.tlsPort), '--cafile', broker.tls!.caCert,
      '-u', users.device.username, '-P', users.device.password, '-i', 'tls-dev-1',
      '-t', 'devices/tls-dev-1/telemetry', '-m', '{"over":"tls"}',
    ]);
    expect(result).toEqual({ code: 0, output: '' });
    await eventually(() => seen.includes('devices/tls-dev-1/telemetry {"over":"tls"}'), 'the reading sent over TLS', 5_000, () => seen);
    // The same ACL as on the plain listener: not even over TLS may a device write as another.
    const marker = 'devices/tls-dev-1/telemetry {"marker":1}';
    await mosquittoPub(['-p', String(broker.tlsPort), '--cafile', broker.tls!.caCert, '-u', users.device.username, '-P', users.device.password, '-i', 'tls-dev-1', '-t', 'devices/other-dev/telemetry', '-m', '{"foreign":1}']);
    await mosquittoPub(['-p', String(broker.tlsPort), '--cafile', broker.tls!.caCert, '-u', users.device.username, '-P', users.device.password, '-i', 'tls-dev-1', '-t', 'devices/tls-dev-1/telemetry', '-m', '{"marker":1}']);
    await untilMarker(seen, marker);
    expect(seen.filter((m) => m.includes('foreign'))).toEqual([]);
  });

  it('refuses clients without credentials or with a wrong password, over TLS and over plain MQTT alike', async () => {
    const tls = ['-p', String(broker.tlsPort), '--cafile', broker.tls!.caCert];
    const plain = ['-p', String(broker.port)];
    for (const [name, transport] of [['tls', tls], ['plain', plain]] as const) {
      const anonymous = await mosquittoPub([...transport, '-i', `anon-${name}`, '-t', `devices/anon-${name}/telemetry`, '-m', '{}']);
      expect(anonymous.code, `${name}: ${anonymous.output}`).not.toBe(0);
      expect(anonymous.output, name).toMatch(/not authori[sz]ed/i);
      const wrong = await mosquittoPub([...transport, '-u', users.device.username, '-P', 'wrong', '-i', `wrong-${name}`, '-t', `devices/wrong-${name}/telemetry`, '-m', '{}']);
      expect(wrong.code, `${name}: ${wrong.output}`).not.toBe(0);
      expect(wrong.output, name).toMatch(/not authori[sz]ed/i);
    }
  });

  it('is TLS only: a client trusting another CA fails the handshake, and plain MQTT on it gets nowhere', async () => {
    const other = await mkdtemp(join(tmpdir(), 'other-ca-'));
    try {
      const stranger = await ensureCertificates({ dir: other });
      const untrusted = await mosquittoPub(['-p', String(broker.tlsPort), '--cafile', stranger.caCert, '-u', users.device.username, '-P', users.device.password, '-i', 'tls-dev-2', '-t', 'devices/tls-dev-2/telemetry', '-m', '{}']);
      expect(untrusted.code).not.toBe(0);
      expect(untrusted.output).toMatch(/A TLS error occurred/);
      const cleartext = await mosquittoPub(['-p', String(broker.tlsPort), '-u', users.device.username, '-P', users.device.password, '-i', 'tls-dev-3', '-t', 'devices/tls-dev-3/telemetry', '-m', '{}']);
      expect(cleartext.code).not.toBe(0);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});

describe('mosquitto/docker-entrypoint.sh (run natively with sh)', () => {
  async function entrypoint(env: Record<string, string>, args: string[] = ['true']) {
    const dir = await mkdtemp(join(tmpdir(), 'mosquitto-entry-'));
    // mosquitto reads its password file after dropping to the `mosquitto` user.
    await chmod(dir, 0o755);
    const paths = {
      MOSQUITTO_CONFIG_DIR: PROJECT_FILES.mosquittoDir, MOSQUITTO_AUTH_DIR: join(dir, 'auth'), MOSQUITTO_DATA_DIR: join(dir, 'data'),
      // Where compose mounts the certs volume (read-only), and the broker user's copy.
      MOSQUITTO_TLS_SOURCE: dirname(testTls().cert), MOSQUITTO_TLS_DIR: join(dir, 'tls'),
    };
    return { dir, paths, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...paths, ...env }, args };
  }

  it('refuses to start, with one line naming the variable, when a password is missing', async () => {
    const { dir, env } = await entrypoint({ MQTT_SERVICE_PASSWORD: 'service-secret' });
    try {
      const result = await run('sh', [PROJECT_FILES.mosquittoEntrypoint, 'true'], { env }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => err,
      );
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(/^mosquitto entrypoint: MQTT_DEVICE_PASSWORD is not set/),
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a service username that the ACL does not name', async () => {
    const { dir, env } = await entrypoint({ MQTT_SERVICE_USERNAME: 'gateway', MQTT_SERVICE_PASSWORD: 's', MQTT_DEVICE_PASSWORD: 'd' });
    try {
      await expect(run('sh', [PROJECT_FILES.mosquittoEntrypoint, 'true'], { env })).rejects.toMatchObject({
        stderr: expect.stringMatching(/MQTT_SERVICE_USERNAME="gateway" has no `user gateway` section/),
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start without a certificate for the TLS listener, saying where it looked', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'no-certs-'));
    const { dir, env } = await entrypoint({ MQTT_SERVICE_PASSWORD: 's', MQTT_DEVICE_PASSWORD: 'd', MOSQUITTO_TLS_SOURCE: empty });
    try {
      await expect(run('sh', [PROJECT_FILES.mosquittoEntrypoint, 'true'], { env })).rejects.toMatchObject({
        code: 1,
        stderr: `mosquitto entrypoint: no ${empty}/server.crt for the TLS listener; mount the certs volume (docker-compose.yml) or a directory with your server.crt and server.key there\n`,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(empty, { recursive: true, force: true });
    }
  });

  it.each([
    ['service', 's', 'service', 'd', /USERNAME are both "service"/],
    ['service', 'same-secret', 'device', 'same-secret', /PASSWORD are the same/],
  ])('refuses service credentials that are also the devices\' (%s/%s, %s/%s)', async (serviceUser, servicePass, deviceUser, devicePass, message) => {
    const { dir, env } = await entrypoint({
      MQTT_SERVICE_USERNAME: serviceUser,
      MQTT_SERVICE_PASSWORD: servicePass,
      MQTT_DEVICE_USERNAME: deviceUser,
      MQTT_DEVICE_PASSWORD: devicePass,
    });
    try {
      await expect(run('sh', [PROJECT_FILES.mosquittoEntrypoint, 'true'], { env })).rejects.toMatchObject({
        code: 1,
        stderr: expect.stringMatching(message),
      });
      const users = { service: { username: serviceUser, password: servicePass }, device: { username: deviceUser, password: devicePass } };
      expect(() => checkProjectUsers(users, 'user service\n'), 'the native stack refuses the same').toThrow(/both|same/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('builds a password file the broker accepts, then execs the command it was given', async () => {
    const creds = generateProjectUsers();
    const { dir, paths, env } = await entrypoint({
      MQTT_SERVICE_PASSWORD: creds.service.password,
      MQTT_DEVICE_PASSWORD: creds.device.password,
    });
    const port = await freePort();
    // The image's config with this run's port and paths: exactly what startProject does.
    const tlsPort = await freePort();
    const conf = renderProjectConfig(await readFile(PROJECT_FILES.mosquittoConf, 'utf8'), {
      port, host: '127.0.0.1', dataDir: `${paths.MOSQUITTO_DATA_DIR}/`,
      passwordFile: join(paths.MOSQUITTO_AUTH_DIR, 'passwd'), aclFile: join(paths.MOSQUITTO_AUTH_DIR, 'acl'),
      tlsPort, certFile: join(paths.MOSQUITTO_TLS_DIR, 'server.crt'), keyFile: join(paths.MOSQUITTO_TLS_DIR, 'server.key'),
    });
    await writeFile(join(dir, 'mosquitto.conf'), conf);
    const binary = await findBinary('mosquitto', INSTALL_HINT);
    const proc = new ManagedProcess('entrypoint', 'sh', [PROJECT_FILES.mosquittoEntrypoint, binary, '-c', join(dir, 'mosquitto.conf')], { env });
    try {
      await waitForPort(port, '127.0.0.1', 10_000, () => proc.exitedEarly());
      const client = await connectPublisher(`mqtt://127.0.0.1:${port}`, { ...creds.device, clientId: 'entry-1' });
      clients.push(client);
      expect(client.connected).toBe(true);
      await expect(
        connectPublisher(`mqtt://127.0.0.1:${port}`, { username: creds.device.username, password: 'nope', clientId: 'entry-2' }),
      ).rejects.toThrow(/not authori[sz]ed|bad user name or password/i);
      expect(((await stat(join(paths.MOSQUITTO_AUTH_DIR, 'passwd'))).mode & 0o777).toString(8)).toBe('600');
      // The TLS listener serves the copied certificate, owner-only.
      await waitForPort(tlsPort, '127.0.0.1', 10_000, () => proc.exitedEarly());
      for (const name of ['server.crt', 'server.key']) {
        expect(((await stat(join(paths.MOSQUITTO_TLS_DIR, name))).mode & 0o777).toString(8), name).toBe('600');
      }
      const overTls = await mosquittoPub(['-p', String(tlsPort), '--cafile', testTls().caCert, '-u', creds.device.username, '-P', creds.device.password, '-i', 'entry-3', '-t', 'devices/entry-3/telemetry', '-m', '{}']);
      expect(overTls).toEqual({ code: 0, output: '' });
    } finally {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
