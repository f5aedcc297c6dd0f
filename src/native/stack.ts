// The whole topology of docker-compose.yml without Docker: Debian's mosquitto and nginx with the
// project's own config files, the built service and simulator as child processes, all on
// 127.0.0.1. `npm run stack` runs it in the foreground; tests use startStack().
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { relative, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Mosquitto, generateProjectUsers, type ProjectUsers } from './mosquitto.js';
import { Nginx } from './nginx.js';
import { freePort, waitForPort } from './ports.js';
import { ManagedProcess, waitReady } from './process.js';
import { PROJECT_FILES, PROJECT_ROOT } from './project.js';

export const SERVICE_ENTRY = join(PROJECT_ROOT, 'dist', 'main.js');
export const SIMULATOR_ENTRY = join(PROJECT_ROOT, 'dist', 'simulator', 'main.js');
export const DEFAULT_LOG_DIR = join(PROJECT_ROOT, '.stack', 'logs');

export interface StackOptions {
  /** nginx's port (default: STACK_HTTP_PORT, else a free one). */
  httpPort?: number;
  /** Broker users; default: MQTT_SERVICE_* / MQTT_DEVICE_* from the environment, else generated. */
  users?: ProjectUsers;
  /** Default: COMMAND_TOKEN from the environment, else generated. */
  commandToken?: string;
  /** Extra environment for the service (SSE_HEARTBEAT_MS, ...). */
  serviceEnv?: Record<string, string>;
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
  urls: { http: string; events: string; service: string; mqtt: string };
  ports: { http: number; service: number; mqtt: number };
  users: ProjectUsers;
  commandToken: string;
  /** True when the token was generated for this run (print it once). */
  commandTokenGenerated: boolean;
  logDir: string;
  mosquitto: Mosquitto;
  nginx: Nginx;
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
export function statusLine(name: string, state: string, detail: string): string {
  return `${name.padEnd(NAME_WIDTH)} ${state.padEnd(4)} ${detail}`;
}

function usersFromEnv(env: NodeJS.ProcessEnv): ProjectUsers {
  const generated = generateProjectUsers();
  return {
    service: {
      username: env['MQTT_SERVICE_USERNAME'] || generated.service.username,
      password: env['MQTT_SERVICE_PASSWORD'] || generated.service.password,
    },
    device: {
      username: env['MQTT_DEVICE_USERNAME'] || generated.device.username,
      password: env['MQTT_DEVICE_PASSWORD'] || generated.device.password,
    },
  };
}

function requireBuilt(path: string, what: string): void {
  if (!existsSync(path)) {
    throw new Error(`${what} not built: ${relative(PROJECT_ROOT, path)} is missing; run \`npm run build\` first`);
  }
}

/** Starts mosquitto, the service, the simulator and nginx; on any failure stops what started. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const env = options.baseEnv ?? process.env;
  requireBuilt(SERVICE_ENTRY, 'the service');
  const logDir = options.logDir ?? DEFAULT_LOG_DIR;
  await mkdir(logDir, { recursive: true });
  const logs: WriteStream[] = [];
  const logTo = (name: string) => {
    const stream = createWriteStream(join(logDir, `${name}.log`), { flags: 'w' });
    logs.push(stream);
    return (line: string) => stream.write(`${line}\n`);
  };
  const status = options.onStatus ?? (() => undefined);
  const users = options.users ?? usersFromEnv(env);
  const envToken = env['COMMAND_TOKEN'];
  const commandToken = options.commandToken ?? (envToken || randomBytes(24).toString('base64url'));
  const commandTokenGenerated = options.commandToken === undefined && !envToken;

  let stopping = false;
  const intentional = new Set<string>();
  const crash = (name: string, detail: string) => {
    if (!stopping && !intentional.has(name)) options.onCrash?.(name, detail);
  };
  const watch = (name: string, proc: ManagedProcess, logFile: string) => {
    void proc.exited.then((exit) => {
      crash(name, `exited (code ${exit.code}, signal ${exit.signal}); see ${logFile}`);
    });
  };

  const cleanups: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    stopping = true;
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup().catch(() => undefined);
    }
    await Promise.all(logs.map((s) => new Promise((resolve) => s.end(resolve))));
  };

  try {
    // --- mosquitto ---------------------------------------------------------------------
    const mosquitto = await Mosquitto.startProject({ users, onLine: logTo('mosquitto'), detached: true });
    cleanups.push(async () => {
      await mosquitto.stop();
      await rm(mosquitto.dir, { recursive: true, force: true });
    });
    status(statusLine('mosquitto', 'up', `${mosquitto.host}:${mosquitto.port}`));
    const pollMosquitto = setInterval(() => {
      if (!mosquitto.running) {
        clearInterval(pollMosquitto);
        crash('mosquitto', `exited; see ${join(logDir, 'mosquitto.log')}`);
      }
    }, 250);
    pollMosquitto.unref();
    cleanups.push(async () => clearInterval(pollMosquitto));

    // --- the service ---------------------------------------------------------------------
    const servicePort = await freePort();
    const serviceLog = logTo('service');
    const serviceEnvWith = (extra: Record<string, string> | undefined): NodeJS.ProcessEnv => ({
      ...env,
      ...extra,
      PORT: String(servicePort),
      HOST: '127.0.0.1',
      MQTT_URL: mosquitto.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      // Fixed: mosquitto/acl is written for this prefix, as in compose.
      MQTT_TOPIC_PREFIX: 'devices',
      COMMAND_TOKEN: commandToken,
    });
    let serviceEnv = serviceEnvWith(options.serviceEnv);
    let service: ManagedProcess | undefined;
    const startService = async (extra?: Record<string, string>) => {
      if (extra) serviceEnv = serviceEnvWith(extra);
      intentional.delete('service');
      const proc = new ManagedProcess('service', process.execPath, [SERVICE_ENTRY], {
        env: serviceEnv,
        cwd: PROJECT_ROOT,
        detached: true,
        onLine: serviceLog,
      });
      service = proc;
      watch('service', proc, join(logDir, 'service.log'));
      await waitReady(proc, `http://127.0.0.1:${servicePort}/readyz`, 20_000);
    };
    const stopService = async () => {
      intentional.add('service');
      const drainMs = Number(serviceEnv['SHUTDOWN_DRAIN_MS'] || 10_000);
      await service?.stop('SIGTERM', (Number.isFinite(drainMs) ? drainMs : 10_000) + 10_000);
    };
    cleanups.push(stopService);
    await startService();
    status(statusLine('service', 'up', `127.0.0.1:${servicePort}`));

    // --- the simulator -----------------------------------------------------------------
    let simulator: ManagedProcess | undefined;
    if (options.simulator !== false) {
      if (!existsSync(SIMULATOR_ENTRY)) {
        status(statusLine('simulator', 'off', `${relative(PROJECT_ROOT, SIMULATOR_ENTRY)} not built (npm run build once src/simulator/ exists)`));
      } else {
        const simEnv: NodeJS.ProcessEnv = {
          ...env,
          ...(options.simulator ?? {}),
          MQTT_URL: mosquitto.url,
          MQTT_USERNAME: users.device.username,
          MQTT_PASSWORD: users.device.password,
          MQTT_TOPIC_PREFIX: 'devices',
        };
        const proc = new ManagedProcess('simulator', process.execPath, [SIMULATOR_ENTRY], {
          env: simEnv,
          cwd: PROJECT_ROOT,
          detached: true,
          onLine: logTo('simulator'),
        });
        simulator = proc;
        cleanups.push(async () => {
          intentional.add('simulator');
          await proc.stop('SIGTERM', 15_000);
        });
        // It has no port: give it a moment to fail on bad config before calling it up.
        await sleep(300);
        const early = proc.exitedEarly();
        if (early) throw early;
        watch('simulator', proc, join(logDir, 'simulator.log'));
        status(statusLine('simulator', 'up', `${simEnv['SIM_DEVICES'] ?? '20'} devices`));
      }
    }

    // --- nginx -------------------------------------------------------------------------
    const envHttpPort = env['STACK_HTTP_PORT'] ? Number(env['STACK_HTTP_PORT']) : undefined;
    const httpPort = options.httpPort ?? envHttpPort;
    if (httpPort !== undefined && (!Number.isInteger(httpPort) || httpPort < 1 || httpPort > 65_535)) {
      throw new Error(`STACK_HTTP_PORT=${JSON.stringify(env['STACK_HTTP_PORT'])} is invalid: expected a port from 1 to 65535`);
    }
    const nginx = await Nginx.start({
      appUpstream: `127.0.0.1:${servicePort}`,
      webRoot: PROJECT_FILES.webRoot,
      ...(httpPort !== undefined ? { port: httpPort } : {}),
      ...(options.nginxVars ? { vars: options.nginxVars } : {}),
      accessLog: join(logDir, 'nginx-access.log'),
      onLine: logTo('nginx-error'),
      detached: true,
    });
    cleanups.push(async () => {
      await nginx.stop();
      await rm(nginx.dir, { recursive: true, force: true });
    });
    void nginx.exited.then(() => crash('nginx', `exited; see ${join(logDir, 'nginx-error.log')}`));
    await waitForPort(nginx.port, nginx.host);
    status(statusLine('nginx', 'up', `${nginx.host}:${nginx.port}`));

    return {
      urls: {
        http: `${nginx.url}/`,
        events: `${nginx.url}/events`,
        service: `http://127.0.0.1:${servicePort}`,
        mqtt: mosquitto.url,
      },
      ports: { http: nginx.port, service: servicePort, mqtt: mosquitto.port },
      users,
      commandToken,
      commandTokenGenerated,
      logDir,
      mosquitto,
      nginx,
      service: () => service,
      simulator,
      stopService,
      startService,
      async restartService(extra?: Record<string, string>) {
        await stopService();
        await startService(extra);
      },
      stop: stopAll,
      killNow() {
        // Each component leads its own process group (detached): this takes nginx's workers too.
        for (const [running, pid] of [
          [nginx.running, nginx.pid],
          [simulator?.running, simulator?.pid],
          [service?.running, service?.pid],
          [mosquitto.running, mosquitto.pid],
        ] as const) {
          if (!running || pid === undefined) continue;
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      },
    };
  } catch (err) {
    await stopAll();
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
  if (stack.commandTokenGenerated) {
    out(`COMMAND_TOKEN for this run (set COMMAND_TOKEN to choose one): ${stack.commandToken}`);
  }
  out(`open ${stack.urls.http}   logs: ${relative(process.cwd(), stack.logDir) || '.'}/   Ctrl-C stops everything`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
