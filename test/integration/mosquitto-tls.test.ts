// The broker's TLS listener (8883 in compose) with the project's own mosquitto.conf
// (Mosquitto.startProject): devices outside reach it with their own logins, verifying the broker
// with the CA alone, exactly as they do on the plain listener inside.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { INSTALL_HINT, Mosquitto, findBinary } from '../../src/native/mosquitto.js';
import { ensureCertificates } from '../../src/tls/certs.js';
import { deviceLogin, type DeviceLogin } from '../helpers/devices.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { testTls } from '../helpers/tls.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);
let broker: Mosquitto;
let device: DeviceLogin;
const clients: MqttClient[] = [];

beforeAll(async () => {
  broker = await Mosquitto.startProject({ tls: testTls() });
  device = await deviceLogin(broker, 'tls-dev-1');
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => undefined);
});

afterAll(async () => {
  await broker?.stop();
});

/** mosquitto_pub as a device would run it; resolves with its exit code and what it printed. */
async function mosquittoPub(args: string[]): Promise<{ code: number; output: string }> {
  const binary = await findBinary('mosquitto_pub', INSTALL_HINT);
  return run(binary, ['-h', '127.0.0.1', '-q', '1', ...args], { timeout: 10_000 }).then(
    (r) => ({ code: 0, output: `${r.stdout}${r.stderr}` }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, output: `${err.stdout}${err.stderr}` }),
  );
}

/** The service's view: everything under devices/, as `topic payload` strings. */
async function service(): Promise<string[]> {
  const client = await connectPublisher(broker.url, { ...broker.users!.service, clientId: `svc-${Math.random().toString(36).slice(2)}` });
  clients.push(client);
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await client.subscribeAsync('devices/#', { qos: 1 });
  return seen;
}

const tlsArgs = () => ['-p', String(broker.tlsPort), '--cafile', broker.tls!.caCert];
const login = (d: DeviceLogin, clientId = d.clientId) => ['-u', d.username, '-P', d.password, '-i', clientId];

describe('the TLS listener for devices (8883 in compose)', () => {
  it('takes a device over TLS with its own login, the client verifying the broker with the CA alone (mosquitto_pub --cafile)', async () => {
    const seen = await service();
    const result = await mosquittoPub([...tlsArgs(), ...login(device), '-t', 'devices/tls-dev-1/telemetry', '-m', '{"over":"tls"}']);
    expect(result).toEqual({ code: 0, output: '' });
    await eventually(() => seen.includes('devices/tls-dev-1/telemetry {"over":"tls"}'), 'the reading sent over TLS', 5_000, () => seen);
    // The same rules as on the plain listener: not even over TLS may a device write as another.
    await mosquittoPub([...tlsArgs(), ...login(device), '-t', 'devices/other-dev/telemetry', '-m', '{"foreign":1}']);
    await mosquittoPub([...tlsArgs(), ...login(device), '-t', 'devices/tls-dev-1/telemetry', '-m', '{"marker":1}']);
    await eventually(() => seen.includes('devices/tls-dev-1/telemetry {"marker":1}'), 'the marker', 5_000, () => seen);
    expect(seen.filter((m) => m.includes('foreign'))).toEqual([]);
    // Nor under another client id.
    const foreignId = await mosquittoPub([...tlsArgs(), ...login(device, 'tls-dev-2'), '-t', 'devices/tls-dev-1/telemetry', '-m', '{}']);
    expect(foreignId.code).not.toBe(0);
  });

  it('refuses clients without credentials or with a wrong password, over TLS and over plain MQTT alike', async () => {
    const plain = ['-p', String(broker.port)];
    for (const [name, transport] of [['tls', tlsArgs()], ['plain', plain]] as const) {
      const anonymous = await mosquittoPub([...transport, '-i', `anon-${name}`, '-t', `devices/anon-${name}/telemetry`, '-m', '{}']);
      expect(anonymous.code, `${name}: ${anonymous.output}`).not.toBe(0);
      expect(anonymous.output, name).toMatch(/not authori[sz]ed/i);
      const wrong = await mosquittoPub([...transport, '-u', device.username, '-P', 'wrong', '-i', device.clientId, '-t', 'devices/tls-dev-1/telemetry', '-m', '{}']);
      expect(wrong.code, `${name}: ${wrong.output}`).not.toBe(0);
      expect(wrong.output, name).toMatch(/not authori[sz]ed/i);
    }
  });

  it('is TLS only: a client trusting another CA fails the handshake, and plain MQTT on it gets nowhere', async () => {
    const other = await mkdtemp(join(tmpdir(), 'other-ca-'));
    try {
      const stranger = await ensureCertificates({ dir: other });
      const untrusted = await mosquittoPub(['-p', String(broker.tlsPort), '--cafile', stranger.caCert, ...login(device), '-t', 'devices/tls-dev-1/telemetry', '-m', '{}']);
      expect(untrusted.code).not.toBe(0);
      expect(untrusted.output).toMatch(/A TLS error occurred/);
      const cleartext = await mosquittoPub(['-p', String(broker.tlsPort), ...login(device), '-t', 'devices/tls-dev-1/telemetry', '-m', '{}']);
      expect(cleartext.code).not.toBe(0);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});
