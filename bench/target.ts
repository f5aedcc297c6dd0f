// One system under test on 127.0.0.1: the project's Mosquitto (its own config and ACL), the app
// (the built service, or the textbook baseline), and the project's nginx in front of it, with
// the same template and defaults for both apps.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BENCH_OUT,
  ManagedProcess,
  waitReady,
  Mosquitto,
  Nginx,
  ROOT,
  SERVICE_ENTRY,
  freePort,
  generateProjectUsers,
  type ProjectUsers,
} from './harness.js';
import { DEFAULT_TOPIC_PREFIX } from '../src/protocol.js';
import { childrenOf, openFilesLimit, type PidGroups } from './proc.js';
import type { TargetName } from './scenarios.js';

export interface Target {
  name: TargetName;
  users: ProjectUsers;
  broker: Mosquitto;
  app: ManagedProcess;
  appPort: number;
  nginx: Nginx;
  appPid: number;
  /** CPU is reported per group: nginx is its master plus its workers. */
  pids: PidGroups;
  /** Lowest open-files limit among nginx's workers. */
  nginxWorkerNofile(): number;
  stop(): Promise<void>;
}

/** SSE_* variables of the bench's own environment, passed on to the project's service. */
export function serviceOverrides(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('SSE_') && e[1] !== undefined));
}

export async function startTarget(name: TargetName, appEnv: Record<string, string>): Promise<Target> {
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

    const appPort = await freePort();
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      HOME: process.env['HOME'],
      NODE_ENV: 'production',
      PORT: String(appPort),
      HOST: '127.0.0.1',
      MQTT_URL: broker.url,
      MQTT_USERNAME: users.service.username,
      MQTT_PASSWORD: users.service.password,
      MQTT_TOPIC_PREFIX: DEFAULT_TOPIC_PREFIX,
      // Streams are closed by the bench before the app stops; nothing to spread out.
      SHUTDOWN_DRAIN_MS: '500',
      ...(name === 'project' ? { ...serviceOverrides(), ...appEnv } : {}),
    };
    const entry = name === 'project' ? SERVICE_ENTRY : join(BENCH_OUT, 'baseline.js');
    // For profiling, e.g. BENCH_APP_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = (process.env['BENCH_APP_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
    const app = new ManagedProcess(name, process.execPath, [...nodeArgs, entry], { env, cwd: ROOT, detached: true });
    cleanups.push(() => app.stop('SIGTERM', 5_000));
    await waitReady(app, `http://127.0.0.1:${appPort}/readyz`, 20_000);

    // The project's nginx.conf and template with their defaults; only the upstream differs.
    const nginx = await Nginx.start({ appUpstream: `127.0.0.1:${appPort}` });
    cleanups.push(async () => {
      await nginx.stop();
      await rm(nginx.dir, { recursive: true, force: true });
    });

    const nginxPid = nginx.pid!;
    const appPid = app.pid!;
    const brokerPid = broker.pid!;
    return {
      name,
      users,
      broker,
      app,
      appPort,
      nginx,
      appPid,
      pids: {
        app: () => [appPid],
        nginx: () => [nginxPid, ...childrenOf(nginxPid)],
        broker: () => [brokerPid],
      },
      nginxWorkerNofile: () => Math.min(...childrenOf(nginxPid).map((pid) => openFilesLimit(pid))),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The service's own counters, read from its /metrics (nginx does not expose it). */
export async function appCounters(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const match = /^(sse_disconnects_total\{reason="[a-z]+"\}|sse_events_conflated_total|sse_clients) (\S+)$/.exec(line);
    if (match) out[match[1]!] = Number(match[2]);
  }
  return out;
}
