import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/http/app.js';
import { HttpError } from '../../src/http/errors.js';
import { Router } from '../../src/http/router.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';

// An HttpError is an answer the service chose (a 504 for a device that did not ack): it is logged
// without a stack and below error. Anything else thrown is a defect: error level, with the error.

const lines: Record<string, unknown>[] = [];
let url: string;
let close: () => void;

beforeAll(async () => {
  const logger = createLogger('debug', 'app-errors', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const router = new Router()
    .on('/healthz', /^\/healthz$/, { GET: () => { throw new HttpError(504, 'timeout', 'Device "d" did not acknowledge within 2500 ms.'); } })
    .on('/readyz', /^\/readyz$/, { GET: () => { throw new TypeError('a defect'); } })
    .on('/api/devices', /^\/api\/devices$/, { GET: () => { throw new HttpError(409, 'device_offline', 'Device "d" is offline.'); } });
  const server = createServer(createApp({ logger, metrics: createMetrics(), router }).callback());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () => server.close();
});

afterAll(() => close?.());

const LEVEL = { error: 50, warn: 40, info: 30 } as const;
const about = (id: string) => lines.filter((l) => l.requestId === id && l.msg !== 'request');

describe('error logging', () => {
  it('logs a 504 HttpError as a warning with its code, without a stack', async () => {
    const res = await fetch(`${url}/healthz`, { headers: { 'X-Request-Id': 'expected-504' } });
    expect(res.status).toBe(504);
    expect(await res.json()).toEqual({ error: 'timeout', message: 'Device "d" did not acknowledge within 2500 ms.' });
    const logged = about('expected-504');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: LEVEL.warn, status: 504, error: 'timeout' });
    expect(JSON.stringify(logged[0])).not.toContain('stack');
  });

  it('logs a 4xx HttpError only in its request line', async () => {
    expect((await fetch(`${url}/api/devices`, { headers: { 'X-Request-Id': 'expected-409' } })).status).toBe(409);
    expect(about('expected-409')).toEqual([]);
    expect(lines.find((l) => l.requestId === 'expected-409' && l.msg === 'request')).toMatchObject({ level: LEVEL.info, status: 409 });
  });

  it('logs anything else thrown at error, with the error and its stack, and answers a bare 500', async () => {
    const res = await fetch(`${url}/readyz`, { headers: { 'X-Request-Id': 'defect' } });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: 'internal', message: 'Internal server error.' });
    const [logged] = about('defect');
    expect(logged).toMatchObject({ level: LEVEL.error, err: { type: 'TypeError', message: 'a defect', stack: expect.stringContaining('TypeError: a defect') } });
  });
});
