import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAppImage, buildStandins, DOCKER_CLI, startEngine, type Engine } from '../../src/native/docker.js';
import { freePort } from '../../src/native/ports.js';
import { launchChromium } from '../helpers/browser.js';
import { ComposeProject, sample } from '../helpers/compose.js';
import { SseCollector } from '../helpers/sse-client.js';
import { trustForFetch } from '../helpers/tls.js';
import { eventually } from '../helpers/wait.js';

// docker-compose.yml and the Dockerfile, run for real: `docker compose up --build --wait` on a
// private Debian dockerd (src/native/docker.ts), with stand-ins for the five images the files name
// (scripts/compose-images.sh: Debian packages, not the official Alpine images). The project gets a
// name and loopback ports of its own per run; containers reach nothing off this machine. The
// clients trust the CA the compose `certs` service made, copied out of the nginx container.

// Callbacks passed to page.waitForFunction run in the browser, not in Node.
declare const document: any;

const run = promisify(execFile);
const PROJECT_PREFIX = 'msgtest';
const SERVICES = ['app', 'mosquitto', 'nginx', 'redis', 'simulator'];
/** Run once, then exited 0: the users file (the app waits for it), every simulated device its own broker login (the simulator waits for it). */
const ONE_SHOTS = ['certs', 'devices', 'users'];
const timings: Record<string, number> = {};

let engine: Engine | undefined;
let project: ComposeProject;
let dir: string;
let base: string;
// The demo users' passwords, as a user would put them in .env.
const passwords = { admin: `admin-${randomBytes(8).toString('hex')}`, operator: `operator-${randomBytes(8).toString('hex')}`, viewer: `viewer-${randomBytes(8).toString('hex')}` };
/** The operator's and the viewer's session cookies, signed in once through nginx (whose sign-in limit is 10 a minute). */
let cookie = '';
let viewerCookie = '';
const adminPassword = `admin-${randomBytes(8).toString('hex')}`;
const SIM_DEVICES = 5;
let plainBase: string;
let mqttsPort: number;
/** The compose CA's certificate and the server certificate nginx serves, as files here. */
let caFile: string;
let certFile: string;
const open: SseCollector[] = [];

async function signIn(user: keyof typeof passwords, password = passwords[user]): Promise<Response> {
  return fetch(`${base}/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user, password }) });
}

function stream(path = '/events'): SseCollector {
  const collector = new SseCollector(`${base}${path}`, { Cookie: cookie });
  open.push(collector);
  return collector;
}

/** `docker compose run --rm devices add <id>`: the password it prints once. */
async function addDevice(id: string): Promise<string> {
  const { stdout } = await project.compose(['run', '--rm', '-T', 'devices', 'add', id], 2 * 60_000);
  const password = new RegExp(`^password for ${id} \\(shown once\\): (\\S+)$`, 'm').exec(stdout)?.[1];
  if (!password) throw new Error(`devices add ${id} printed no password:\n${stdout}`);
  return password;
}
const readText = (path: string) => readFile(path, 'utf8');

async function timed<T>(name: string, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await work();
  } finally {
    timings[name] = Date.now() - started;
  }
}

/** Removes what an earlier, interrupted run left in the engine's data root (ours only: the prefix). */
async function removeStaleProjects(e: Engine): Promise<void> {
  const { stdout } = await run(DOCKER_CLI, ['ps', '-aq', '--filter', 'label=com.docker.compose.project'], { env: e.env() });
  const ids = stdout.split('\n').filter(Boolean);
  if (ids.length === 0) return;
  const { stdout: labels } = await run(DOCKER_CLI, ['inspect', '--format', '{{.Id}} {{index .Config.Labels "com.docker.compose.project"}}', ...ids], { env: e.env() });
  const stale = labels.split('\n').filter((l) => l.split(' ')[1]?.startsWith(PROJECT_PREFIX)).map((l) => l.split(' ')[0]!);
  if (stale.length > 0) await run(DOCKER_CLI, ['rm', '-f', '-v', ...stale], { env: e.env() });
  await run(DOCKER_CLI, ['network', 'prune', '-f'], { env: e.env() });
  await run(DOCKER_CLI, ['volume', 'prune', '-f'], { env: e.env() });
}

beforeAll(async () => {
  engine = await timed('engine start', () => startEngine());
  await removeStaleProjects(engine);
  await timed('stand-in images', () => buildStandins(engine!));
  const name = `${PROJECT_PREFIX}${process.pid}${Date.now().toString(36)}`;
  await timed('app image (host network)', () => buildAppImage(engine!, name));
  dir = await mkdtemp(join(tmpdir(), 'compose-up-'));
  const port = await freePort();
  const plainPort = await freePort();
  mqttsPort = await freePort();
  base = `https://127.0.0.1:${port}`;
  plainBase = `http://127.0.0.1:${plainPort}`;
  project = await ComposeProject.create(engine, name, join(dir, 'env'), {
    // Loopback only: the published ports are this machine's alone.
    HTTPS_PORT: `127.0.0.1:${port}`,
    PUBLIC_HTTPS_PORT: String(port),
    HTTP_PORT: `127.0.0.1:${plainPort}`,
    MQTTS_PORT: `127.0.0.1:${mqttsPort}`,
    MQTT_SERVICE_PASSWORD: `service-${randomBytes(8).toString('hex')}`,
    MQTT_ADMIN_PASSWORD: adminPassword,
    DEMO_ADMIN_PASSWORD: passwords.admin,
    DEMO_OPERATOR_PASSWORD: passwords.operator,
    DEMO_VIEWER_PASSWORD: passwords.viewer,
    // No container may have more than the engine itself (see docker-compose.yml, x-ulimits).
    CONTAINER_NOFILE: String(Math.min(65_536, engine.nofileLimit)),
    SIM_DEVICES: String(SIM_DEVICES),
    SIM_INTERVAL_MS: '500',
    LOG_LEVEL: 'warn',
  });
  const up = await project.compose(['up', '--build', '--wait'], 5 * 60_000);
  timings['up --build --wait'] = up.ms;
  const ca = (await project.exec('nginx', ['cat', '/etc/nginx/tls/ca.crt'])).stdout;
  caFile = join(dir, 'ca.crt');
  certFile = join(dir, 'server.crt');
  await writeFile(caFile, ca);
  await writeFile(certFile, (await project.exec('nginx', ['cat', '/etc/nginx/tls/server.crt'])).stdout);
  await trustForFetch(ca);
  const session = async (user: keyof typeof passwords): Promise<string> => {
    const res = await signIn(user);
    if (res.status !== 200) {
      const logs = await project.compose(['logs', '--tail', '40', 'nginx', 'app'], 60_000).catch((err: Error) => ({ stdout: err.message }));
      throw new Error(`sign-in as the demo ${user}: ${res.status} ${await res.text()}\n${logs.stdout}`);
    }
    return (res.headers.get('set-cookie') ?? '').split(';')[0]!;
  };
  cookie = await session('operator');
  viewerCookie = await session('viewer');
}, 20 * 60_000);

afterAll(async () => {
  for (const c of open) c.close();
  if (project) await project.compose(['--profile', 'monitoring', 'down', '-v', '-t', '30'], 2 * 60_000).catch(() => undefined);
  await engine?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  console.log(`compose-up timings (ms): ${JSON.stringify(timings)}`);
}, 3 * 60_000);

describe('docker compose up --build --wait, on the stand-in images', () => {
  it('blocks container traffic leaving the machine before any container runs', async () => {
    expect(engine!.blockedInterfaces.length).toBeGreaterThan(0);
    for (const name of engine!.blockedInterfaces) {
      await expect(run('iptables', ['-w', '5', '-C', 'DOCKER-USER', '-o', name, '-j', 'DROP'])).resolves.toBeDefined();
    }
  });

  it('brings every service up healthy after the certificates were made; only nginx and the TLS listener publish ports', async () => {
    const all = await project.containers();
    expect(all.map((c) => c.Service).sort()).toEqual([...SERVICES, ...ONE_SHOTS].sort());
    for (const c of all.filter((c) => ONE_SHOTS.includes(c.Service))) expect(`${c.Service} ${c.State} ${c.ExitCode}`).toBe(`${c.Service} exited 0`);
    const containers = all.filter((c) => !ONE_SHOTS.includes(c.Service));
    for (const c of containers) {
      const published = (c.Publishers ?? []).filter((p) => p.PublishedPort > 0).map((p) => [p.URL, p.TargetPort]);
      if (c.Service === 'certs') {
        expect(`${c.State} ${c.ExitCode}`, 'the one-shot generator').toBe('exited 0');
        continue;
      }
      expect(`${c.Service} ${c.State} ${c.Health}`).toBe(`${c.Service} running healthy`);
      const expected = { nginx: [['127.0.0.1', 8080], ['127.0.0.1', 8443]], mosquitto: [['127.0.0.1', 8883]] }[c.Service] ?? [];
      expect(published.sort(), c.Service).toEqual(expected);
    }
  });

  it('proxies to the app over its Unix socket on the shared volume, open to the app and nginx\'s group only', async () => {
    const mode = (await project.exec('app', ['stat', '-c', '%a %U %g %F', '/var/lib/mqtt-sse-gateway/socket/app.sock'])).stdout.trim();
    expect(mode).toBe('660 node 101 socket');
    const res = await fetch(`${base}/api/devices`, { headers: { cookie } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    await eventually(async () => (await project.compose(['logs', '--no-log-prefix', 'nginx'], 60_000)).stdout
      .split('\n').some((line) => line.includes('"GET /api/devices') && line.includes('upstream=unix:/var/lib/mqtt-sse-gateway/socket/app.sock')), 'nginx logs the socket as the upstream', 15_000);
  });

  it('serves one generated certificate on HTTPS and MQTT over TLS, issued by the volume\'s CA, reused by a second run of the generator', async () => {
    const ca = new X509Certificate(await readText(caFile));
    const served = async (port: number, alpn: string[]) => new Promise<{ cert: X509Certificate; protocol: string | false | null }>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.toString(), ALPNProtocols: alpn }, () => {
        resolve({ cert: new X509Certificate(socket.getPeerX509Certificate()!.raw), protocol: socket.alpnProtocol });
        socket.destroy();
      });
      socket.once('error', reject);
    });
    const https = await served(Number(new URL(base).port), ['h2', 'http/1.1']);
    const mqtts = await served(mqttsPort, []);
    expect(https.protocol).toBe('h2');
    expect(https.cert.fingerprint256).toBe(new X509Certificate(await readText(certFile)).fingerprint256);
    expect(mqtts.cert.fingerprint256).toBe(https.cert.fingerprint256);
    expect(https.cert.checkIssued(ca) && https.cert.verify(ca.publicKey)).toBe(true);
    expect(https.cert.subjectAltName).toContain('DNS:mosquitto');
    // The CA's key is not where nginx (or mosquitto) could read it.
    await project.exec('nginx', ['test', '!', '-e', '/etc/nginx/tls/ca.key']);
    await project.exec('nginx', ['test', '-s', '/etc/nginx/tls/server.key']);
    const again = await project.compose(['run', '--rm', 'certs'], 2 * 60_000);
    expect(`${again.stdout}${again.stderr}`).toContain('reused');
    expect((await project.exec('nginx', ['cat', '/etc/nginx/tls/server.crt'])).stdout).toBe(await readText(certFile));
  }, 3 * 60_000);

  it('takes a device over MQTT TLS from outside with valid credentials (mosquitto_pub --cafile), refuses it without', async () => {
    const pub = (extra: string[]) => run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqttsPort), '--cafile', caFile, '-q', '1', '-i', 'tls-outside', '-t', 'devices/tls-outside/status', ...extra], { timeout: 15_000 });
    const online = ['-m', JSON.stringify({ state: 'online', ts: Date.now() })];
    // Its own login (`docker compose run --rm devices add`), as a real device outside would have.
    const login = ['-u', 'tls-outside', '-P', await addDevice('tls-outside')];
    await expect(pub(online)).rejects.toMatchObject({ stderr: expect.stringMatching(/not authori[sz]ed/i) });
    await pub([...online, ...login]);
    const status = async () => (await fetch(`${base}/api/devices/tls-outside`, { headers: { Cookie: cookie } })).status;
    await eventually(async () => (await status()) === 200, 'the device known to the service', 15_000);
    // An empty status forgets it again: the fleet the later tests count is the simulator's alone.
    await pub(['-n', ...login]);
    await eventually(async () => (await status()) === 404, 'the device forgotten', 15_000);
  }, 60_000);

  it('redirects plain HTTP to HTTPS on the published ports, and answers /healthz on both', async () => {
    const res = await fetch(`${plainBase}/events?device=sim-001`, { redirect: 'manual' });
    expect(res.status).toBe(301);
    expect(res.headers.get('location')).toBe(`${base}/events?device=sim-001`);
    await res.body?.cancel();
    for (const url of [`${plainBase}/healthz`, `${base}/healthz`]) {
      const health = await fetch(url, { redirect: 'manual' });
      expect([health.status, await health.json()], url).toEqual([200, { status: 'ok' }]);
    }
  });

  it('gives each simulated device its own broker login, and `docker compose run --rm devices` adds and removes one', async () => {
    // The fleet's logins, made by the devices step: every simulated device, each a device client.
    const listed = (await project.compose(['run', '--rm', '-T', 'devices', 'list'], 2 * 60_000)).stdout.trim().split('\n');
    expect(listed.filter((l) => /^sim-\d{3}$/.test(l))).toEqual(Array.from({ length: SIM_DEVICES }, (_, i) => `sim-00${i + 1}`));
    // …and the simulator runs on them: each is online at the service.
    await eventually(async () => {
      const body = (await (await fetch(`${base}/api/devices`, { headers: { Cookie: cookie } })).json()) as { devices: { id: string; state: string }[] };
      return body.devices.filter((d) => d.id.startsWith('sim-') && d.state === 'online').length === SIM_DEVICES;
    }, 'every simulated device online', 20_000);
    const id = 'compose-added';
    const password = await addDevice(id);
    const pub = (clientId: string, topic: string) => project.exec('mosquitto', [
      'mosquitto_pub', '-h', '127.0.0.1', '-p', '1883', '-V', 'mqttv5', '-u', id, '-P', password, '-i', clientId, '-q', '1', '-t', topic, '-m', '{}',
    ]);
    await expect(pub(id, `devices/${id}/events`)).resolves.toBeDefined();
    // Its login under another client id is refused at CONNECT (mosquitto_pub exits non-zero).
    await expect(pub('sim-001', `devices/${id}/events`)).rejects.toThrow(/exited [1-9]/);
    const removed = await project.compose(['run', '--rm', '-T', 'devices', 'remove', id], 2 * 60_000);
    expect(removed.stdout).toContain(`removed ${id}`);
    await expect(pub(id, `devices/${id}/events`)).rejects.toThrow(/exited [1-9]/);
  }, 4 * 60_000);

  it('runs redis from redis/redis.conf as the redis user, its append-only file kept on the volume across a recreate', async () => {
    const cli = async (...args: string[]) => (await project.exec('redis', ['redis-cli', ...args])).stdout.trim().split('\n');
    expect(await cli('CONFIG', 'GET', 'appendonly')).toEqual(['appendonly', 'yes']);
    expect(await cli('CONFIG', 'GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
    expect(await cli('CONFIG', 'GET', 'appendfsync')).toEqual(['appendfsync', 'everysec']);
    expect(await cli('CONFIG', 'GET', 'dir')).toEqual(['dir', '/data']);
    const info = (await cli('INFO', 'server')).join('\n');
    expect(info).toContain('config_file:/usr/local/etc/redis/redis.conf');
    expect((await project.exec('redis', ['id', '-un'])).stdout.trim()).toBe('redis');
    await cli('SET', 'compose-probe', 'kept');
    const recreate = await project.compose(['up', '--wait', '--force-recreate', '--no-deps', 'redis'], 2 * 60_000);
    timings['up --force-recreate redis'] = recreate.ms;
    expect(await cli('GET', 'compose-probe')).toEqual(['kept']);
    expect((await project.exec('redis', ['ls', '/data/appendonlydir'])).stdout).toMatch(/\.incr\.aof$/m);
    await cli('DEL', 'compose-probe');
    // Everything healthy again before the next test.
    await project.compose(['up', '--wait'], 2 * 60_000);
  }, 4 * 60_000);

  it('serves the dashboard through the published port, and not /metrics, which the app itself serves', async () => {
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('<title>Live devices');
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.status).toBe(404);
    await metrics.body?.cancel();
    expect(sample(await project.appMetrics(), 'sse_clients')).toBeGreaterThanOrEqual(0);
  });

  it('streams /events through nginx: a snapshot of the simulated fleet, then live telemetry unbuffered', async () => {
    const client = stream();
    const snapshot = await client.waitFor((e) => e.type === 'snapshot', 'a snapshot', 15_000);
    const devices = (snapshot.data as { devices: { id: string; state: string }[] }).devices;
    expect(devices.filter((d) => d.state === 'online').map((d) => d.id)).toEqual(expect.arrayContaining(['sim-001', 'sim-005']));
    const live = await client.waitForCount('telemetry', 10, 15_000);
    // Readings arrive within a second of their device's clock: nothing holds the stream back (a
    // buffering proxy would release a 4-8 KiB chunk at a time, seconds apart at this rate).
    const lags = live.slice(0, 10).map((e) => client.arrivals[client.events.indexOf(e)]! - (e.data as { ts: number }).ts).sort((a, b) => a - b);
    expect(lags[5], JSON.stringify(lags)).toBeLessThan(1_000);
    expect(lags[9], JSON.stringify(lags)).toBeLessThan(2_000);
    client.close();
  }, 45_000);

  it('asks for sign-in everywhere: the demo users from .env sign in, a wrong password and no session do not', async () => {
    const anonymous = await fetch(`${base}/api/devices`);
    expect([anonymous.status, ((await anonymous.json()) as { error: string }).error]).toEqual([401, 'signed_out']);
    const wrong = await signIn('admin', 'not-the-password');
    expect(wrong.status).toBe(401);
    await wrong.body?.cancel();
    const seen = (await (await fetch(`${base}/api/devices`, { headers: { Cookie: viewerCookie } })).json()) as { devices: { id: string }[] };
    // The demo viewer's grant, sim-00*: all five simulated devices, nothing else.
    expect(seen.devices.map((d) => d.id).every((id) => id.startsWith('sim-00'))).toBe(true);
    const session = (await (await fetch(`${base}/api/session`, { headers: { Cookie: cookie } })).json()) as { user: string; role: string };
    expect(session).toMatchObject({ user: 'operator', role: 'operator' });
  });

  it('sends a command through nginx as the signed-in operator and returns the device\'s ack; none without a session or as a viewer', async () => {
    const send = (headers: Record<string, string>) => fetch(`${base}/api/devices/sim-002/commands`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ name: 'ping' }),
    });
    const refused = await send({});
    expect(refused.status).toBe(401);
    await refused.body?.cancel();
    const forbidden = await send({ Cookie: viewerCookie });
    expect([forbidden.status, ((await forbidden.json()) as { error: string }).error]).toEqual([403, 'forbidden']);
    const acked = await send({ Cookie: cookie });
    if (acked.status !== 200) {
      // What the device and the service saw of it, for the failure's message.
      const logs = await project.compose(['logs', '--tail', '60', 'simulator', 'app', 'mosquitto'], 60_000).catch((err: Error) => ({ stdout: err.message }));
      expect(acked.status, `${await acked.text()}\n${logs.stdout}`).toBe(200);
    }
    expect(await acked.json()).toMatchObject({ device: 'sim-002', name: 'ping', ok: true, result: { pong: true } });
  }, 30_000);

  it('manages users with `docker compose run --rm users`: a user added there signs in within seconds, and the demo users are kept', async () => {
    const add = await project.compose(['run', '--rm', '-T', 'users', 'add', 'carol', '--role', 'viewer', '--devices', 'sim-001'], 2 * 60_000);
    const password = /password for carol \(shown once\): (\S+)/.exec(add.stdout)?.[1];
    expect(password, add.stdout).toBeDefined();
    // The app notices the changed file (it looks every 2 s). Asked inside the container, not through
    // nginx, whose sign-in limit (10 a minute per address) this test must not spend on polling.
    const script = `fetch('http://127.0.0.1:3000/api/session',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify({user:'carol',password:${JSON.stringify(password)}})})`
      + ".then((r)=>process.stdout.write(r.status===200?(r.headers.get('set-cookie')||'').split(';')[0]:''),()=>process.exit(1))";
    const carol = await eventually(async () => (await project.exec('app', ['node', '-e', script])).stdout, 'carol signed in', 30_000);
    const seen = (await (await fetch(`${base}/api/devices`, { headers: { Cookie: carol } })).json()) as { devices: { id: string }[] };
    expect(seen.devices.map((d) => d.id)).toEqual(['sim-001']);
    const list = await project.compose(['run', '--rm', '-T', 'users', 'list'], 2 * 60_000);
    expect(list.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0])).toEqual(['admin', 'carol', 'operator', 'viewer']);
  }, 3 * 60_000);

  it('shows the simulated fleet live in Chromium, through the published port', async () => {
    const browser = await launchChromium(certFile);
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
      page.on('console', (msg) => {
        if (/Content.Security.Policy/i.test(msg.text())) problems.push(`csp: ${msg.text()}`);
      });
      await page.goto(base);
      // Sign-in is on: the page sends the visitor to the sign-in form first.
      await page.waitForURL(/\/signin\.html/, { timeout: 15_000 });
      await page.locator('#signin-user').fill('operator');
      await page.locator('#signin-password').fill(passwords.operator);
      await page.locator('#signin-password').press('Enter');
      await page.waitForFunction(() => document.querySelector('#connection')?.getAttribute('data-state') === 'live', undefined, { timeout: 15_000 });
      await page.waitForFunction(() => document.querySelectorAll('[data-device-id][data-state="online"]').length === 5, undefined, { timeout: 15_000 });
      const temperature = () => page.locator('[data-device-id="sim-003"] [data-metric="temperature"]').textContent();
      const before = await temperature();
      await page.waitForFunction(
        (was) => document.querySelector('[data-device-id="sim-003"] [data-metric="temperature"]')?.textContent !== was,
        before, { timeout: 15_000 },
      );
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 60_000);

  it('brings streams back after `docker compose restart app`, resumed with no reset', async () => {
    const clients = [stream(), stream(), stream()];
    for (const c of clients) await c.waitFor((e) => e.type === 'snapshot', 'a first snapshot', 15_000);
    const restart = await project.compose(['restart', 'app'], 2 * 60_000);
    timings['restart app'] = restart.ms;
    const restarted = Date.now();
    for (const c of clients) {
      await eventually(() => c.opens >= 2, 'the stream reopened', 60_000, () => ({ opens: c.opens, errors: c.errors }));
      await c.waitFor((e) => e.type === 'telemetry' && c.arrivals[c.events.indexOf(e)]! > restarted, 'telemetry after the restart', 60_000);
      // The shared log: the restarted app resumes each stream where it was.
      expect(c.of('reset')).toEqual([]);
    }
    for (const c of clients) c.close();
  }, 3 * 60_000);

  it('keeps the broker session across a recreated app: every QoS 1 message sent meanwhile arrives', async () => {
    // Only the probe publishes while the app is away, so its counter is exactly what was queued.
    await project.compose(['stop', 'simulator', 'app'], 2 * 60_000);
    // nginx answers /healthz itself, and tells stream clients to retry, with no app behind it.
    const health = await fetch(`${base}/healthz`);
    expect([health.status, await health.json()]).toEqual([200, { status: 'ok' }]);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).not.toBe(200);
    await ready.body?.cancel();
    const probe = 'probe-compose';
    const count = 40;
    const now = Date.now();
    const lines = [
      ...Array.from({ length: count }, (_, i) => JSON.stringify({ ts: now + i, seq: i + 1, metrics: { temperature: 20 + i / 10 } })),
    ].join('\n');
    const login = ['-h', '127.0.0.1', '-p', '1883', '-u', probe, '-P', await addDevice(probe), '-i', probe, '-q', '1'];
    await project.exec('mosquitto', ['mosquitto_pub', ...login, '-r', '-t', `devices/${probe}/status`, '-m', JSON.stringify({ state: 'online', ts: now })]);
    await project.exec('mosquitto', ['mosquitto_pub', ...login, '-t', `devices/${probe}/telemetry`, '-l'], { input: `${lines}\n` });
    const up = await project.compose(['up', '--build', '--wait', '--force-recreate', '--no-deps', 'app'], 5 * 60_000);
    timings['up --build --force-recreate app'] = up.ms;
    const metrics = await eventually(async () => {
      const text = await project.appMetrics();
      return (sample(text, 'mqtt_messages_received_total{kind="telemetry"}') ?? 0) >= count ? text : undefined;
    }, `${count} queued telemetry messages delivered`, 30_000);
    expect(sample(metrics, 'mqtt_messages_received_total{kind="telemetry"}')).toBe(count);
    const device = await (await fetch(`${base}/api/devices/${probe}`, { headers: { Cookie: cookie } })).json() as { telemetry?: { seq: number } };
    expect(device.telemetry?.seq).toBe(count);
    await project.compose(['up', '--build', '--wait'], 5 * 60_000);
  }, 6 * 60_000);

  it('runs Prometheus under --profile monitoring: healthy, its app target up, sse_clients answered', async () => {
    const up = await project.compose(['--profile', 'monitoring', 'up', '--build', '--wait'], 5 * 60_000);
    timings['--profile monitoring up'] = up.ms;
    const prometheus = (await project.containers()).find((c) => c.Service === 'prometheus');
    expect(`${prometheus?.State} ${prometheus?.Health}`).toBe('running healthy');
    await eventually(async () => {
      const body = JSON.parse(await project.prometheusGet('/api/v1/targets')) as {
        data: { activeTargets: { labels: { job: string }; health: string }[] };
      };
      return body.data.activeTargets.some((t) => t.labels.job === 'gateway' && t.health === 'up');
    }, 'the gateway target up', 60_000);
    const query = JSON.parse(await project.prometheusGet(`/api/v1/query?query=${encodeURIComponent('sse_clients')}`)) as {
      status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    expect(query.status).toBe('success');
    expect(query.data.result).toEqual([expect.objectContaining({ metric: expect.objectContaining({ job: 'gateway' }) })]);
    // prometheus/rules, mounted and loaded: every rule evaluated without error, and no alert left
    // active on a healthy stack (GatewayNotReady may be pending at an evaluation before the first scrape).
    let groups: { name: string; rules: { name: string; health: string; state?: string }[] }[] = [];
    const rules = await eventually(async () => {
      groups = (JSON.parse(await project.prometheusGet('/api/v1/rules')) as { data: { groups: typeof groups } }).data.groups;
      const all = groups.flatMap((g) => g.rules);
      const settled = all.every((r) => r.health !== 'unknown' && (r.state === undefined || r.state === 'inactive'));
      return all.length > 0 && settled ? groups : undefined;
    }, 'every rule evaluated, no alert active', 60_000, () => groups);
    expect(rules.map((g) => g.name).sort()).toEqual(['gateway.alerts', 'gateway.recording']);
    const all = rules.flatMap((g) => g.rules);
    expect(all.filter((r) => r.health !== 'ok').map((r) => r.name)).toEqual([]);
    expect(all.filter((r) => r.state !== undefined && r.state !== 'inactive').map((r) => r.name)).toEqual([]);
  }, 4 * 60_000);

  it('spreads streams over `--scale app=3` on the shared log; a killed replica\'s streams resume on the others with no reset', async () => {
    // Each replica has its own client id, and one ingest session is shared.
    // Replicas cannot share one socket: nginx reaches them over TCP, each found by DNS.
    const overTcp = { APP_SOCKET_PATH: '', APP_UPSTREAM: 'app:3000' };
    const up = await project.compose(['up', '--wait', '--scale', 'app=3'], 5 * 60_000, overTcp).catch(async (err: Error) => {
      const logs = await project.compose(['logs', '--tail', '20', 'app'], 60_000).catch(() => ({ stdout: '' }));
      throw new Error(`${err.message}\n${logs.stdout}`);
    });
    timings['up --scale app=3'] = up.ms;
    const apps = (await project.containers()).filter((c) => c.Service === 'app');
    expect(apps.map((c) => `${c.State} ${c.Health}`)).toEqual(['running healthy', 'running healthy', 'running healthy']);
    const { stdout: ids } = await run(DOCKER_CLI, ['ps', '-q', '--filter', `label=com.docker.compose.project=${project.name}`,
      '--filter', 'label=com.docker.compose.service=app'], { env: engine!.env() });
    const containers = ids.split('\n').filter(Boolean);
    // The streams a replica serves, from its own /metrics (every replica gives out the same ids).
    const streamsOf = async (id: string) => {
      const script = "fetch('http://127.0.0.1:3000/metrics').then((r)=>r.text()).then((t)=>{const m=/^sse_clients (\\d+)$/m.exec(t);process.stdout.write(m?m[1]:'-1')},()=>process.exit(1))";
      return Number((await run(DOCKER_CLI, ['exec', id, 'node', '-e', script], { env: engine!.env(), timeout: 30_000 })).stdout);
    };
    const clients: SseCollector[] = [];
    let counts: number[] = [];
    // nginx looks `app` up again every 10 s: streams opened after that are spread over all three.
    await eventually(async () => {
      const batch = [stream(), stream(), stream()];
      clients.push(...batch);
      for (const c of batch) await c.waitFor((e) => e.type === 'snapshot', 'a snapshot', 15_000);
      counts = await Promise.all(containers.map(streamsOf));
      return counts.filter((n) => n > 0).length >= 2;
    }, 'streams on at least two replicas', 60_000, () => counts);
    const served = Math.max(...counts);
    const victim = containers[counts.indexOf(served)]!;
    const opensBefore = clients.reduce((n, c) => n + c.opens, 0);
    await run(DOCKER_CLI, ['kill', victim], { env: engine!.env() });
    // Taken once the kill has returned: telemetry the victim wrote just before it may still arrive
    // after any earlier instant, so only a reopened stream proves the move.
    const killed = Date.now();
    await eventually(() => clients.reduce((n, c) => n + c.opens, 0) - opensBefore >= served, "the killed replica's streams reopened", 60_000,
      () => clients.map((c) => c.opens));
    for (const c of clients) {
      await c.waitFor((e) => e.type === 'telemetry' && c.arrivals[c.events.indexOf(e)]! > killed, 'telemetry after the kill', 60_000);
    }
    for (const c of clients) {
      // Resumed where it was: no reset, one snapshot, and every id after the one before it.
      expect(c.of('reset')).toEqual([]);
      expect(c.of('snapshot')).toHaveLength(1);
      const positions = c.events.filter((e) => e.id !== '').map((e) => Number(e.id.split('-').at(-1)));
      expect(positions.filter((p, k) => k > 0 && p <= positions[k - 1]!), 'no event twice').toEqual([]);
    }
    console.info(`--scale app=3: streams per replica ${JSON.stringify(counts)}; killed the one with ${served}, all resumed, 0 resets`);
    for (const c of clients) c.close();
    await project.compose(['up', '--wait', '--scale', 'app=1'], 5 * 60_000);
  }, 5 * 60_000);

  it('stops within the stop grace periods, every container exiting 0, and `down` exits 0', async () => {
    const client = stream();
    await client.waitFor((e) => e.type === 'snapshot', 'a snapshot before stopping', 15_000);
    const stop = await project.compose(['--profile', 'monitoring', 'stop'], 2 * 60_000);
    timings['stop'] = stop.ms;
    // The longest stop_grace_period is the app's 20 s; containers stop in dependency order.
    expect(stop.ms).toBeLessThan(45_000);
    const exits = Object.fromEntries((await project.containers()).map((c) => [c.Service, `${c.State} ${c.ExitCode}`]));
    expect(exits).toEqual(Object.fromEntries([...SERVICES, ...ONE_SHOTS, 'prometheus'].map((s) => [s, 'exited 0'])));
    const down = await project.compose(['--profile', 'monitoring', 'down'], 2 * 60_000);
    timings['down'] = down.ms;
    expect(await project.containers()).toEqual([]);
  }, 3 * 60_000);
});
