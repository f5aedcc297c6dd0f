// One system under test on 127.0.0.1: the project's Mosquitto (its own config and ACL), the app
// (the built service, embedded or on the shared log, or the textbook baseline), and the
// project's nginx in front of it, with the same template and defaults for every app. The `redis`
// target adds a native redis-server with the project's redis/redis.conf, and may run several
// replicas of the service behind nginx's upstream group, as `npm run stack` does. The `nchan`
// target is the reference for fan-out inside the proxy: Debian's nginx with the nchan module,
// fed by a small bridge (nchan-bridge.ts) that POSTs each MQTT message to nchan's publisher.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BENCH_OUT,
  ManagedProcess,
  waitReady,
  waitForPort,
  ensureCertificates,
  Mosquitto,
  Nginx,
  ROOT,
  Redis,
  SERVICE_ENTRY,
  baseAppEnv,
  freePort,
  generateProjectUsers,
  appAddress,
  socketDirectory,
  socketEnv,
  type ProjectUsers,
} from './harness.js';
import { DEFAULT_TOPIC_PREFIX } from '../src/protocol.js';
import { childrenOf, openFilesLimit, rssBytes, type PidGroups } from './proc.js';
import { isShared, type TargetName } from './scenarios.js';

/** How long the shared log may take to have an ingest session that every replica tails. */
const INGEST_TIMEOUT_MS = 20_000;

/** One app process: the only one, or one replica of the service. */
export interface AppProcess {
  name: string;
  port: number;
  pid: number;
  /** The Unix socket nginx reaches it through (project and redis); TCP otherwise. */
  socket?: string;
}

export interface Target {
  name: TargetName;
  users: ProjectUsers;
  broker: Mosquitto;
  /** The shared log's server (the redis and redis-tcp targets only). */
  redis: Redis | undefined;
  /** Every app process, in order; nginx spreads the streams over them. */
  apps: AppProcess[];
  /** The first app's port (the only one, but for the replicas scenario). */
  appPort: number;
  /** What the clients connect to: the project's nginx, or nchan's. */
  nginx: Proxy;
  /** CPU is reported per group: nginx is its master plus its workers, app every replica. */
  pids: PidGroups;
  /** Lowest open-files limit among nginx's workers. */
  nginxWorkerNofile(): number;
  /**
   * Stops nginx (SIGTERM: its fast shutdown cuts every stream at once) and starts it again on
   * the same ports with the same certificate; `nginx` and `pids.nginx` are the new one's after.
   * Resolves when it listens. The project's nginx only (not nchan's).
   */
  restartProxy(): Promise<void>;
  stop(): Promise<void>;
}

/** The proxy in front: where clients connect, and its master process. */
export interface Proxy {
  port: number;
  pid: number | undefined;
  /** Its certificate's CA: every target is reached over TLS, as browsers reach the project. */
  tls: { caCert: string };
}

/** nchan's module as Debian's libnginx-mod-nchan installs it. */
const NCHAN_MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so';

/**
 * nginx with nchan for one run: the same worker settings as the project's nginx.conf, streams at
 * /events over TLS (EventSource, every message as a `telemetry` event), the publisher on its own port.
 * Messages are kept 10 s, a few per channel: enough for a subscriber's reconnect, as the service's replay.
 */
function nchanConfig(dir: string, port: number, publishPort: number, cert: string, key: string): string {
  return `load_module ${NCHAN_MODULE};
worker_processes auto;
worker_rlimit_nofile 65536;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events {
    worker_connections 32768;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    nchan_max_reserved_memory 256M;
    server {
        listen 127.0.0.1:${port} ssl backlog=4096;
        ssl_certificate ${cert};
        ssl_certificate_key ${key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tls_sessions:10m;
        location = /events {
            nchan_subscriber eventsource;
            nchan_channel_id devices;
            nchan_eventsource_event telemetry;
            nchan_subscriber_first_message newest;
        }
    }
    server {
        listen 127.0.0.1:${publishPort};
        location = /pub {
            nchan_publisher;
            nchan_channel_id devices;
            nchan_message_buffer_length 64;
            nchan_message_timeout 10s;
        }
    }
}
`;
}

async function startNchan(): Promise<Proxy & { publishUrl: string; stop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-nchan-'));
  const port = await freePort();
  const publishPort = await freePort();
  const conf = join(dir, 'nginx.conf');
  // Over TLS like the project's nginx, with the same kind of certificate (a local CA's).
  const tls = await ensureCertificates({ dir: join(dir, 'tls') });
  await writeFile(conf, nchanConfig(dir, port, publishPort, tls.cert, tls.key));
  const proc = new ManagedProcess('nchan', '/usr/sbin/nginx', ['-p', dir, '-c', conf, '-g', 'daemon off;'], { cwd: dir, detached: true });
  try {
    await waitForPort(port, '127.0.0.1');
    await waitForPort(publishPort, '127.0.0.1');
  } catch (err) {
    await proc.stop('SIGKILL');
    throw new Error(`nginx with nchan did not start (is libnginx-mod-nchan installed? scripts/install-deps.sh installs it): ${(err as Error).message}\n${proc.output()}`);
  }
  return {
    port,
    pid: proc.pid,
    tls,
    publishUrl: `http://127.0.0.1:${publishPort}/pub`,
    stop: async () => {
      // SIGTERM: nginx's fast shutdown, which does not wait for open streams.
      await proc.stop('SIGTERM', 10_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The RSS of each app process, in the order of `target.apps`. */
export const appRssEach = (target: Target): number[] => target.apps.map((a) => rssBytes(a.pid));
export const appRss = (target: Target): number => appRssEach(target).reduce((n, b) => n + b, 0);

/** SSE_* variables of the bench's own environment, passed on to the project's service. */
export function serviceOverrides(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => (e[0].startsWith('SSE_') || e[0].startsWith('LOG_')) && e[1] !== undefined));
}

export async function startTarget(name: TargetName, appEnv: Record<string, string>, replicas = 1): Promise<Target> {
  if (replicas > 1 && !isShared(name)) throw new Error(`${name}: several replicas need the shared log (the redis and redis-tcp targets)`);
  const cleanups: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  };
  try {
    const users = generateProjectUsers();
    const broker = await Mosquitto.startProject({ users });
    cleanups.push(async () => {
      await broker.stop();
      await rm(broker.dir, { recursive: true, force: true });
    });

    // Its own process group: a Ctrl-C stops it after the replicas (stopAll, in reverse order),
    // not under them while they drain.
    const redis = isShared(name) ? await Redis.start({ detached: true }) : undefined;
    if (redis) {
      cleanups.push(async () => {
        await redis.stop();
        await rm(redis.dir, { recursive: true, force: true });
      });
    }

    // nchan's nginx first: its bridge publishes to it from the first message on.
    const nchan = name === 'nchan' ? await startNchan() : undefined;
    if (nchan) cleanups.push(() => nchan.stop());

    const entry = name === 'baseline' ? join(BENCH_OUT, 'baseline.js') : name === 'nchan' ? join(BENCH_OUT, 'nchan-bridge.js') : SERVICE_ENTRY;
    // For profiling, e.g. BENCH_APP_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = (process.env['BENCH_APP_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
    // nginx reaches the service over its Unix socket, as the stack and compose do; project-tcp,
    // redis-tcp (replicas as compose's --scale runs them), the baseline and nchan's bridge over
    // TCP loopback.
    const overSocket = name === 'project' || name === 'redis';
    const socketDir = overSocket ? await socketDirectory('bench-sock-') : undefined;
    if (socketDir) cleanups.push(() => rm(socketDir, { recursive: true, force: true }));
    const apps: AppProcess[] = [];
    for (let i = 0; i < replicas; i += 1) {
      const appName = replicas === 1 ? name : `${name}-${i + 1}`;
      const port = await freePort();
      const socket = socketDir ? join(socketDir, `${appName}.sock`) : undefined;
      const env: NodeJS.ProcessEnv = {
        ...baseAppEnv(port, broker.url),
        MQTT_USERNAME: users.service.username,
        MQTT_PASSWORD: users.service.password,
        MQTT_TOPIC_PREFIX: DEFAULT_TOPIC_PREFIX,
        // Each replica its own session (the acks of its commands); the ingest session is shared.
        ...(redis ? { REDIS_URL: redis.url, MQTT_CLIENT_ID: `mqtt-sse-gateway-bench-${i + 1}` } : {}),
        ...(nchan ? { NCHAN_PUBLISH_URL: nchan.publishUrl } : {}),
        ...(name === 'baseline' || name === 'nchan' ? {} : { ...serviceOverrides(), ...appEnv }),
        ...(socket ? socketEnv(socket) : {}),
      };
      const app = new ManagedProcess(appName, process.execPath, [...nodeArgs, entry], { env, cwd: ROOT, detached: true });
      cleanups.push(() => app.stop('SIGTERM', 5_000));
      // With the shared log, /readyz is 200 once the log is loaded and tailed (and the broker is up).
      await waitReady(app, `http://127.0.0.1:${port}/readyz`, 20_000);
      apps.push({ name: appName, port, pid: app.pid!, ...(socket ? { socket } : {}) });
    }
    if (redis) await awaitIngest(apps);

    // The project's nginx.conf and template with their defaults; only the upstream differs.
    const upstreams = apps.map(appAddress);
    const upstream = { appUpstream: upstreams[0]!, ...(upstreams.length > 1 ? { appServers: upstreams } : {}) };
    let nginx: Proxy;
    let project: Nginx | undefined;
    if (nchan) nginx = nchan;
    else {
      project = await Nginx.start(upstream);
      cleanups.push(async () => {
        await project?.stop();
        if (project) await rm(project.dir, { recursive: true, force: true });
      });
      nginx = project;
    }

    let nginxPid = nginx.pid!;
    const brokerPid = broker.pid!;
    const redisPid = redis?.pid;
    const target: Target = {
      name,
      users,
      broker,
      redis,
      apps,
      appPort: apps[0]!.port,
      nginx,
      pids: {
        app: () => apps.map((a) => a.pid),
        nginx: () => [nginxPid, ...childrenOf(nginxPid)],
        broker: () => [brokerPid],
        ...(redisPid !== undefined ? { redis: () => [redisPid] } : {}),
      },
      nginxWorkerNofile: () => Math.min(...childrenOf(nginxPid).map((pid) => openFilesLimit(pid))),
      restartProxy: async () => {
        const old = project;
        if (!old) throw new Error(`${name}: only the project's nginx restarts`);
        await old.stop();
        // The same prefix directory: the certificate (and so the clients' CA) lives in it.
        project = await Nginx.start({ ...upstream, port: old.port, httpPort: old.httpPort, tls: old.tls, dir: old.dir });
        nginxPid = project.pid!;
        target.nginx = project;
      },
      stop,
    };
    return target;
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Ready is not yet live: /readyz says the log is tailed, not that a replica has taken the ingest
 * lease and subscribed. The holder's session puts `upstream` (mqtt up) in the log once it is
 * subscribed, so live data flows when one replica holds the lease and every replica has an entry.
 * Until then, telemetry (QoS 0) would reach no one.
 */
async function awaitIngest(apps: readonly AppProcess[]): Promise<void> {
  const deadline = Date.now() + INGEST_TIMEOUT_MS;
  let seen: Record<string, number>[] = [];
  for (;;) {
    seen = await Promise.all(apps.map((a) => appCounters(a.port)));
    const holders = seen.filter((c) => c['ingest_leader'] === 1).length;
    if (holders === 1 && seen.every((c) => (c['log_entries'] ?? 0) >= 1)) return;
    if (Date.now() > deadline) {
      const state = seen.map((c, i) => `${apps[i]!.name}: ingest_leader ${c['ingest_leader']}, log_entries ${c['log_entries']}`).join('; ');
      throw new Error(`no ingest session every replica tails within ${INGEST_TIMEOUT_MS / 1000} s (${state})`);
    }
    await sleep(100);
  }
}

const COUNTER = /^(sse_disconnects_total\{reason="[a-z]+"\}|sse_events_conflated_total|sse_events_delivered_total\{event="telemetry"\}|sse_clients|ingest_leader|log_entries) (\S+)$/;

/** The service's own counters, read from its /metrics (nginx does not expose it). */
export async function appCounters(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = COUNTER.exec(line);
    if (match) out[match[1]!] = Number(match[2]);
  }
  return out;
}

/** Every app's counters, in the order of `target.apps`. */
export function appCountersEach(target: Target): Promise<Record<string, number>[]> {
  return Promise.all(target.apps.map((a) => appCounters(a.port)));
}

/** Counters summed over the replicas. */
export function sumCounters(each: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counters of each) for (const [key, value] of Object.entries(counters)) out[key] = (out[key] ?? 0) + value;
  return out;
}
