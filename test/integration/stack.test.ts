import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/native/ports.js';
import { ManagedProcess, waitForLine } from '../../src/native/process.js';
import { PROJECT_ROOT } from '../../src/native/project.js';
import { startStack } from '../../src/native/stack.js';
import { eventually } from '../helpers/wait.js';

// `npm run stack` as a user runs it (node dist/native/stack.js; `npm run build` first), in a child
// process: its output, and that it leaves nothing behind however it ends.

const ENTRY = join(PROJECT_ROOT, 'dist', 'native', 'stack.js');

/** Every descendant of `pid`, from /proc (the components are children of the stack process). */
function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return children.flatMap((child) => [child, ...descendants(child)]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** After a failed assertion: the components lead their own process groups, so SIGKILL on the stack alone would leave them. */
function killAll(pids: number[]): void {
  for (const pid of pids.filter(alive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

async function startCli(): Promise<{ proc: ManagedProcess; port: number; pids: number[] }> {
  const port = await freePort();
  const proc = new ManagedProcess('stack', process.execPath, [ENTRY], {
    cwd: PROJECT_ROOT,
    // Its own process group, as a shell gives a foreground job: Ctrl-C signals the whole group.
    detached: true,
    env: { ...process.env, STACK_HTTPS_PORT: String(port), SIM_DEVICES: '3', COMMAND_TOKEN: '' },
  });
  await waitForLine(proc, /^open https:\/\//, 30_000);
  return { proc, port, pids: descendants(proc.pid!) };
}

describe('npm run stack', () => {
  it('prints one status line per component, the URL to open, then stops everything on SIGTERM', async () => {
    const { proc, port, pids } = await startCli();
    try {
      const lines = proc.output().split('\n');
      expect(lines.slice(0, 5).map((l) => l.split(/\s+/).slice(0, 2).join(' '))).toEqual([
        'mosquitto up', 'redis up', 'service up', 'simulator up', 'nginx up',
      ]);
      expect(lines[4]).toMatch(new RegExp(`127\\.0\\.0\\.1:${port} \\(HTTPS, HTTP/2; 127\\.0\\.0\\.1:\\d+ redirects to it\\)$`));
      // The CA to trust is named; its certificate is the one nginx serves (this process trusts it).
      expect(lines.find((l) => l.startsWith('TLS: the local CA is '))).toContain(relative(PROJECT_ROOT, join(process.env['STACK_TLS_DIR']!, 'ca.crt')));
      const signInLine = lines.find((l) => l.startsWith('sign in as'));
      expect(signInLine).toMatch(/: admin [A-Za-z0-9_-]{20} {3}operator [A-Za-z0-9_-]{20} {3}viewer [A-Za-z0-9_-]{20}$/);
      expect(lines.at(-1)).toMatch(new RegExp(`^open https://127\\.0\\.0\\.1:${port}/ +logs: \\.stack/logs/`));
      expect(pids.length).toBeGreaterThanOrEqual(5); // mosquitto, service, simulator, nginx master + workers
      // Sign-in is on: nothing without it, everything with the printed admin password.
      expect((await fetch(`https://127.0.0.1:${port}/api/devices`)).status).toBe(401);
      const admin = /admin (\S+)/.exec(signInLine!)![1]!;
      const session = await fetch(`https://127.0.0.1:${port}/api/session`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: admin }),
      });
      expect(session.status).toBe(200);
      // Over HTTPS (nginx says so in X-Forwarded-Proto) the session cookie is Secure.
      expect(session.headers.get('set-cookie')).toMatch(/; secure(;|$)/i);
      const cookie = session.headers.get('set-cookie')!.split(';')[0]!;
      const page = await fetch(`https://127.0.0.1:${port}/api/devices`, { headers: { Cookie: cookie } });
      expect(page.status).toBe(200);
      // Each simulated device logged in with a login of its own, generated for this run and handed
      // over in an owner-only file: no device password in the simulator's environment.
      await eventually(async () => {
        const body = (await (await fetch(`https://127.0.0.1:${port}/api/devices`, { headers: { Cookie: cookie } })).json()) as { devices: { id: string; state: string }[] };
        return body.devices.filter((d) => d.state === 'online').map((d) => d.id).join(',') === 'sim-001,sim-002,sim-003';
      }, 'the 3 simulated devices online', 10_000);
      const simulatorPid = pids.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('dist/simulator/main.js'))!;
      const simEnv = Object.fromEntries(readFileSync(`/proc/${simulatorPid}/environ`, 'utf8').split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const credentials = simEnv['SIM_CREDENTIALS_FILE']!;
      expect((statSync(credentials).mode & 0o777).toString(8)).toBe('600');
      expect(Object.keys(JSON.parse(readFileSync(credentials, 'utf8')).devices)).toEqual(['sim-001', 'sim-002', 'sim-003']);
      expect(simEnv['MQTT_PASSWORD']).toBeUndefined();
      const exit = await proc.stop('SIGTERM', 30_000);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(pids.filter(alive)).toEqual([]);
      expect(existsSync(credentials), 'the passwords file is gone with the stack').toBe(false);
    } finally {
      await proc.stop('SIGKILL');
      killAll(pids);
    }
  }, 60_000);

  it('stops everything on Ctrl-C, which signals the stack and every component at once', async () => {
    const { proc, pids } = await startCli();
    try {
      const before = proc.output().split('\n').length;
      process.kill(-proc.pid!, 'SIGINT'); // the terminal sends SIGINT to the foreground process group
      const exit = await proc.exited;
      const after = proc.output().split('\n').slice(before - 1);
      expect(exit, after.join('\n')).toEqual({ code: 0, signal: null });
      expect(after.filter((l) => / DOWN /.test(l)), 'components stopping on Ctrl-C are not reported as crashes').toEqual([]);
      expect(after.at(-1)).toBe('stopped');
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      await proc.stop('SIGKILL');
      killAll(pids);
    }
  }, 60_000);

  it('reports a component that dies, stops the rest and exits 1', async () => {
    const { proc, pids } = await startCli();
    try {
      const servicePid = pids.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('dist/main.js'));
      expect(servicePid).toBeDefined();
      process.kill(servicePid!, 'SIGKILL');
      const exit = await proc.exited;
      expect(exit.code).toBe(1);
      expect(proc.output()).toMatch(/^service +DOWN exited \(code null, signal SIGKILL\)/m);
      await eventually(() => pids.filter(alive).length === 0, 'no component left', 5_000, () => pids.filter(alive));
    } finally {
      await proc.stop('SIGKILL');
      killAll(pids);
    }
  }, 60_000);

  it('refuses a bad STACK_HTTPS_PORT, STACK_HTTP_PORT or STACK_TLS_DIR by name before it starts any component', async () => {
    const status: string[] = [];
    const start = (vars: Record<string, string>) => startStack({ baseEnv: { ...process.env, ...vars }, simulator: false, onStatus: (l) => status.push(l) });
    await expect(start({ STACK_HTTP_PORT: '80x' })).rejects.toThrow('STACK_HTTP_PORT="80x" is invalid: expected a port from 1 to 65535');
    await expect(start({ STACK_HTTPS_PORT: '70000' })).rejects.toThrow('STACK_HTTPS_PORT="70000" is invalid: expected a port from 1 to 65535');
    await expect(start({ STACK_TLS_DIR: 'certs' })).rejects.toThrow('STACK_TLS_DIR="certs" is invalid: expected an absolute path');
    expect(status, 'components reported up').toEqual([]);
  });

  it('refuses a bad STACK_AUTH, STACK_REDIS or STACK_REPLICAS by name before it starts any component', async () => {
    const status: string[] = [];
    const start = (vars: Record<string, string>) => startStack({ baseEnv: { ...process.env, ...vars }, simulator: false, onStatus: (l) => status.push(l) });
    await expect(start({ STACK_AUTH: 'on' })).rejects.toThrow('STACK_AUTH="on" is invalid: expected 1 (sign-in on, the default) or 0 (off)');
    await expect(start({ STACK_REDIS: 'yes' })).rejects.toThrow('STACK_REDIS="yes" is invalid: expected 1 (the shared log, the default) or 0 (embedded)');
    await expect(start({ STACK_REPLICAS: '0' })).rejects.toThrow('STACK_REPLICAS="0" is invalid: expected 1 to 16');
    await expect(start({ STACK_REDIS: '0', STACK_REPLICAS: '2' })).rejects.toThrow('STACK_REPLICAS > 1 cannot run with STACK_REDIS=0');
    expect(status, 'components reported up').toEqual([]);
  });
});
