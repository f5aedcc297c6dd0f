// The whole topology of docker-compose.yml without Docker: Debian's mosquitto, redis-server and
// nginx with the project's own config files, the built service (one or more replicas) and the
// simulator as child processes, all on 127.0.0.1. `npm run stack` runs it in the foreground; tests use startStack().
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, relative, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Mosquitto, generateProjectUsers, type ProjectUsers } from './mosquitto.js';
import { Nginx, appAddress, socketDirectory, socketEnv } from './nginx.js';
import { Redis } from './redis.js';
import { freePort, waitForPort } from './ports.js';
import { ManagedProcess, waitReady } from './process.js';
import { PROJECT_FILES, PROJECT_ROOT } from './project.js';
import { Supervisor } from './supervisor.js';
import { DEFAULT_TOPIC_PREFIX } from '../protocol.js';
import { hashPassword, newPassword } from '../access/secrets.js';
import { writeCredentials } from '../broker/credentials.js';
import { newDevicePassword } from '../broker/identities.js';
import { ConfigError } from '../env.js';
import { deviceIds, loadSimConfig } from '../simulator/config.js';
import { DEMO_ACCOUNTS, saveUsers, type Role, type UsersFile } from '../access/users.js';
import { ensureCertificates, type TlsPaths } from '../tls/certs.js';

const SERVICE_ENTRY = join(PROJECT_ROOT, 'dist', 'main.js');
const SIMULATOR_ENTRY = join(PROJECT_ROOT, 'dist', 'simulator', 'main.js');
const DEFAULT_LOG_DIR = join(PROJECT_ROOT, '.stack', 'logs');
const DEFAULT_TLS_DIR = join(PROJECT_ROOT, '.stack', 'tls');

export interface StackOptions {
  /** nginx's HTTPS port (default: STACK_HTTPS_PORT, else a free one). */
  httpsPort?: number;
  /** nginx's plain HTTP port, which redirects to HTTPS (default: STACK_HTTP_PORT, else a free one). */
  httpPort?: number;
  /**
   * Where the local CA and the server certificate live, made at the first start and reused
   * (default: STACK_TLS_DIR, else .stack/tls). A server.crt/server.key the CA did not issue are
   * used as they are.
   */
  tlsDir?: string;
  /** The broker's service and admin logins; default: MQTT_SERVICE_* / MQTT_ADMIN_* from the environment, else generated. */
  users?: ProjectUsers;
  /** Default: COMMAND_TOKEN from the environment, else generated. */
  commandToken?: string;
  /** Extra environment for the service (SSE_HEARTBEAT_MS, ...). */
  serviceEnv?: Record<string, string>;
  /**
   * The shared log on a native redis-server (default: yes, unless STACK_REDIS=0); without it
   * the service runs embedded, one process.
   */
  redis?: boolean;
  /**
   * nginx reaches each replica over a Unix socket of its own (default: yes, unless
   * STACK_SOCKET=0); over TCP loopback otherwise. The TCP port is there either way.
   */
  socket?: boolean;
  /** Replicas of the service behind nginx (default: STACK_REPLICAS, else 1); more than 1 needs redis. */
  replicas?: number;
  /**
   * Sign-in on, with demo users whose passwords are generated for the run (default: yes, unless
   * STACK_AUTH=0); off, every request is let in.
   */
  auth?: boolean;
  /** false: no simulator. Otherwise extra environment for it (SIM_DEVICES, ...). */
  simulator?: false | Record<string, string>;
  /** nginx template variables (SSE_PER_ADDRESS_LIMIT, NGINX_SSE_READ_TIMEOUT). */
  nginxVars?: Record<string, string>;
  /** Where each component's output goes, one file each; default .stack/logs. */
  logDir?: string;
  /** Environment the children inherit; default process.env. */
  baseEnv?: NodeJS.ProcessEnv;
  /** One line per component as it comes up (the CLI prints them). */
  onStatus?: (line: string) => void;
  /** A component exited without being asked to; the stack does not stop by itself. */
  onCrash?: (component: string, detail: string) => void;
}

export interface Stack {
  /** `http`: the site (https://…/, HTTP/2); `redirect`: the plain port, which redirects there. */
  urls: { http: string; redirect: string; events: string; service: string; mqtt: string; mqtts: string };
  ports: { http: number; redirect: number; service: number; mqtt: number; mqtts: number };
  /** The certificate nginx and mosquitto serve, and the CA that clients trust (`caCert`). */
  tls: TlsPaths;
  users: ProjectUsers;
  /** The people who may sign in (auth on), passwords in clear for this run only; empty with auth off. */
  people: readonly DemoUser[];
  commandToken: string;
  /** True when the token was generated for this run (print it once). */
  commandTokenGenerated: boolean;
  logDir: string;
  mosquitto: Mosquitto;
  /** The shared log's server, unless the stack runs embedded. */
  redis: Redis | undefined;
  nginx: Nginx;
  /** Every replica, in order; the first is the one `service()`, `stopService()`... act on. */
  replicas: readonly ServiceControl[];
  service(): ManagedProcess | undefined;
  simulator: ManagedProcess | undefined;
  /** SIGTERM the service and wait for it to exit (its drain included). */
  stopService(): Promise<void>;
  /**
   * Start the service again on the same port; resolves when /readyz says 200. `env` replaces
   * the service's extra environment from here on (e.g. another SSE_HEARTBEAT_MS).
   */
  startService(env?: Record<string, string>): Promise<void>;
  restartService(env?: Record<string, string>): Promise<void>;
  /** Everything, in reverse order of start. Safe to call twice. */
  stop(): Promise<void>;
  /** Last resort, synchronous: SIGKILL every component still running (e.g. on process exit). */
  killNow(): void;
}

const NAME_WIDTH = 10;
function statusLine(name: string, state: string, detail: string): string {
  return `${name.padEnd(NAME_WIDTH)} ${state.padEnd(4)} ${detail}`;
}

function usersFromEnv(env: NodeJS.ProcessEnv): ProjectUsers {
  const generated = generateProjectUsers();
  return {
    service: {
      username: env['MQTT_SERVICE_USERNAME'] || generated.service.username,
      password: env['MQTT_SERVICE_PASSWORD'] || generated.service.password,
    },
    admin: {
      username: env['MQTT_ADMIN_USERNAME'] || generated.admin.username,
      password: env['MQTT_ADMIN_PASSWORD'] || generated.admin.password,
    },
  };
}

function requireBuilt(path: string, what: string): void {
  if (!existsSync(path)) {
    throw new Error(`${what} not built: ${relative(PROJECT_ROOT, path)} is missing; run \`npm run build\` first`);
  }
}

function commandTokenFrom(options: StackOptions, env: NodeJS.ProcessEnv): { commandToken: string; commandTokenGenerated: boolean } {
  const envToken = env['COMMAND_TOKEN'];
  return {
    commandToken: options.commandToken ?? (envToken || randomBytes(24).toString('base64url')),
    commandTokenGenerated: options.commandToken === undefined && !envToken,
  };
}

/** A switch that is on unless the variable says 0; unset or empty is on, anything but 0 or 1 an error. */
function onUnlessZero(env: NodeJS.ProcessEnv, name: string, allowed: string): boolean {
  const value = env[name];
  if (value !== undefined && value !== '' && value !== '0' && value !== '1') {
    throw new Error(`${name}=${JSON.stringify(value)} is invalid: expected ${allowed}`);
  }
  return value !== '0';
}

/** A port as asked for (option, else the variable); undefined: a free one. */
function portFrom(option: number | undefined, env: NodeJS.ProcessEnv, name: string): number | undefined {
  const fromEnv = env[name] ? Number(env[name]) : undefined;
  const port = option ?? fromEnv;
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65_535)) {
    throw new Error(`${name}=${JSON.stringify(env[name])} is invalid: expected a port from 1 to 65535`);
  }
  return port;
}

/** The certificates' directory: option, else STACK_TLS_DIR (an absolute path), else .stack/tls. */
function tlsDirFrom(options: StackOptions, env: NodeJS.ProcessEnv): string {
  if (options.tlsDir) return options.tlsDir;
  const value = env['STACK_TLS_DIR'];
  if (value === undefined || value === '') return DEFAULT_TLS_DIR;
  if (!isAbsolute(value)) throw new Error(`STACK_TLS_DIR=${JSON.stringify(value)} is invalid: expected an absolute path`);
  return value;
}

async function startBroker(sup: Supervisor, users: ProjectUsers, devices: ReadonlyMap<string, string> | undefined, tls: TlsPaths): Promise<Mosquitto> {
  const mosquitto = await Mosquitto.startProject({ users, tls, ...(devices ? { devices } : {}), onLine: sup.logTo('mosquitto'), detached: true });
  sup.onStop(async () => {
    await mosquitto.stop();
    await rm(mosquitto.dir, { recursive: true, force: true });
  });
  sup.status(statusLine('mosquitto', 'up', `${mosquitto.host}:${mosquitto.port} (TLS ${mosquitto.host}:${mosquitto.tlsPort})`));
  const poll = setInterval(() => {
    if (!mosquitto.running) {
      clearInterval(poll);
      sup.crash('mosquitto', `exited; see ${sup.logFile('mosquitto')}`);
    }
  }, 250);
  poll.unref();
  sup.onStop(async () => clearInterval(poll));
  return mosquitto;
}

export interface DemoUser {
  name: string;
  role: Role;
  devices: string[];
  password: string;
}

/** The demo users of a run: an admin, an operator of every device, a viewer of the first few simulated ones. */
async function demoUsers(sup: Supervisor): Promise<{ people: DemoUser[]; env: Record<string, string> }> {
  const people: DemoUser[] = DEMO_ACCOUNTS.map((a) => ({ ...a, devices: [...a.devices], password: newPassword() }));
  const dir = await mkdtemp(join(tmpdir(), 'stack-users-'));
  sup.onStop(() => rm(dir, { recursive: true, force: true }));
  const file: UsersFile = { version: 1, users: {} };
  for (const p of people) file.users[p.name] = { role: p.role, devices: p.devices, password: await hashPassword(p.password), tokens: [] };
  const usersFile = join(dir, 'users.json');
  await saveUsers(usersFile, file);
  return { people, env: { AUTH: 'on', USERS_FILE: usersFile, SESSION_SECRET: randomBytes(32).toString('base64url') } };
}

export interface ServiceControl {
  /** `service`, or `service-<n>` with several replicas: its log file's name too. */
  name: string;
  port: number;
  url: string;
  /** The Unix socket nginx reaches it through, unless the stack runs over TCP. */
  socket: string | undefined;
  current(): ManagedProcess | undefined;
  start(env?: Record<string, string>): Promise<void>;
  /** SIGTERM and wait for the exit (the drain included). */
  stop(): Promise<void>;
  /** SIGKILL: a crash, no drain, no goodbye to the broker or the log. */
  kill(): Promise<void>;
}

async function startRedis(sup: Supervisor): Promise<Redis> {
  const redis = await Redis.start({ onLine: sup.logTo('redis'), detached: true });
  sup.onStop(async () => {
    await redis.stop();
    await rm(redis.dir, { recursive: true, force: true });
  });
  sup.status(statusLine('redis', 'up', `${redis.host}:${redis.port}`));
  return redis;
}

/** One replica of the service on a port of its own that stays the same across restarts. */
async function startService(
  sup: Supervisor,
  name: string,
  env: NodeJS.ProcessEnv,
  extraEnv: Record<string, string> | undefined,
  mosquitto: Mosquitto,
  redis: Redis | undefined,
  users: ProjectUsers,
  commandToken: string,
  socketDir: string | undefined,
): Promise<ServiceControl> {
  const port = await freePort();
  const socket = socketDir === undefined ? undefined : join(socketDir, `${name}.sock`);
  const serviceLog = sup.logTo(name);
  const serviceEnvWith = (extra: Record<string, string> | undefined): NodeJS.ProcessEnv => ({
    ...env,
    ...extra,
    PORT: String(port),
    HOST: '127.0.0.1',
    MQTT_URL: mosquitto.url,
    MQTT_USERNAME: users.service.username,
    MQTT_PASSWORD: users.service.password,
    // Each replica its own session (for the acks of its commands); the ingest session is shared.
    MQTT_CLIENT_ID: `mqtt-sse-gateway-stack-${name}`,
    // Fixed: the broker's roles are written for this prefix, as in compose.
    MQTT_TOPIC_PREFIX: DEFAULT_TOPIC_PREFIX,
    COMMAND_TOKEN: commandToken,
    ...(redis ? { REDIS_URL: redis.url } : {}),
    ...(socket ? socketEnv(socket) : {}),
  });
  let serviceEnv = serviceEnvWith(extraEnv);
  let service: ManagedProcess | undefined;
  const start = async (extra?: Record<string, string>) => {
    if (extra) serviceEnv = serviceEnvWith(extra);
    sup.intentional.delete(name);
    const proc = new ManagedProcess(name, process.execPath, [SERVICE_ENTRY], {
      env: serviceEnv,
      cwd: PROJECT_ROOT,
      detached: true,
      onLine: serviceLog,
    });
    service = proc;
    sup.watch(name, proc);
    await waitReady(proc, `http://127.0.0.1:${port}/readyz`, 20_000);
  };
  const stop = async () => {
    sup.intentional.add(name);
    const drainMs = Number(serviceEnv['SHUTDOWN_DRAIN_MS'] || 10_000);
    await service?.stop('SIGTERM', (Number.isFinite(drainMs) ? drainMs : 10_000) + 10_000);
  };
  const kill = async () => {
    sup.intentional.add(name);
    await service?.stop('SIGKILL');
  };
  sup.onStop(stop);
  await start();
  sup.status(statusLine(name, 'up', `127.0.0.1:${port}${socket ? ` and ${socket}` : ''}${redis ? ' (shared log)' : ''}`));
  return { name, port, url: `http://127.0.0.1:${port}`, socket, current: () => service, start, stop, kill };
}

async function startSimulator(
  sup: Supervisor,
  env: NodeJS.ProcessEnv,
  extraEnv: Record<string, string>,
  mosquitto: Mosquitto,
  passwords: ReadonlyMap<string, string>,
): Promise<ManagedProcess> {
  const simEnv: NodeJS.ProcessEnv = {
    ...env,
    ...extraEnv,
    MQTT_URL: mosquitto.url,
    MQTT_TOPIC_PREFIX: DEFAULT_TOPIC_PREFIX,
    SIM_CREDENTIALS_FILE: await credentialsFile(sup, passwords),
  };
  const proc = new ManagedProcess('simulator', process.execPath, [SIMULATOR_ENTRY], {
    env: simEnv,
    cwd: PROJECT_ROOT,
    detached: true,
    onLine: sup.logTo('simulator'),
  });
  sup.onStop(async () => {
    sup.intentional.add('simulator');
    await proc.stop('SIGTERM', 15_000);
  });
  // It has no port: give it a moment to fail on bad config before calling it up.
  await sleep(300);
  const early = proc.exitedEarly();
  if (early) throw early;
  sup.watch('simulator', proc);
  sup.status(statusLine('simulator', 'up', `${simEnv['SIM_DEVICES'] ?? '20'} devices`));
  return proc;
}

/**
 * Every simulated device its own broker login, generated for this run. They go into the broker's
 * first identities file (through the control topic a fleet of thousands would take minutes on
 * mosquitto 2.0), and to the simulator in an owner-only file deleted when the stack stops.
 */
function fleetPasswords(env: NodeJS.ProcessEnv, extraEnv: Record<string, string>): Map<string, string> {
  let fleet;
  try {
    fleet = loadSimConfig({ ...env, ...extraEnv, SIM_CREDENTIALS_FILE: undefined });
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`simulator: ${err.problems.join('; ')}`);
    throw err;
  }
  return new Map(deviceIds(fleet.idPrefix, fleet.devices).map((id) => [id, newDevicePassword()]));
}

async function credentialsFile(sup: Supervisor, passwords: ReadonlyMap<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stack-devices-'));
  sup.onStop(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'credentials.json');
  await writeCredentials(file, passwords);
  return file;
}

async function startProxy(
  sup: Supervisor,
  upstreams: readonly string[],
  ports: { https: number | undefined; http: number | undefined },
  tls: TlsPaths,
  nginxVars: Record<string, string> | undefined,
): Promise<Nginx> {
  const nginx = await Nginx.start({
    appUpstream: upstreams[0]!,
    ...(upstreams.length > 1 ? { appServers: upstreams } : {}),
    webRoot: PROJECT_FILES.webRoot,
    ...(ports.https !== undefined ? { port: ports.https } : {}),
    ...(ports.http !== undefined ? { httpPort: ports.http } : {}),
    tls,
    ...(nginxVars ? { vars: nginxVars } : {}),
    accessLog: join(sup.logDir, 'nginx-access.log'),
    onLine: sup.logTo('nginx-error'),
    detached: true,
  });
  sup.onStop(async () => {
    await nginx.stop();
    await rm(nginx.dir, { recursive: true, force: true });
  });
  void nginx.exited.then(() => sup.crash('nginx', `exited; see ${sup.logFile('nginx-error')}`));
  await waitForPort(nginx.port, nginx.host);
  sup.status(statusLine('nginx', 'up', `${nginx.host}:${nginx.port} (HTTPS, HTTP/2; ${nginx.host}:${nginx.httpPort} redirects to it)`));
  return nginx;
}

/** SIGKILLs each running process's group: a detached component leads its own, nginx's workers included. */
function killGroups(processes: readonly { running: boolean | undefined; pid: number | undefined }[]): void {
  for (const { running, pid } of processes) {
    if (!running || pid === undefined) continue;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Starts mosquitto, the service, the simulator and nginx; on any failure stops what started. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const env = options.baseEnv ?? process.env;
  requireBuilt(SERVICE_ENTRY, 'the service');
  if (options.simulator !== false) requireBuilt(SIMULATOR_ENTRY, 'the simulator');
  const httpsPort = portFrom(options.httpsPort, env, 'STACK_HTTPS_PORT');
  const httpPort = portFrom(options.httpPort, env, 'STACK_HTTP_PORT');
  const tlsDir = tlsDirFrom(options, env);
  const users = options.users ?? usersFromEnv(env);
  const { commandToken, commandTokenGenerated } = commandTokenFrom(options, env);
  const logDir = options.logDir ?? DEFAULT_LOG_DIR;
  const withRedis = options.redis ?? onUnlessZero(env, 'STACK_REDIS', '1 (the shared log, the default) or 0 (embedded)');
  const withAuth = options.auth ?? onUnlessZero(env, 'STACK_AUTH', '1 (sign-in on, the default) or 0 (off)');
  const withSocket = options.socket ?? onUnlessZero(env, 'STACK_SOCKET', '1 (nginx to the service over a Unix socket, the default) or 0 (TCP)');
  const replicaCount = options.replicas ?? (env['STACK_REPLICAS'] ? Number(env['STACK_REPLICAS']) : 1);
  if (!Number.isInteger(replicaCount) || replicaCount < 1 || replicaCount > 16) {
    throw new Error(`STACK_REPLICAS=${JSON.stringify(env['STACK_REPLICAS'])} is invalid: expected 1 to 16`);
  }
  if (replicaCount > 1 && !withRedis) throw new Error('several replicas share the log in Redis: STACK_REPLICAS > 1 cannot run with STACK_REDIS=0');
  await mkdir(logDir, { recursive: true });
  const sup = new Supervisor(logDir, options.onStatus ?? (() => undefined), options.onCrash);

  try {
    const fleet = options.simulator === false ? undefined : fleetPasswords(env, options.simulator ?? {});
    const tls = await ensureCertificates({ dir: tlsDir });
    const mosquitto = await startBroker(sup, users, fleet, tls);
    const redis = withRedis ? await startRedis(sup) : undefined;
    const access = withAuth ? await demoUsers(sup) : { people: [], env: { AUTH: 'off' } };
    const socketDir = withSocket ? await socketDirectory('stack-sock-') : undefined;
    if (socketDir) sup.onStop(() => rm(socketDir, { recursive: true, force: true }));
    const replicas: ServiceControl[] = [];
    for (let i = 0; i < replicaCount; i += 1) {
      const name = replicaCount === 1 ? 'service' : `service-${i + 1}`;
      // Signed-in operators command; the shared token is for a service without users only.
      replicas.push(await startService(sup, name, { ...env, ...access.env }, options.serviceEnv, mosquitto, redis, users, withAuth ? '' : commandToken, socketDir));
    }
    const service = replicas[0]!;
    const simulator = fleet === undefined ? undefined : await startSimulator(sup, env, options.simulator || {}, mosquitto, fleet);
    const nginx = await startProxy(sup, replicas.map(appAddress), { https: httpsPort, http: httpPort }, tls, options.nginxVars);
    return {
      urls: {
        http: `${nginx.url}/`,
        redirect: `${nginx.httpUrl}/`,
        events: `${nginx.url}/events`,
        service: `http://127.0.0.1:${service.port}`,
        mqtt: mosquitto.url,
        mqtts: mosquitto.tlsUrl!,
      },
      ports: { http: nginx.port, redirect: nginx.httpPort, service: service.port, mqtt: mosquitto.port, mqtts: mosquitto.tlsPort! },
      tls,
      users,
      people: access.people,
      commandToken,
      commandTokenGenerated,
      logDir,
      mosquitto,
      redis,
      nginx,
      replicas,
      service: service.current,
      simulator,
      stopService: service.stop,
      startService: service.start,
      async restartService(extra?: Record<string, string>) {
        await service.stop();
        await service.start(extra);
      },
      stop: () => sup.stopAll(),
      killNow() {
        killGroups([
          { running: nginx.running, pid: nginx.pid },
          { running: simulator?.running, pid: simulator?.pid },
          ...replicas.map((r) => ({ running: r.current()?.running, pid: r.current()?.pid })),
          { running: redis?.running, pid: redis?.pid },
          { running: mosquitto.running, pid: mosquitto.pid },
        ]);
      },
    };
  } catch (err) {
    await sup.stopAll();
    throw err;
  }
}

// --- npm run stack ----------------------------------------------------------------------

async function main(): Promise<void> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  let exiting = false;
  let stack: Stack | undefined;
  const starting = startStack({
    onStatus: out,
    onCrash: (component, detail) => {
      out(statusLine(component, 'DOWN', detail));
      out('stopping everything');
      void shutdown(1);
    },
  });
  const shutdown = async (code: number) => {
    if (exiting) return;
    exiting = true;
    out('stopping…');
    // Still starting: wait for it (a failed start has already cleaned up after itself).
    const running = stack ?? (await starting.catch(() => undefined));
    await running?.stop();
    out('stopped');
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  // Whatever happens to this process, no component outlives it.
  process.on('exit', () => stack?.killNow());

  try {
    stack = await starting;
  } catch (err) {
    process.stderr.write(`stack: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  if (exiting) return;
  if (stack.people.length > 0) {
    out(`sign in as (passwords for this run, shown once; STACK_AUTH=0 turns sign-in off): ${stack.people.map((p) => `${p.name} ${p.password}`).join('   ')}`);
  } else if (stack.commandTokenGenerated) {
    out(`COMMAND_TOKEN for this run (set COMMAND_TOKEN to choose one): ${stack.commandToken}`);
  }
  const here = (path: string) => relative(process.cwd(), path) || '.';
  out(`TLS: the local CA is ${here(stack.tls.caCert)} (trust it, or expect the browser's warning: see the README's "HTTPS and certificates")`);
  out(`open ${stack.urls.http}   logs: ${here(stack.logDir)}/   Ctrl-C stops everything`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
