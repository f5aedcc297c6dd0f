import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOCKET_MODE } from '../../src/http/socket.js';
import { ManagedProcess, waitForLine } from '../../src/native/process.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import { builtEntry } from '../helpers/built.js';
import { deviceLogin } from '../helpers/devices.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { isolation } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';

// nginx in front of the built service over a Unix domain socket (SOCKET_PATH), as the native
// stack and compose run it: the socket's permissions, a stale file left by a killed process,
// a path that belongs to someone else, the listen backlog, and streaming through it.

const run = promisify(execFile);
const DEVICE = 'socket-test-1';
const isRoot = userInfo().uid === 0;

let stack: Stack;
let device: MqttClient;
let scratch: string;
let entry: string;

beforeAll(async () => {
  stack = await startStack({
    auth: false,
    simulator: false,
    serviceEnv: { LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: '200', LISTEN_BACKLOG: '2048' },
    logDir: join(process.env.TMPDIR ?? '/tmp', `socket-test-logs-${process.pid}`),
  });
  device = await connectPublisher(stack.urls.mqtt, await deviceLogin(stack.mosquitto, DEVICE));
  entry = await builtEntry('main.js');
  scratch = await mkdtemp(join(tmpdir(), 'socket-test-'));
  await chmod(scratch, 0o711);
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await stack?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function readingThroughNginx(seq: number): Promise<void> {
  const client = new SseCollector(`${stack.urls.events}?device=${DEVICE}`);
  try {
    await client.waitFor((e) => e.type === 'snapshot', 'the snapshot through nginx', 10_000);
    await eventually(async () => {
      await device.publishAsync(`devices/${DEVICE}/telemetry`, telemetry(seq), { qos: 1 });
      return client.of('telemetry').some((e) => (e.data as { seq?: number }).seq === seq);
    }, `reading ${seq} through nginx`, 10_000);
  } finally {
    client.close();
  }
}

/** Connects to `path` as another user (a child process with that uid and gid): 'ok' or the error code. */
async function connectAs(path: string, uid: number, gid: number): Promise<string> {
  const script = `require('net').connect(${JSON.stringify(path)}).on('connect', function () { process.stdout.write('ok'); this.destroy(); })`
    + ".on('error', (e) => process.stdout.write(e.code))";
  const { stdout } = await run(process.execPath, ['-e', script], { uid, gid, cwd: '/' });
  return stdout;
}

function service(env: Record<string, string>): ManagedProcess {
  return new ManagedProcess('socket-service', process.execPath, [entry], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', MQTT_URL: stack.urls.mqtt, AUTH: 'off', LOG_LEVEL: 'info', ...isolation('socket'), ...env },
  });
}

describe('nginx to the service over a Unix socket', () => {
  it('streams through the socket, which only the service and nginx\'s workers may open', async () => {
    const path = stack.replicas[0]!.socket!;
    expect(path).toMatch(/\.sock$/);
    const info = await stat(path);
    expect(info.isSocket()).toBe(true);
    expect(info.mode & 0o777).toBe(SOCKET_MODE);
    await readingThroughNginx(1);
    const log = await readFile(join(stack.logDir, 'nginx-access.log'), 'utf8');
    expect(log).toContain(`upstream=unix:${path}`);
    if (isRoot) {
      // Started as root, nginx's workers run as nobody: the socket's group is theirs.
      expect(info.gid).toBe(65_534);
      expect(await connectAs(path, 65_534, 65_534)).toBe('ok');
      expect(await connectAs(path, 4_242, 4_242)).toBe('EACCES');
    }
  });

  it('listens with the configured backlog on the socket and on TCP', async () => {
    const path = stack.replicas[0]!.socket!;
    const { stdout: somaxconn } = await run('sysctl', ['-n', 'net.core.somaxconn']);
    const expected = Math.min(2_048, Number(somaxconn));
    // For a listening socket ss shows its backlog as Send-Q.
    const unix = (await run('ss', ['-xlnH'])).stdout.split('\n').find((line) => line.includes(` ${path} `));
    expect(unix, 'the socket in ss -xl').toBeDefined();
    expect(Number(unix!.trim().split(/\s+/)[3])).toBe(expected);
    const tcp = (await run('ss', ['-tlnH', `sport = :${stack.replicas[0]!.port}`])).stdout.trim();
    expect(Number(tcp.split(/\s+/)[2])).toBe(expected);
  });

  it('removes the stale socket a killed service left, and serves again', async () => {
    const replica = stack.replicas[0]!;
    await replica.kill();
    // SIGKILL gives the process no chance to remove its socket: the file stays, nobody answers.
    expect((await stat(replica.socket!)).isSocket()).toBe(true);
    await replica.start();
    const lines = (await readFile(join(stack.logDir, `${replica.name}.log`), 'utf8')).split('\n');
    expect(lines.some((l) => l.includes('"msg":"listening on socket"') && l.includes('"replacedStale":true'))).toBe(true);
    await readingThroughNginx(2);
  }, 60_000);

  it('refuses a path another live process serves, leaving it working', async () => {
    const path = stack.replicas[0]!.socket!;
    const second = service({ SOCKET_PATH: path });
    const exit = await second.exited;
    expect(exit.code).toBe(1);
    expect(second.output()).toContain(`config: SOCKET_PATH ${path} is served by another live process`);
    await readingThroughNginx(3);
  }, 30_000);

  it('refuses a path that is not a socket, and leaves the file alone', async () => {
    const path = join(scratch, 'not-a-socket');
    await writeFile(path, 'precious');
    const proc = service({ SOCKET_PATH: path });
    expect((await proc.exited).code).toBe(1);
    expect(proc.output()).toContain(`config: SOCKET_PATH ${path} exists and is not a socket`);
    expect(await readFile(path, 'utf8')).toBe('precious');
  }, 30_000);

  it('removes its socket when it stops on SIGTERM', async () => {
    const path = join(scratch, 'own.sock');
    const proc = service({ SOCKET_PATH: path });
    await waitForLine(proc, /"msg":"listening on socket"/, 10_000);
    expect(await new Promise((resolve) => connect(path).on('connect', function (this: ReturnType<typeof connect>) {
      this.destroy();
      resolve('ok');
    }).on('error', (e: NodeJS.ErrnoException) => resolve(e.code)))).toBe('ok');
    proc.signal('SIGTERM');
    expect(await proc.exited, proc.output()).toEqual({ code: 0, signal: null });
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  }, 30_000);
});
