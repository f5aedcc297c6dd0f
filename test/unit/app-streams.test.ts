import { once } from 'node:events';
import { createServer, get, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context } from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/http/app.js';
import { Router } from '../../src/http/router.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';

// A stream the app takes over (ctx.respond = false) lives for hours: nothing of Koa's may stay
// alive with it (its context was 3 KB per open stream). Every other response is still Koa's to
// answer, with the status the middleware left, 404 when it set none.

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with node --expose-gc (vitest.config.ts sets it for the forks pool)');
  collect();
}

const contexts: WeakRef<Context>[] = [];
const streams: ServerResponse[] = [];
let url: string;
let close: () => void;

beforeAll(async () => {
  const router = new Router()
    .on('/events', /^\/events$/, {
      GET: (ctx) => {
        contexts.push(new WeakRef(ctx));
        ctx.respond = false;
        ctx.res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        ctx.res.write(': open\n\n');
        streams.push(ctx.res); // as the hub keeps the response, and nothing else
      },
    })
    .on('/healthz', /^\/healthz$/, { GET: (ctx) => void (ctx.status = 202) })
    .on('/readyz', /^\/readyz$/, { GET: () => undefined })
    .on('/metrics', /^\/metrics$/, { GET: (ctx) => void (ctx.body = { ok: true }) });
  const server = createServer(createApp({ logger: createLogger('silent', 'app-streams'), metrics: createMetrics(), router }).callback());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () => {
    for (const res of streams) res.destroy();
    server.close();
  };
});

afterAll(() => close?.());

describe('responses the app takes over', () => {
  it('keep no Koa context alive while the stream stays open', async () => {
    const req = get(`${url}/events`);
    const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage];
    expect(res.statusCode).toBe(200);
    const chunks: string[] = [];
    res.setEncoding('utf8');
    res.on('data', (c: string) => chunks.push(c));
    await once(res, 'data');
    for (let i = 0; i < 5 && contexts[0]!.deref() !== undefined; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    expect(contexts[0]!.deref()).toBeUndefined();
    // The stream itself is untouched: still open, still written to.
    streams[0]!.write('data: after\n\n');
    await once(res, 'data');
    expect(chunks.join('')).toBe(': open\n\ndata: after\n\n');
    req.destroy();
  });

  it('leave every other response to Koa, with the status the middleware set', async () => {
    const accepted = await fetch(`${url}/healthz`);
    expect(accepted.status).toBe(202);
    expect(await accepted.text()).toBe('Accepted');
    const unanswered = await fetch(`${url}/readyz`);
    expect(unanswered.status).toBe(404);
    const json = await fetch(`${url}/metrics`);
    expect(json.status).toBe(200);
    expect(await json.json()).toEqual({ ok: true });
    const head = await fetch(`${url}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(JSON.stringify({ ok: true }).length));
    const missing = await fetch(`${url}/nowhere`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'not_found' });
  });
});
