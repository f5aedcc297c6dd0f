import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/broker/cli.js';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { freePort } from '../../src/native/ports.js';
import { ROOT } from '../helpers/built.js';
import { connectPublisher } from '../helpers/mqtt.js';
import { eventually } from '../helpers/wait.js';

// `npm run devices` against a running project broker (Mosquitto.startProject): the dynamic
// security plugin's control topic, with the admin login, as an operator uses it.

const run = promisify(execFile);
const REFUSED = /not authori[sz]ed|bad user name or password/i;
let broker: Mosquitto;
let dir: string;
const clients: MqttClient[] = [];

beforeAll(async () => {
  broker = await Mosquitto.startProject();
  dir = await mkdtemp(join(tmpdir(), 'devices-cli-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => undefined);
});

afterAll(async () => {
  await broker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function adminEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { MQTT_URL: broker.url, MQTT_ADMIN_USERNAME: broker.users!.admin.username, MQTT_ADMIN_PASSWORD: broker.users!.admin.password, ...extra };
}

async function cli(args: string[], env = adminEnv(), stdin = ''): Promise<{ code: number; out: string[] }> {
  const out: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(...l.split('\n')), stdin: async () => stdin, env });
  return { code, out };
}

function printedPassword(out: string[], id: string): string {
  const line = out.find((l) => l.startsWith(`password for ${id} (shown once): `));
  expect(line, out.join('\n')).toBeDefined();
  return line!.slice(`password for ${id} (shown once): `.length);
}

async function connectAs(username: string, password: string, clientId: string): Promise<MqttClient> {
  const client = await connectPublisher(broker.url, { username, password, clientId });
  clients.push(client);
  return client;
}

describe('npm run devices', () => {
  it('adds a device that can then publish its own topics under its own client id, and lists it', async () => {
    const svc = await connectAs(broker.users!.service.username, broker.users!.service.password, 'svc-cli');
    const seen: string[] = [];
    svc.on('message', (topic) => seen.push(topic));
    await svc.subscribeAsync('devices/#', { qos: 1 });
    const added = await cli(['add', 'pump-7']);
    expect(added.code).toBe(0);
    expect(added.out[0]).toBe('added pump-7: username pump-7, client id pump-7, topics devices/pump-7/…');
    const password = printedPassword(added.out, 'pump-7');
    expect(password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const pump = await connectAs('pump-7', password, 'pump-7');
    await pump.publishAsync('devices/pump-7/telemetry', '{}', { qos: 1 });
    await eventually(() => seen.includes('devices/pump-7/telemetry'), 'its telemetry at the service');
    await expect(connectAs('pump-7', password, 'pump-8')).rejects.toThrow(REFUSED);
    const listed = await cli(['list']);
    expect(listed).toEqual({ code: 0, out: expect.arrayContaining(['pump-7']) });
    // The service and the admin are clients of the plugin, not devices.
    expect(listed.out).not.toContain(broker.users!.service.username);
    expect(listed.out).not.toContain(broker.users!.admin.username);
  });

  it('removes a device: its open connection is closed and its login refused from then on', async () => {
    const password = printedPassword((await cli(['add', 'valve-3'])).out, 'valve-3');
    const valve = await connectAs('valve-3', password, 'valve-3');
    let closed = false;
    valve.on('close', () => (closed = true));
    expect(await cli(['remove', 'valve-3'])).toEqual({ code: 0, out: ['removed valve-3 (its connections were closed)'] });
    await eventually(() => closed, 'the removed device disconnected', 5_000);
    await expect(connectAs('valve-3', password, 'valve-3')).rejects.toThrow(REFUSED);
    expect((await cli(['list'])).out).not.toContain('valve-3');
    expect(await cli(['remove', 'valve-3'])).toEqual({ code: 1, out: ['devices: no device "valve-3" on the broker'] });
  });

  it('changes a password: the old one is refused, the new one (from stdin) accepted', async () => {
    const old = printedPassword((await cli(['add', 'fan-1'])).out, 'fan-1');
    const fresh = 'a-new-password-for-fan-1-0123';
    expect(await cli(['passwd', 'fan-1', '--password-stdin'], adminEnv(), `${fresh}\n`)).toEqual({ code: 0, out: ['new password for fan-1'] });
    await expect(connectAs('fan-1', old, 'fan-1')).rejects.toThrow(REFUSED);
    expect((await connectAs('fan-1', fresh, 'fan-1')).connected).toBe(true);
    expect((await cli(['passwd', 'fan-1', '--password-stdin'], adminEnv(), 'short\n')).out[0]).toBe('devices: a device password has at least 16 characters');
  });

  it('refuses ids that are not device ids, or are the service\'s, the admin\'s or another device\'s, with the reason', async () => {
    await cli(['add', 'twice-1']);
    expect(await cli(['add', 'twice-1'])).toEqual({ code: 1, out: ['devices: "twice-1" is already a client of the broker'] });
    expect(await cli(['add', broker.users!.service.username])).toEqual({ code: 1, out: [`devices: "${broker.users!.service.username}" is already a client of the broker`] });
    expect(await cli(['remove', broker.users!.admin.username])).toEqual({
      code: 1, out: [`devices: "${broker.users!.admin.username}" is a client of the broker but not a device (no role device:${broker.users!.admin.username}): not removed`],
    });
    for (const [id, reason] of [
      ['pump/7', '"pump/7" is not a device id: 1 to 64 letters, digits, _ or -'],
      ['pump+', '"pump+" is not a device id: 1 to 64 letters, digits, _ or -'],
      ['x'.repeat(65), `"${'x'.repeat(65)}" is not a device id: 1 to 64 letters, digits, _ or -`],
      ['mqtt-sse-gateway-ingest', '"mqtt-sse-gateway-ingest" starts with "mqtt-sse-gateway", the service\'s client ids: a device of that id could take the service\'s session'],
    ] as const) {
      const result = await cli(['add', id]);
      expect(result.code, id).toBe(2);
      expect(result.out[0], id).toBe(`devices: ${reason}`);
    }
    expect((await cli(['add'])).out[0]).toBe('devices: which device? (a device id after the command)');
    expect((await cli(['frobnicate'])).out[0]).toBe('devices: unknown command "frobnicate"');
  });

  it('says what is wrong with the admin login or the broker, exit code 1 or 2', async () => {
    expect(await cli(['list'], { MQTT_URL: broker.url })).toEqual({
      code: 2, out: ["devices: MQTT_ADMIN_PASSWORD is not set: the admin login of the broker's dynamic security plugin is needed"],
    });
    const wrong = await cli(['list'], adminEnv({ MQTT_ADMIN_PASSWORD: 'not-the-password' }));
    expect(wrong.code).toBe(1);
    expect(wrong.out[0]).toMatch(/^devices: the broker at mqtt:\/\/127\.0\.0\.1:\d+\/? refused the admin login "admin" \(MQTT_ADMIN_USERNAME \/ MQTT_ADMIN_PASSWORD\)/);
    // The service's login is not the admin: it may not speak to the plugin.
    const service = await cli(['list'], adminEnv({ MQTT_ADMIN_USERNAME: broker.users!.service.username, MQTT_ADMIN_PASSWORD: broker.users!.service.password }));
    expect(service).toEqual({ code: 1, out: [`devices: "${broker.users!.service.username}" may not read $CONTROL/dynamic-security/v1/response: is it the dynamic security admin (role admin)?`] });
    const nowhere = await cli(['list'], adminEnv({ MQTT_URL: `mqtt://127.0.0.1:${await freePort()}` }));
    expect(nowhere.code).toBe(1);
    expect(nowhere.out[0]).toMatch(/^devices: cannot reach the broker at mqtt:\/\/127\.0\.0\.1:\d+\/? \(MQTT_URL\): .*ECONNREFUSED/);
    expect((await cli(['list'], adminEnv({ MQTT_URL: 'http://x' }))).out[0]).toMatch(/^devices: MQTT_URL="http:\/\/x" is invalid/);
  });

  it('provisions the simulated fleet into an owner-only file, and a second run keeps its passwords', async () => {
    const out = join(dir, 'fleet.json');
    const env = adminEnv({ SIM_DEVICES: '3', SIM_ID_PREFIX: 'fleet' });
    const first = await cli(['provision', '--out', out], env);
    expect(first).toEqual({ code: 0, out: [`provisioned 3 devices (3 new, 0 with a new password): fleet-001 … fleet-003; passwords in ${out}`] });
    expect(((await stat(out)).mode & 0o777).toString(8)).toBe('600');
    const passwords = (JSON.parse(await readFile(out, 'utf8')) as { devices: Record<string, string> }).devices;
    expect(Object.keys(passwords)).toEqual(['fleet-001', 'fleet-002', 'fleet-003']);
    // A device running on the file stays connected through a second run (compose runs `devices`
    // again at every `up`): setting even the same password would have the broker disconnect it.
    const running = await connectAs('fleet-001', passwords['fleet-001']!, 'fleet-001');
    let dropped = false;
    running.on('close', () => { dropped = true; });
    const second = await cli(['provision', '--out', out], env);
    expect(second.out[0]).toContain('(0 new, 0 with a new password)');
    expect((JSON.parse(await readFile(out, 'utf8')) as { devices: Record<string, string> }).devices).toEqual(passwords);
    // A round trip after the run: a disconnect the run caused has reached the client by then.
    await running.publishAsync('devices/fleet-001/status', JSON.stringify({ state: 'online', ts: Date.now() }), { qos: 1 });
    expect(dropped, 'fleet-001 disconnected by the second run').toBe(false);
    for (const [id, password] of Object.entries(passwords).slice(1)) expect((await connectAs(id, password, id)).connected, id).toBe(true);
    expect((await cli(['provision'], env)).out[0]).toBe('devices: provision needs --out <file>');
    expect((await cli(['provision', '--out', out], adminEnv({ SIM_DEVICES: 'many' }))).out[0]).toBe('devices: SIM_DEVICES="many" is invalid: expected an integer from 1 to 10000');
  });

  it('runs as `npm run devices` does (node dist/broker/cli.js), exit code 0', async () => {
    const { stdout } = await run(process.execPath, [join(ROOT, 'dist', 'broker', 'cli.js'), 'add', 'built-1'], { env: { ...process.env, ...adminEnv() } });
    expect(stdout).toMatch(/^added built-1: .*\npassword for built-1 \(shown once\): \S+\n$/);
    await expect(run(process.execPath, [join(ROOT, 'dist', 'broker', 'cli.js'), 'add', 'built/1'], { env: { ...process.env, ...adminEnv() } }))
      .rejects.toMatchObject({ code: 2 });
  });
});
