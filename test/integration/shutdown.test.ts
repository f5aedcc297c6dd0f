import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { ManagedProcess, waitForLine } from '../../src/native/process.js';
import { builtEntry } from '../helpers/built.js';
import { isolation } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';

let broker: Mosquitto;

beforeAll(async () => {
  broker = await Mosquitto.start();
});

afterAll(async () => {
  await broker?.stop();
});

async function startChild(env: Record<string, string>): Promise<{ proc: ManagedProcess; url: string }> {
  const proc = new ManagedProcess('service', process.execPath, [await builtEntry('main.js')], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', MQTT_URL: broker.url, LOG_LEVEL: 'info', AUTH: 'off', ...isolation('sigterm'), ...env },
  });
  const line = await waitForLine(proc, /"msg":"listening"/, 10_000);
  const { port } = JSON.parse(line) as { port: number };
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => (await fetch(`${url}/readyz`)).status === 200, 'ready');
  return { proc, url };
}

describe('shutdown on SIGTERM', () => {
  it('turns readiness off, refuses new streams politely, closes open ones spread over the drain window, and exits 0', async () => {
    const drainMs = 1_500;
    const { proc, url } = await startChild({ SHUTDOWN_DRAIN_MS: String(drainMs) });
    const clients = Array.from({ length: 6 }, () => new SseCollector(`${url}/events`));
    try {
      await eventually(() => clients.every((c) => c.of('snapshot').length === 1), 'every stream open');
      const closedAt: number[] = [];
      for (const c of clients) c.source.addEventListener('error', () => closedAt.push(Date.now()), { once: true });

      const started = Date.now();
      proc.signal('SIGTERM');
      await eventually(async () => (await fetch(`${url}/readyz`)).status === 503, 'readiness 503', 1_000);
      const refused = await fetch(`${url}/events`, { headers: { Accept: 'text/event-stream' } });
      expect(refused.status).toBe(200);
      const body = await refused.text();
      expect(body).toMatch(/^retry: \d+\n\nevent: busy\ndata: \{"retryMs":\d+,"reason":"shutdown"\}\n\n$/);
      const plain = await fetch(`${url}/events`);
      expect(plain.status).toBe(503);
      expect(plain.headers.get('retry-after')).toMatch(/^\d+$/);

      const exit = await proc.exited;
      const elapsed = Date.now() - started;
      expect(exit, proc.output()).toEqual({ code: 0, signal: null });
      expect(elapsed).toBeLessThan(drainMs + 2_000);
      expect(closedAt).toHaveLength(clients.length);
      // Spread, not all in one instant: one close per slot of the window, so the first and the
      // last are at least (n - 2) slots apart (1,000 ms here); seen from the clients, with slack.
      const spread = Math.max(...closedAt) - Math.min(...closedAt);
      expect(spread, `closes spread over ${spread} ms`).toBeGreaterThan(((drainMs * (clients.length - 2)) / clients.length) * 0.6);
      expect(proc.output()).toContain('"msg":"shutdown complete"');
    } finally {
      for (const c of clients) c.close();
      await proc.stop('SIGKILL');
    }
  });

  it('refuses to start on a bad variable, naming it, with exit code 1 before listening', async () => {
    const proc = new ManagedProcess('service', process.execPath, [await builtEntry('main.js')], {
      env: { ...process.env, PORT: 'eighty', SSE_RETRY_MS: '5', MQTT_URL: broker.url },
    });
    const exit = await proc.exited;
    expect(exit.code).toBe(1);
    expect(proc.output()).toContain('config: PORT="eighty" is invalid: expected an integer from 0 to 65535');
    expect(proc.output()).toContain('config: SSE_RETRY_MS="5" is invalid: expected an integer from 100 to 600000');
    expect(proc.output()).not.toContain('listening');
  });

  it('starts only with sign-in set up or turned off by name, and warns of AUTH=off at every start', async () => {
    const env = { PATH: process.env['PATH'] ?? '', HOST: '127.0.0.1', PORT: '0', MQTT_URL: broker.url, LOG_LEVEL: 'info' };
    const refused = new ManagedProcess('service', process.execPath, [await builtEntry('main.js')], { env });
    expect((await refused.exited).code).toBe(1);
    expect(refused.output()).toContain('config: USERS_FILE must be set: sign-in is on (AUTH=on, the default)');
    expect(refused.output()).not.toContain('listening');
    for (let start = 0; start < 2; start++) {
      const open = new ManagedProcess('service', process.execPath, [await builtEntry('main.js')], { env: { ...env, AUTH: 'off', ...isolation('auth-off') } });
      try {
        await eventually(() => open.output().includes('"msg":"listening"'), 'the service listening', 10_000, () => open.output());
        const warning = open.output().split('\n').filter((l) => l.includes('AUTH=off: sign-in is off'));
        expect(warning).toHaveLength(1);
        expect(JSON.parse(warning[0]!)).toMatchObject({ level: 40 });
      } finally {
        await open.stop('SIGKILL');
      }
    }
  });
});
