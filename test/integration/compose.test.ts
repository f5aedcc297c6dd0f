import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderDynsecConfig } from '../../src/broker/bootstrap.js';
import { generateProjectUsers, renderProjectConfig } from '../../src/native/mosquitto.js';
import { templateVariables } from '../../src/native/nginx.js';
import { DOCKER_CLI } from '../../src/native/docker.js';
import { PROJECT_FILES, PROJECT_ROOT } from '../../src/native/project.js';
import { parseYaml } from '../helpers/yaml.js';

// The compose file's rules, checked on the normalised file: the Compose v2 plugin (`docker compose
// config`, the very parser `docker compose up` uses) validates it and resolves interpolation,
// anchors and paths, and the result is held to the deployment rules the README describes. That the
// stack then runs is test/integration/compose-up.test.ts.

const run = promisify(execFile);
const INSTALL_HINT = 'the docker compose plugin was not found: install it with `bash scripts/install-deps.sh` (as root; Compose v2 from Debian 13)';

interface Healthcheck {
  test?: string[] | string;
  disable?: boolean;
}
interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  entrypoint?: string[];
  ports?: unknown[];
  healthcheck?: Healthcheck;
  depends_on?: Record<string, { condition?: string }> | string[];
  environment?: Record<string, string | null>;
  volumes?: (string | { source?: string; target?: string; read_only?: boolean; type?: string })[];
  tmpfs?: string[] | string;
  networks?: Record<string, unknown> | string[];
  user?: string;
  read_only?: boolean;
  init?: boolean;
  stop_grace_period?: string;
  restart?: string;
  network_mode?: string;
  cap_drop?: string[];
  security_opt?: string[];
  profiles?: string[];
  ulimits?: Record<string, unknown>;
}
interface Compose {
  services: Record<string, ComposeService>;
  networks: Record<string, { internal?: boolean } | null>;
  volumes?: Record<string, unknown>;
}

/** Steps that run once and exit (not long-running: no healthcheck, no restart). */
const ONE_SHOTS = ['certs', 'devices', 'users'];
let workdir: string;
let defaults: Promise<Compose> | undefined;

beforeAll(async () => {
  workdir = await mkdtemp(join(tmpdir(), 'compose-test-'));
});
afterAll(async () => {
  await rm(workdir, { recursive: true, force: true });
});

/** `docker compose config` (every profile) with exactly `vars` as the environment (no .env, no inherited vars). */
function normalised(vars?: Record<string, string>): Promise<Compose> {
  if (vars) return runConfig(vars);
  defaults ??= runConfig({});
  return defaults;
}

async function runConfig(vars: Record<string, string>): Promise<Compose> {
  const envFile = join(workdir, `env-${Object.keys(vars).length}-${Date.now()}`);
  await writeFile(envFile, Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n'));
  let stdout: string;
  try {
    ({ stdout } = await run(
      DOCKER_CLI,
      ['compose', '--project-directory', PROJECT_ROOT, '--env-file', envFile, '-f', PROJECT_FILES.composeFile,
        '--profile', 'monitoring', 'config'],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, cwd: PROJECT_ROOT },
    ));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT' || /is not a docker command|unknown command/.test(e.stderr ?? '')) throw new Error(INSTALL_HINT);
    throw new Error(`docker compose config failed:\n${e.stderr ?? e.message}`);
  }
  return (await parseYaml(stdout)) as Compose;
}

function durationMs(value: string | undefined): number {
  const match = /^(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$/.exec(value ?? '');
  if (!value || !match) throw new Error(`unexpected duration ${JSON.stringify(value)}`);
  return Number(match[1] ?? 0) * 60_000 + Number(match[2] ?? 0) * 1000;
}

function mounts(service: ComposeService): { source: string; target: string; readOnly: boolean }[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = '', mode = ''] = v.split(':');
      return { source, target, readOnly: mode.split(',').includes('ro') };
    }
    return { source: v.source ?? '', target: v.target ?? '', readOnly: v.read_only === true };
  });
}

function networksOf(service: ComposeService): string[] {
  return Array.isArray(service.networks) ? service.networks : Object.keys(service.networks ?? {});
}

function tmpfsOf(service: ComposeService): string[] {
  const t = service.tmpfs ?? [];
  return (Array.isArray(t) ? t : [t]).map((entry) => entry.split(':')[0] ?? entry);
}

describe('docker-compose.yml', () => {
  it('is accepted by docker compose config with no .env at all (demo defaults)', async () => {
    const compose = await normalised();
    expect(Object.keys(compose.services).sort()).toEqual(['app', 'certs', 'devices', 'mosquitto', 'nginx', 'prometheus', 'redis', 'simulator', 'users']);
    for (const name of ['DEMO_ADMIN_PASSWORD', 'DEMO_OPERATOR_PASSWORD', 'DEMO_VIEWER_PASSWORD']) {
      expect(compose.services.users?.environment?.[name], name).toMatch(/^demo-/);
    }
  });

  it('starts with sign-in on: the users service makes the users file and the session secret that the app reads', async () => {
    const { services, volumes } = await normalised();
    const app = services.app!;
    const users = services.users!;
    expect(app.environment?.['AUTH']).toBe('on');
    // Only AUTH=off in .env lets everyone in; COMMAND_TOKEN matters only then, and has no default.
    expect((await normalised({ AUTH: 'off' })).services.app?.environment?.['AUTH']).toBe('off');
    expect(app.environment?.['COMMAND_TOKEN'] ?? '').toBe('');
    for (const name of ['USERS_FILE', 'SESSION_SECRET_FILE']) {
      expect(app.environment?.[name], name).toMatch(/^\/var\/lib\/mqtt-sse-gateway\/access\//);
      expect(users.environment?.[name], name).toBe(app.environment?.[name]);
    }
    expect(mounts(app)).toContainEqual({ source: 'access', target: '/var/lib/mqtt-sse-gateway/access', readOnly: true });
    expect(mounts(users)).toContainEqual({ source: 'access', target: '/var/lib/mqtt-sse-gateway/access', readOnly: false });
    expect(Object.keys(volumes ?? {})).toContain('access');
    expect(users.entrypoint).toEqual(['node', 'dist/access/cli.js']);
    expect(users.command).toEqual(['init']);
    expect(users.image).toBe(app.image);
    // A one-shot the app waits for, on no network at all.
    expect(users.restart).toBe('no');
    expect(users.network_mode).toBe('none');
    expect(app.depends_on).toMatchObject({ users: { condition: 'service_completed_successfully' } });
    // The volume takes its owner from the image's directory, which the node user must own.
    const dockerfile = await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/chown node:node \/var\/lib\/mqtt-sse-gateway\/access/);
  });

  it('gives the data session a client id that survives container recreation, and each replica its own', async () => {
    // The ingest session carries the data: a hostname-based id would change with every
    // recreated container, and the broker's queue for the old id would be lost to the new one.
    const app = (await normalised()).services.app?.environment;
    expect(app?.['MQTT_INGEST_CLIENT_ID']).toBe('mqtt-sse-gateway-ingest');
    // Empty: `mqtt-sse-gateway-<hostname>` per container, so replicas never evict each other.
    expect(app?.['MQTT_CLIENT_ID'] ?? '').toBe('');
    // Embedded, the replica's own session carries the data: .env fixes it.
    expect((await normalised({ REDIS_URL: '', MQTT_CLIENT_ID: 'mqtt-sse-gateway-x' })).services.app?.environment?.['MQTT_CLIENT_ID']).toBe('mqtt-sse-gateway-x');
  });

  it('publishes nginx (HTTPS, and HTTP for the redirect) and mosquitto\'s TLS listener only, never plain MQTT', async () => {
    const { services } = await normalised();
    const published = Object.fromEntries(
      Object.entries(services)
        .filter(([, s]) => (s.ports ?? []).length > 0)
        .map(([name, s]) => [name, (s.ports as { target: number }[]).map((p) => p.target).sort()]),
    );
    expect(published).toEqual({ nginx: [8080, 8443], mosquitto: [8883] });
  });

  it('puts everything but nginx and the TLS listener on an internal network only; the generator on none', async () => {
    const { services, networks } = await normalised();
    expect(networks['backend']?.internal).toBe(true);
    expect(networks['frontend']?.internal ?? false).toBe(false);
    expect(networks['devices']?.internal ?? false).toBe(false);
    const expected: Record<string, string[]> = { nginx: ['backend', 'frontend'], mosquitto: ['backend', 'devices'], certs: [] };
    for (const [name, service] of Object.entries(services)) {
      if (service.network_mode === 'none') continue;
      expect(networksOf(service).sort(), name).toEqual(expected[name] ?? ['backend']);
    }
    expect(services.certs?.network_mode).toBe('none');
  });

  it('makes the certificates in a one-shot service before nginx and mosquitto, the CA key in a volume only it mounts', async () => {
    const { services } = await normalised();
    const certs = services.certs!;
    expect(certs.command).toEqual(['node', 'dist/tls/main.js']);
    expect([certs.user, certs.read_only, certs.restart]).toEqual(['node', true, 'no']);
    expect(certs.image).toBe(services.app?.image);
    expect(mounts(certs).map((m) => `${m.source}:${m.target}`).sort()).toEqual(['tls-ca:/tls/ca', 'tls:/tls/server']);
    expect(certs.environment).toMatchObject({ TLS_DIR: '/tls/server', TLS_CA_DIR: '/tls/ca' });
    for (const name of ['nginx', 'mosquitto']) {
      expect((services[name]?.depends_on as Record<string, { condition: string }>)['certs'], name).toEqual(expect.objectContaining({ condition: 'service_completed_successfully' }));
      const tls = mounts(services[name]!).filter((m) => m.source === 'tls' || m.source === 'tls-ca');
      expect(tls.map((m) => [m.source, m.readOnly]), name).toEqual([['tls', true]]);
    }
    expect(mounts(services.nginx!).find((m) => m.source === 'tls')?.target).toBe('/etc/nginx/tls');
    expect(services.nginx?.environment).toMatchObject({ NGINX_TLS_CERT: '/etc/nginx/tls/server.crt', NGINX_TLS_KEY: '/etc/nginx/tls/server.key' });
    // Where the entrypoint looks (its default) and where mosquitto.conf reads the copy.
    expect(mounts(services.mosquitto!).find((m) => m.source === 'tls')?.target).toBe('/mosquitto/certs');
    expect(await readFile(PROJECT_FILES.mosquittoEntrypoint, 'utf8')).toContain('TLS_SOURCE=${MOSQUITTO_TLS_SOURCE:-/mosquitto/certs}');
    const conf = await readFile(PROJECT_FILES.mosquittoConf, 'utf8');
    expect(conf).toMatch(/^certfile \/mosquitto\/tls\/server\.crt$/m);
    expect(conf).toMatch(/^keyfile \/mosquitto\/tls\/server\.key$/m);
    expect(tmpfsOf(services.mosquitto!)).toContain('/mosquitto/tls');
    // The image gives the mount points to node, so new volumes are writable by the generator.
    expect(await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8')).toMatch(/chown node:node \/tls\/server \/tls\/ca/);
  });

  it('gives every long-running service a healthcheck, and dependents wait for service_healthy (or a one-shot\'s success)', async () => {
    const { services } = await normalised();
    expect(Object.entries(services).filter(([, s]) => (s.restart ?? 'no') === 'no').map(([name]) => name).sort()).toEqual(ONE_SHOTS);
    for (const [name, service] of Object.entries(services)) {
      if (ONE_SHOTS.includes(name)) continue;
      expect(service.healthcheck?.disable ?? false, name).toBe(false);
      expect(service.healthcheck?.test, name).toBeDefined();
      expect(service.restart, name).toBe('unless-stopped');
      const deps = service.depends_on ?? {};
      expect(Array.isArray(deps), `${name}: depends_on must carry conditions`).toBe(false);
      for (const [dep, spec] of Object.entries(deps as Record<string, { condition?: string }>)) {
        // A one-shot step is waited for until it has finished, and succeeded.
        expect(spec.condition, `${name} -> ${dep}`).toBe(ONE_SHOTS.includes(dep) ? 'service_completed_successfully' : 'service_healthy');
      }
    }
    expect(Object.keys(services.app?.depends_on ?? {}).sort()).toEqual(['mosquitto', 'redis', 'users']);
    expect(Object.keys(services.simulator?.depends_on ?? {}).sort()).toEqual(['devices', 'mosquitto']);
    // The one-shots themselves: no restart loop; the devices step needs a broker that answers.
    for (const name of ONE_SHOTS) expect(services[name]?.restart ?? 'no', name).toBe('no');
    expect(services.devices?.depends_on).toEqual({ mosquitto: expect.objectContaining({ condition: 'service_healthy' }) });
    expect(services.users?.depends_on ?? {}).toEqual({});
    expect(Object.keys(services.nginx?.depends_on ?? {}).sort()).toEqual(['app', 'certs']);
  });

  it('checks readiness, not mere liveness: /readyz for the app, an authenticated subscribe for mosquitto', async () => {
    const { services } = await normalised();
    expect(String(services.app?.healthcheck?.test)).toContain("fetch('http://127.0.0.1:3000/readyz')");
    const broker = String(services.mosquitto?.healthcheck?.test);
    expect(broker).toMatch(/mosquitto_sub .*-u "\$\$MQTT_SERVICE_USERNAME" -P "\$\$MQTT_SERVICE_PASSWORD"/);
    expect(broker).toContain("-t '$$SYS/broker/uptime' -C 1 -W 3");
    // The service's role must grant what the healthcheck reads, or the broker never turns healthy.
    // The file the entrypoint makes at the first start, as the native stack renders it.
    const dynsec = JSON.parse(renderDynsecConfig(await readFile(PROJECT_FILES.mosquittoDynsecTemplate, 'utf8'), generateProjectUsers())) as { roles: { rolename: string; acls: { acltype: string; topic: string; allow: boolean }[] }[] };
    const serviceRole = dynsec.roles.find((r) => r.rolename === 'service')?.acls ?? [];
    for (const acltype of ['subscribeLiteral', 'publishClientReceive']) {
      expect(serviceRole, acltype).toContainEqual({ acltype, topic: '$SYS/broker/uptime', allow: true });
    }
    expect(String(services.nginx?.healthcheck?.test)).toContain('http://127.0.0.1:8080/healthz');
    // PONG itself: redis-cli (7.0) exits 0 on an error reply such as LOADING (the AOF being replayed).
    expect(services.redis?.healthcheck?.test).toEqual(['CMD-SHELL', '[ "$$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ]']);
  });

  it('gives the app a stop_grace_period longer than its SSE drain window', async () => {
    const { services } = await normalised();
    const app = services.app!;
    const drainMs = Number(app.environment?.['SHUTDOWN_DRAIN_MS']);
    expect(drainMs).toBeGreaterThan(0);
    expect(durationMs(app.stop_grace_period)).toBeGreaterThan(drainMs);
    expect(app.init).toBe(true);
  });

  it('runs the app, the simulator and the one-shot steps as the non-root node user on a read-only filesystem', async () => {
    const { services } = await normalised();
    for (const name of ['app', 'simulator', 'devices', 'users']) {
      const service = services[name]!;
      expect(service.user, name).toBe('node');
      expect(service.read_only, name).toBe(true);
      // The one-shot steps write only their volumes.
      if (!ONE_SHOTS.includes(name)) expect(tmpfsOf(service), name).toContain('/tmp');
      expect(service.image, name).toBe(services.app?.image);
    }
    expect(services.simulator?.command).toEqual(['node', 'dist/simulator/main.js']);
    expect(services.devices?.entrypoint).toEqual(['node', 'dist/broker/cli.js']);
    const dockerfile = await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
    const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(finalStage).toMatch(/^USER node$/m);
    expect(finalStage).toMatch(/^CMD \["node", "dist\/main\.js"\]$/m);
    expect(finalStage).toMatch(/npm ci --omit=dev/);
  });

  it('runs nginx and mosquitto on read-only filesystems too, writing only to tmpfs and the broker volume', async () => {
    const { services } = await normalised();
    for (const name of ['nginx', 'mosquitto']) expect(services[name]?.read_only, name).toBe(true);
    expect(tmpfsOf(services.nginx!)).toEqual(expect.arrayContaining(['/etc/nginx/conf.d', '/var/cache/nginx', '/var/run', '/tmp']));
    expect(tmpfsOf(services.mosquitto!).sort()).toEqual(['/mosquitto/tls', '/tmp']);
  });

  it('sizes file descriptor limits for 10,000 streams, and nginx asks for no more than it is given', async () => {
    const { services } = await normalised();
    const limits: Record<string, number> = {};
    for (const name of ['app', 'nginx', 'mosquitto']) {
      const nofile = services[name]?.ulimits?.['nofile'] as { soft?: number; hard?: number } | number | undefined;
      const soft = typeof nofile === 'number' ? nofile : nofile?.soft;
      const hard = typeof nofile === 'number' ? nofile : nofile?.hard;
      expect(soft, `${name} ulimits.nofile`).toBeGreaterThanOrEqual(20_000 + 1_000);
      expect(hard, `${name} ulimits.nofile`).toBeGreaterThanOrEqual(soft!);
      limits[name] = hard!;
    }
    // Each stream is two connections in nginx (browser side, app side).
    const conf = await readFile(PROJECT_FILES.nginxConf, 'utf8');
    const rlimit = Number(/^worker_rlimit_nofile\s+(\d+);/m.exec(conf)?.[1]);
    const connections = Number(/^\s*worker_connections\s+(\d+);/m.exec(conf)?.[1]);
    expect(rlimit, 'worker_rlimit_nofile within the container limit').toBeLessThanOrEqual(limits['nginx']!);
    expect(connections, 'worker_connections within worker_rlimit_nofile').toBeLessThanOrEqual(rlimit);
    expect(connections, 'room for 10,000 streams (20,000 connections) per worker').toBeGreaterThanOrEqual(20_000);
  });

  it('runs redis from redis/redis.conf as its own user, read-only, with no capabilities, its data on a volume', async () => {
    const compose = await normalised();
    const redis = compose.services.redis!;
    expect(redis.image).toMatch(/^redis:7(?:[.-]|$)/);
    expect(mounts(redis)).toContainEqual({ source: PROJECT_FILES.redisDir, target: '/usr/local/etc/redis', readOnly: true });
    expect(redis.command).toEqual(['redis-server', '/usr/local/etc/redis/redis.conf']);
    // redis.conf sets no `dir`: the data lands in the working directory, the image's /data.
    const data = mounts(redis).find((m) => m.target === '/data');
    expect(data?.source).toBe('redis-data');
    expect(data?.readOnly).toBe(false);
    expect(Object.keys(compose.volumes ?? {})).toContain('redis-data');
    expect(redis.user).toBe('redis');
    expect(redis.read_only).toBe(true);
    expect(redis.cap_drop).toEqual(['ALL']);
    expect(redis.security_opt).toContain('no-new-privileges:true');
    expect(redis.ports ?? []).toEqual([]);
    expect(networksOf(redis)).toEqual(['backend']);
    expect(compose.services.app?.depends_on).toMatchObject({ redis: { condition: 'service_healthy' } });
    // The shared log by default; empty in .env: embedded.
    expect(compose.services.app?.environment?.['REDIS_URL']).toBe('redis://redis:6379');
    expect((await normalised({ REDIS_URL: '' })).services.app?.environment?.['REDIS_URL'] ?? '').toBe('');
  });

  it('gives redis the settings the log relies on, with protected mode off only because nothing outside reaches it', async () => {
    const lines = (await readFile(PROJECT_FILES.redisConf, 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    const settings = Object.fromEntries(lines.map((l) => [l.split(' ')[0]!, l.slice(l.indexOf(' ') + 1)]));
    expect(settings).toMatchObject({
      appendonly: 'yes', appendfsync: 'everysec', 'maxmemory-policy': 'noeviction', save: '""', 'protected-mode': 'no', port: '6379',
    });
    // A `dir` would be entered while the file is read, before the native runner's --dir.
    expect(settings['dir']).toBeUndefined();
    // Protected mode off is safe only on the internal network: no published port (above), no other network.
    const { networks } = await normalised();
    expect(networks['backend']?.internal).toBe(true);
  });

  it('calls the simulator healthy only through the ready file it keeps while connected', async () => {
    const { services } = await normalised();
    const simulator = services.simulator!;
    const file = simulator.environment?.['SIM_READY_FILE'];
    expect(file).toMatch(/^\/tmp\//);
    expect(tmpfsOf(simulator)).toContain('/tmp');
    expect(simulator.healthcheck?.test).toEqual(['CMD', 'test', '-f', file]);
  });

  it('mounts the very nginx, mosquitto, redis and prometheus files the native stack runs with', async () => {
    const { services } = await normalised();
    const nginx = mounts(services.nginx!);
    expect(nginx).toEqual(expect.arrayContaining([
      { source: PROJECT_FILES.nginxConf, target: '/etc/nginx/nginx.conf', readOnly: true },
      { source: PROJECT_FILES.nginxTemplatesDir, target: '/etc/nginx/templates', readOnly: true },
      { source: PROJECT_FILES.webRoot, target: '/usr/share/nginx/html', readOnly: true },
    ]));
    const broker = mounts(services.mosquitto!);
    expect(broker).toContainEqual({ source: PROJECT_FILES.mosquittoDir, target: '/mosquitto/config', readOnly: true });
    expect(broker.find((m) => m.target === '/mosquitto/data')?.source).toMatch(/mosquitto-data$/);
    expect(services.mosquitto?.entrypoint).toEqual(['/bin/sh', '/mosquitto/config/docker-entrypoint.sh']);
    expect(services.mosquitto?.command).toEqual(['/usr/sbin/mosquitto', '-c', '/mosquitto/config/mosquitto.conf']);
    expect(mounts(services.prometheus!)).toEqual(expect.arrayContaining([
      { source: PROJECT_FILES.prometheusConf, target: '/etc/prometheus/prometheus.yml', readOnly: true },
      // prometheus.yml loads rules/*.yml relative to itself.
      { source: join(PROJECT_ROOT, 'prometheus', 'rules'), target: '/etc/prometheus/rules', readOnly: true },
    ]));
    for (const m of [...nginx, ...broker, ...mounts(services.redis!)]) {
      if (m.source.startsWith('/')) expect(resolve(m.source).startsWith(PROJECT_ROOT), m.source).toBe(true);
    }
  });

  it('keeps the broker files where mosquitto.conf expects them: the plugin from the image, its file and the data on the volume', async () => {
    const { services } = await normalised();
    const conf = await readFile(PROJECT_FILES.mosquittoConf, 'utf8');
    expect(conf).toMatch(/^plugin \/usr\/lib\/mosquitto_dynamic_security\.so$/m);
    expect(conf).toMatch(/^plugin_opt_config_file \/mosquitto\/data\/dynamic-security\.json$/m);
    expect(conf).toMatch(/^persistence_location \/mosquitto\/data\/$/m);
    expect(conf).toMatch(/^allow_anonymous false$/m);
    expect(conf).not.toMatch(/^(password_file|acl_file|use_username_as_clientid)\b/m);
    expect(mounts(services.mosquitto!).map((m) => m.target)).toContain('/mosquitto/data');
    const entrypoint = await readFile(PROJECT_FILES.mosquittoEntrypoint, 'utf8');
    expect(entrypoint).toContain('DATA_DIR=${MOSQUITTO_DATA_DIR:-/mosquitto/data}');
    expect(entrypoint).toContain('DYNSEC_FILE="$DATA_DIR/dynamic-security.json"');
    // The native rewrite touches exactly the [native] lines and nothing else.
    const rendered = renderProjectConfig(conf, { port: 1, host: 'h', dataDir: '/d/', pluginPath: '/p.so', dynsecFile: '/d/ds.json', tlsPort: 2, certFile: '/c', keyFile: '/k' });
    const changed = rendered.split('\n').filter((line, i) => line !== conf.split('\n')[i]);
    expect(changed).toEqual(['listener 1 h', 'listener 2 h', 'certfile /c', 'keyfile /k', 'plugin /p.so', 'plugin_opt_config_file /d/ds.json', 'persistence_location /d/']);
  });

  it('hands the simulated devices their passwords through a volume only the devices step writes', async () => {
    const { services, volumes } = await normalised();
    const dir = '/var/lib/mqtt-sse-gateway/credentials';
    expect(services.devices?.command).toEqual(['provision', '--out', `${dir}/simulator.json`]);
    expect(mounts(services.devices!)).toContainEqual({ source: 'simulator-credentials', target: dir, readOnly: false });
    expect(mounts(services.simulator!)).toContainEqual({ source: 'simulator-credentials', target: dir, readOnly: true });
    expect(services.simulator?.environment?.['SIM_CREDENTIALS_FILE']).toBe(`${dir}/simulator.json`);
    // The fleet it provisions is the fleet the simulator runs.
    expect(services.devices?.environment?.['SIM_DEVICES']).toBe(services.simulator?.environment?.['SIM_DEVICES']);
    expect(services.devices?.environment?.['SIM_ID_PREFIX']).toBe(services.simulator?.environment?.['SIM_ID_PREFIX']);
    expect(Object.keys(volumes ?? {})).toContain('simulator-credentials');
    // No device login anywhere: only the admin (devices step) and the service (app, healthcheck).
    expect(JSON.stringify(services)).not.toMatch(/MQTT_DEVICE_/);
    expect(services.simulator?.environment?.['MQTT_PASSWORD']).toBeUndefined();
    // The image's mount point, owned by node and closed to others: a new volume copies both.
    const dockerfile = await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toContain(`chown node:node ${dir} && chmod 0700 ${dir}`);
  });

  it('hands nginx every template variable, and envsubst only those', async () => {
    const { services } = await normalised();
    const env = services.nginx?.environment ?? {};
    const vars = templateVariables(await readFile(PROJECT_FILES.nginxTemplate, 'utf8'));
    expect(vars.sort()).toEqual([
      'APP_UPSTREAM', 'NGINX_ACCESS_LOG', 'NGINX_HTTPS_PORT', 'NGINX_LISTEN', 'NGINX_LISTEN_TLS', 'NGINX_RESOLVER',
      'NGINX_SSE_READ_TIMEOUT', 'NGINX_TLS_CERT', 'NGINX_TLS_KEY', 'SSE_PER_ADDRESS_LIMIT', 'WEB_ROOT',
    ]);
    for (const name of vars) expect(env[name], name).toBeTruthy();
    // The image runs: awk '... name ~ /FILTER/ ...' over its environment.
    const filter = new RegExp(String(env['NGINX_ENVSUBST_FILTER']).replace(/\$\$/g, '$'));
    const allEnvNames = [...Object.keys(env), 'HOSTNAME', 'HOME', 'PATH', 'NGINX_VERSION', 'PKG_RELEASE'];
    expect(allEnvNames.filter((name) => filter.test(name)).sort()).toEqual(vars.sort());
    expect(env['APP_UPSTREAM']).toBe('unix:/var/lib/mqtt-sse-gateway/socket/app.sock:');
    // Docker's embedded DNS, which knows `app` (and every replica of it).
    expect(env['NGINX_RESOLVER']).toBe('127.0.0.11');
    expect(env['WEB_ROOT']).toBe('/usr/share/nginx/html');
    expect(env['NGINX_ACCESS_LOG']).toBe('/dev/stdout');
    expect(JSON.stringify(services.nginx?.ports)).toContain('8080');
    expect([env['NGINX_LISTEN_TLS'], env['NGINX_LISTEN'], env['NGINX_HTTPS_PORT']]).toEqual(['8443', '8080', '8443']);
  });

  it('reaches the app over a Unix socket on a volume only the app writes, open to nginx\'s group; TCP for replicas', async () => {
    const { services, volumes } = await normalised();
    expect(services.app?.environment).toMatchObject({ SOCKET_PATH: '/var/lib/mqtt-sse-gateway/socket/app.sock', SOCKET_GROUP: '101' });
    // Not root: it may give the socket only to a group it is a member of.
    expect((services.app as { group_add?: (string | number)[] }).group_add?.map(String)).toEqual(['101']);
    expect(mounts(services.app!)).toContainEqual({ source: 'app-socket', target: '/var/lib/mqtt-sse-gateway/socket', readOnly: false });
    expect(mounts(services.nginx!)).toContainEqual({ source: 'app-socket', target: '/var/lib/mqtt-sse-gateway/socket', readOnly: true });
    expect(Object.keys(volumes ?? {})).toContain('app-socket');
    // A new volume takes the image's mount point: node's, passable but not listable by others.
    const dockerfile = await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toContain('chown node:node /var/lib/mqtt-sse-gateway/socket && chmod 0711 /var/lib/mqtt-sse-gateway/socket');
    // The scaled setting: no socket (replicas cannot share one path), nginx over TCP by DNS.
    const scaled = await normalised({ APP_SOCKET_PATH: '', APP_UPSTREAM: 'app:3000' });
    expect(scaled.services.app?.environment?.['SOCKET_PATH'] ?? '').toBe('');
    expect(scaled.services.nginx?.environment?.['APP_UPSTREAM']).toBe('app:3000');
  });

  it('keeps the app heartbeat well inside nginx read timeout by default', async () => {
    const { services } = await normalised();
    const heartbeatMs = Number(services.app?.environment?.['SSE_HEARTBEAT_MS']);
    const timeout = String(services.nginx?.environment?.['NGINX_SSE_READ_TIMEOUT']);
    const match = /^(\d+)(ms|s|m|h)$/.exec(timeout);
    expect(match, timeout).not.toBeNull();
    const timeoutMs = Number(match![1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match![2] as 'ms' | 's' | 'm' | 'h'];
    expect(heartbeatMs * 2).toBeLessThan(timeoutMs);
  });

  it('passes one set of credentials from .env to the broker, the app and the devices step', async () => {
    const { services } = await normalised({
      MQTT_SERVICE_PASSWORD: 'svc-from-env',
      MQTT_ADMIN_PASSWORD: 'adm-from-env',
      COMMAND_TOKEN: 'token-from-env-0123456789',
    });
    expect(services.mosquitto?.environment).toMatchObject({
      MQTT_SERVICE_USERNAME: 'service', MQTT_SERVICE_PASSWORD: 'svc-from-env',
      MQTT_ADMIN_USERNAME: 'admin', MQTT_ADMIN_PASSWORD: 'adm-from-env',
    });
    expect(services.app?.environment).toMatchObject({ MQTT_USERNAME: 'service', MQTT_PASSWORD: 'svc-from-env', COMMAND_TOKEN: 'token-from-env-0123456789' });
    expect(services.devices?.environment).toMatchObject({ MQTT_ADMIN_USERNAME: 'admin', MQTT_ADMIN_PASSWORD: 'adm-from-env' });
    // The admin's password goes to the broker and the devices step, nowhere else.
    for (const name of ['app', 'simulator', 'nginx', 'redis']) expect(JSON.stringify(services[name]), name).not.toContain('adm-from-env');
  });

  it('lists every variable the compose file reads in .env.example', async () => {
    const compose = await readFile(PROJECT_FILES.composeFile, 'utf8');
    const used = new Set([...compose.matchAll(/(?<!\$)\$\{([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]!));
    const example = await readFile(join(PROJECT_ROOT, '.env.example'), 'utf8');
    const listed = new Set([...example.matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
    expect([...used].filter((name) => !listed.has(name))).toEqual([]);
    expect([...listed].filter((name) => !used.has(name))).toEqual([]);
    // Git must never see a real .env.
    expect(await readFile(join(PROJECT_ROOT, '.gitignore'), 'utf8')).toMatch(/^\.env$/m);
  });

  it('runs Prometheus only under the monitoring profile, scraping the app on the internal network', async () => {
    const { services } = await normalised();
    expect(services.prometheus?.profiles).toEqual(['monitoring']);
    for (const [name, service] of Object.entries(services)) {
      if (name !== 'prometheus') expect(service.profiles ?? [], name).toEqual([]);
    }
    const config = (await parseYaml(await readFile(PROJECT_FILES.prometheusConf, 'utf8'))) as {
      scrape_configs: { job_name: string; metrics_path?: string; dns_sd_configs?: { names: string[]; port: number }[] }[];
    };
    const job = config.scrape_configs.find((j) => j.job_name === 'gateway');
    expect(job?.metrics_path).toBe('/metrics');
    expect(job?.dns_sd_configs).toEqual([expect.objectContaining({ names: ['app'], type: 'A', port: 3000 })]);
  });
});
