// A private Docker engine for running docker-compose.yml for real: Debian's dockerd with its own
// data root, exec root, socket and pid file (so it touches no system daemon), the stand-in images
// (scripts/compose-images.sh), and the app image built with the host's network (its `npm ci` needs
// the registry; the containers themselves get no way off this machine).
import { execFile } from 'node:child_process';
import { access, constants, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ManagedProcess } from './process.js';
import { PROJECT_FILES, PROJECT_ROOT } from './project.js';

const run = promisify(execFile);

// Debian's client (20.10, the engine's own version), not whatever `docker` is first on PATH.
export const DOCKER_CLI = '/usr/bin/docker';
export const DOCKERD = '/usr/sbin/dockerd';
export const COMPOSE_PLUGIN = '/usr/libexec/docker/cli-plugins/docker-compose';
export const ENGINE_INSTALL_HINT =
  'the Docker engine or the compose plugin is missing: run `bash scripts/install-deps.sh` as root '
  + '(Debian\'s docker.io, debootstrap, iptables, and docker-compose 2.26 from Debian 13)';

/** Where images and volumes persist between runs, so a warm machine skips the image builds. */
export const DEFAULT_DATA_ROOT = '/var/lib/mqtt-sse-gateway/docker';

export interface Engine {
  /** The DOCKER_HOST value for this engine. */
  readonly host: string;
  /** An environment for docker/compose commands against this engine (nothing else inherited). */
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
  /** The interfaces whose outgoing container traffic is dropped. */
  readonly blockedInterfaces: readonly string[];
  /** The engine's own open-files hard limit: no container can be given more. */
  readonly nofileLimit: number;
  stop(): Promise<void>;
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(() => true, () => false);
}

export async function assertEngineInstalled(): Promise<void> {
  for (const path of [DOCKER_CLI, DOCKERD, COMPOSE_PLUGIN, '/usr/sbin/debootstrap']) {
    if (!(await executable(path))) throw new Error(`${path} not found: ${ENGINE_INSTALL_HINT}`);
  }
}

function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: '/_ping', timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once('error', () => resolve(false));
    req.once('timeout', () => req.destroy());
    req.end();
  });
}

/** The interfaces default routes leave through: what "off this machine" means here. */
async function outsideInterfaces(): Promise<string[]> {
  const names = new Set<string>();
  for (const family of ['-4', '-6']) {
    const { stdout } = await run('ip', [family, 'route', 'show', 'default']).catch(() => ({ stdout: '' }));
    for (const match of stdout.matchAll(/\bdev (\S+)/g)) names.add(match[1]!);
  }
  return [...names];
}

async function iptables(args: string[]): Promise<boolean> {
  return run('iptables', ['-w', '5', ...args]).then(() => true, () => false);
}

async function openFilesLimit(pid: number): Promise<number> {
  const limits = await readFile(`/proc/${pid}/limits`, 'utf8');
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  return hard === undefined || hard === 'unlimited' ? 1_048_576 : Number(hard);
}

/**
 * A dockerd an interrupted earlier run left on this data root (its pid file names it, and its
 * command line names the data root) is stopped first: two daemons cannot share one.
 */
async function stopLeftover(pidFile: string, dataRoot: string): Promise<void> {
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  if (!cmdline[0]?.endsWith('dockerd') || !cmdline.includes(dataRoot)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(100);
  }
  process.kill(pid, 'SIGKILL');
}

/**
 * Starts dockerd on a socket of its own and, before anything else can run, adds the DOCKER-USER
 * rule that drops container traffic leaving through the outside interfaces. One engine per data
 * root: dockerd itself refuses a second one on the same pid file.
 */
export async function startEngine(options: { dataRoot?: string; timeoutMs?: number } = {}): Promise<Engine> {
  await assertEngineInstalled();
  const dataRoot = options.dataRoot ?? DEFAULT_DATA_ROOT;
  await mkdir(dataRoot, { recursive: true });
  // Short: containerd's sockets live under the exec root, and a unix socket path has 108 bytes.
  const runDir = await mkdtemp('/run/msg-docker-');
  const socket = join(runDir, 'docker.sock');
  const pidFile = `${dataRoot}.pid`;
  await stopLeftover(pidFile, dataRoot);
  const dockerd = new ManagedProcess('dockerd', DOCKERD, [
    '--data-root', dataRoot,
    '--exec-root', join(runDir, 'exec'),
    '-H', `unix://${socket}`,
    '--pidfile', pidFile,
    '--log-level', 'warn',
  ], { keepLines: 100 });
  const blocked = await outsideInterfaces();
  const stopDaemon = async () => {
    for (const name of blocked) {
      while (await iptables(['-D', 'DOCKER-USER', '-o', name, '-j', 'DROP'])) { /* every copy */ }
    }
    await dockerd.stop('SIGTERM', 20_000);
    // dockerd leaves its default network namespace mounted under the exec root.
    const mounts = await readFile('/proc/mounts', 'utf8');
    for (const line of mounts.split('\n')) {
      const target = line.split(' ')[1];
      if (target?.startsWith(`${runDir}/`)) await run('umount', ['-l', target]).catch(() => undefined);
    }
    await rm(runDir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    while (!(await ping(socket))) {
      const early = dockerd.exitedEarly();
      if (early) throw early;
      if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${socket}:\n${dockerd.output()}`);
      await sleep(100);
    }
    for (const name of blocked) {
      if (!(await iptables(['-C', 'DOCKER-USER', '-o', name, '-j', 'DROP']))
        && !(await iptables(['-I', 'DOCKER-USER', '-o', name, '-j', 'DROP']))) {
        throw new Error(`could not add the DOCKER-USER rule dropping container traffic out of ${name}`);
      }
    }
    const nofileLimit = await openFilesLimit(dockerd.pid!);
    const host = `unix://${socket}`;
    return {
      host,
      blockedInterfaces: blocked,
      nofileLimit,
      env: (extra = {}) => ({ PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', DOCKER_HOST: host, ...extra }),
      stop: stopDaemon,
    };
  } catch (err) {
    await stopDaemon();
    throw err;
  }
}

/** Builds the stand-in images the compose file and Dockerfile name (skipped when current). */
export async function buildStandins(engine: Engine): Promise<void> {
  await run('bash', [join(PROJECT_ROOT, 'scripts', 'compose-images.sh')], {
    env: engine.env(), maxBuffer: 16 * 1024 * 1024, timeout: 15 * 60_000,
  }).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`building the stand-in images failed:\n${err.stderr ?? err.message}`);
  });
}

/**
 * Builds the compose file's own images with the host's network, through compose itself so that a
 * later `docker compose up --build` (whose builds get no network) is answered from this cache. The
 * classic builder: its cache does not depend on the network mode, and it needs no buildx.
 */
export async function buildAppImage(engine: Engine, project: string): Promise<void> {
  const dir = await mkdtemp(join('/tmp', 'compose-build-'));
  try {
    const override = join(dir, 'host-network.yml');
    await writeFile(override, JSON.stringify({
      services: Object.fromEntries(['app', 'simulator'].map((s) => [s, { build: { context: PROJECT_ROOT, network: 'host' } }])),
    }));
    await run(DOCKER_CLI, ['compose', '-p', project, '-f', PROJECT_FILES.composeFile, '-f', override, 'build', 'app'], {
      env: engine.env({ DOCKER_BUILDKIT: '0' }), cwd: PROJECT_ROOT, maxBuffer: 16 * 1024 * 1024, timeout: 10 * 60_000,
    }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`building the app image failed:\n${(err.stdout ?? '').slice(-4000)}\n${err.stderr ?? err.message}`);
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
