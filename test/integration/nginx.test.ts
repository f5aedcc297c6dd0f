import { once } from 'node:events';
import { createServer, request as plainRequest, type IncomingMessage } from 'node:http';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { request } from 'node:https';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nginx } from '../../src/native/nginx.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import { MAX_BODY_BYTES } from '../../src/protocol.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { SseCollector } from '../helpers/sse-client.js';
import { TinyDns } from '../helpers/dns.js';
import { SseParser, type ParsedEvent } from '../helpers/sse-parser.js';
import { deviceLogin } from '../helpers/devices.js';
import { testCa, testTls } from '../helpers/tls.js';
import { eventually } from '../helpers/wait.js';

// The project's nginx config (nginx/nginx.conf + the rendered template) in front of the built
// service (`node dist/main.js`, run `npm run build` first) and the project's Mosquitto: the native
// stack, with a deliberately short proxy_read_timeout and a small per-address limit. nginx serves
// HTTPS (HTTP/2 offered) with the run's certificate, which this process trusts (tls-setup.ts);
// node:https and fetch speak HTTP/1.1 to it, node:http2 HTTP/2.

const READ_TIMEOUT_MS = 1_000;
const HEARTBEAT_MS = 300;
const PER_ADDRESS_LIMIT = 3;
const SERVICE_ENV = { SSE_HEARTBEAT_MS: String(HEARTBEAT_MS), SHUTDOWN_DRAIN_MS: '200', LOG_LEVEL: 'warn' };

let stack: Stack;
let device: MqttClient;
const DEVICE = 'nginx-test-1';

beforeAll(async () => {
  stack = await startStack({
    // Sign-in has its own tests (access.test.ts, the dashboard e2e); these are about streaming.
    auth: false,
    simulator: false,
    serviceEnv: SERVICE_ENV,
    nginxVars: { NGINX_SSE_READ_TIMEOUT: `${READ_TIMEOUT_MS}ms`, SSE_PER_ADDRESS_LIMIT: String(PER_ADDRESS_LIMIT) },
    logDir: `${process.env.TMPDIR ?? '/tmp'}/nginx-test-logs-${process.pid}`,
  });
  device = await connectPublisher(stack.urls.mqtt, await deviceLogin(stack.mosquitto, DEVICE));
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await stack?.stop();
});

interface Stream {
  response: IncomingMessage;
  parser: SseParser;
  /** Every dispatched event with the time it arrived. */
  arrivals: { event: ParsedEvent; at: number }[];
  ended: Promise<number>;
  close(): void;
}

/** Parses a response body the way a browser parses event streams, noting when each event arrived. */
function collect(body: Readable, response: IncomingMessage, close: () => void): Stream {
  const parser = new SseParser();
  const arrivals: Stream['arrivals'] = [];
  body.setEncoding('utf8');
  body.on('data', (chunk: string) => {
    const at = Date.now();
    for (const event of parser.push(chunk)) arrivals.push({ event, at });
  });
  const ended = new Promise<number>((done) => {
    for (const name of ['end', 'close', 'error']) body.once(name, () => done(Date.now()));
  });
  return { response, parser, arrivals, ended, close };
}

/** A raw GET through nginx (HTTPS, HTTP/1.1). */
function open(path: string, headers: Record<string, string> = {}, base = stack.nginx.url): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { headers: { Accept: 'text/event-stream', ...headers } }, (response) => {
      resolve(collect(response, response, () => req.destroy()));
    });
    req.once('error', reject);
    req.end();
  });
}

/** An HTTP/2 connection to nginx, trusting only the test CA; fails unless ALPN chose h2. */
async function h2Session(base = stack.nginx.url): Promise<ClientHttp2Session> {
  const session = http2Connect(base, { ca: testCa() });
  await Promise.race([once(session, 'connect'), once(session, 'error').then(([err]) => Promise.reject(err as Error))]);
  expect(session.alpnProtocol).toBe('h2');
  return session;
}

/** A GET on one stream of an HTTP/2 connection. */
async function openH2(session: ClientHttp2Session, path: string): Promise<Stream> {
  const req = session.request({ ':path': path, accept: 'text/event-stream' });
  const [headers] = (await once(req, 'response')) as [Record<string, string | number>];
  // The parts of IncomingMessage the tests read; the body does not flow before collect() reads it.
  const response = { statusCode: Number(headers[':status']), headers, complete: false } as unknown as IncomingMessage;
  const stream = collect(req, response, () => req.close());
  void stream.ended.then(() => Object.assign(response, { complete: true }));
  return stream;
}

/**
 * Publishes readings `first`..`last` 300 ms apart, each only once the one before reached the
 * stream (within 300 ms of its publishing); returns when each arrived.
 */
async function publishPaced(stream: Stream, first: number, last: number): Promise<number[]> {
  const arrivedAt: number[] = [];
  for (let seq = first; seq <= last; seq += 1) {
    const sentAt = Date.now();
    await device.publishAsync(`devices/${DEVICE}/telemetry`, telemetry(seq), { qos: 1 });
    const arrived = await eventually(
      () => stream.arrivals.find((a) => a.event.type === 'telemetry' && JSON.parse(a.event.data).seq === seq),
      `telemetry seq ${seq} within 300 ms`,
      300,
    );
    expect(arrived.at - sentAt).toBeLessThan(300);
    arrivedAt.push(arrived.at);
    await sleep(300 - (Date.now() - sentAt));
  }
  return arrivedAt;
}

async function text(stream: Stream): Promise<string> {
  await stream.ended;
  return stream.parser.events.map((e) => `${e.type}:${e.data}`).join('\n');
}

describe('nginx in front of the service (the native stack)', () => {
  it('serves the dashboard from web/ and answers its own /healthz', async () => {
    const page = await fetch(`${stack.nginx.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toMatch(/^<!doctype html>/i);
    const health = await fetch(`${stack.nginx.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
  });

  it('serves HTTPS with HTTP/2, and plain HTTP only redirects there, path and query kept (/healthz answered on both)', async () => {
    const session = await h2Session();
    try {
      const req = session.request({ ':path': '/' });
      const [headers] = (await once(req, 'response')) as [Record<string, string | number>];
      req.resume();
      expect(headers[':status']).toBe(200);
      expect(headers['content-type']).toMatch(/^text\/html/);
      // The page's headers are unchanged over HTTP/2.
      expect(headers['content-security-policy']).toContain("default-src 'self'");
      expect(headers['strict-transport-security']).toBeUndefined();
    } finally {
      session.close();
    }
    for (const path of ['/', `/events?device=${DEVICE}&types=telemetry`, '/api/devices?limit=5', '/signin.html']) {
      const res = await fetch(`${stack.nginx.httpUrl}${path}`, { redirect: 'manual' });
      expect(res.status, path).toBe(301);
      expect(res.headers.get('location'), path).toBe(`${stack.nginx.url}${path}`);
      await res.body?.cancel();
    }
    // A client following the redirect (as EventSource and fetch do) lands on the stream.
    const followed = await fetch(`${stack.nginx.httpUrl}/api/devices`);
    expect(followed.status).toBe(200);
    expect(followed.url).toBe(`${stack.nginx.url}/api/devices`);
    await followed.body?.cancel();
    const health = await fetch(`${stack.nginx.httpUrl}/healthz`, { redirect: 'manual' });
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
  });

  it('passes each event on as it is published: every one arrives before the next is sent', async () => {
    const stream = await open(`/events?device=${DEVICE}&types=telemetry`);
    try {
      expect(stream.response.statusCode).toBe(200);
      await eventually(() => stream.arrivals.some((a) => a.event.type === 'snapshot'), 'the snapshot');
      await publishPaced(stream, 1, 5);
    } finally {
      stream.close();
    }
  });

  it('streams over HTTP/2 unbuffered: readings published 300 ms apart arrive 300 ms apart, each before the next is sent', async () => {
    const session = await h2Session();
    try {
      const stream = await openH2(session, `/events?device=${DEVICE}&types=telemetry`);
      expect(stream.response.statusCode).toBe(200);
      expect(stream.response.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      await eventually(() => stream.arrivals.some((a) => a.event.type === 'snapshot'), 'the snapshot');
      const arrivedAt = await publishPaced(stream, 11, 16);
      // Held back and flushed together, they would arrive within a few ms of each other.
      const gaps = arrivedAt.slice(1).map((at, i) => at - arrivedAt[i]!);
      for (const gap of gaps) expect(gap, `gaps between arrivals: ${gaps.join(', ')} ms`).toBeGreaterThanOrEqual(200);
      stream.close();
    } finally {
      session.close();
    }
  });

  it('keeps an idle stream open past proxy_read_timeout on the service heartbeats', async () => {
    const stream = await open(`/events?device=${DEVICE}`);
    try {
      const outcome = await Promise.race([stream.ended.then(() => 'ended'), sleep(READ_TIMEOUT_MS * 3.5).then(() => 'open')]);
      expect(outcome).toBe('open');
      expect(stream.parser.comments.filter((c) => c.trim() === 'keepalive').length).toBeGreaterThanOrEqual(5);
    } finally {
      stream.close();
    }
  });

  it('cuts a stream silent for longer than proxy_read_timeout (so the heartbeat is what keeps streams alive)', async () => {
    await stack.restartService({ ...SERVICE_ENV, SSE_HEARTBEAT_MS: String(READ_TIMEOUT_MS * 5) });
    try {
      const stream = await open(`/events?device=${DEVICE}`);
      const started = Date.now();
      const outcome = await Promise.race([stream.ended.then(() => 'ended'), sleep(READ_TIMEOUT_MS * 3.5).then(() => 'open')]);
      stream.close();
      expect(outcome).toBe('ended');
      expect(Date.now() - started).toBeGreaterThanOrEqual(READ_TIMEOUT_MS * 0.9);
    } finally {
      await stack.restartService(SERVICE_ENV);
    }
  });

  it('never compresses the stream, even for a client that accepts gzip (the page itself is compressed)', async () => {
    const stream = await open(`/events?device=${DEVICE}`, { 'Accept-Encoding': 'gzip, deflate, br' });
    try {
      expect(stream.response.headers['content-encoding']).toBeUndefined();
      expect(stream.response.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      await eventually(() => stream.parser.retry !== undefined && stream.parser.events.length > 0, 'plain-text retry and snapshot');
    } finally {
      stream.close();
    }
    // Control: gzip is on for the dashboard, so the stream's exemption is deliberate.
    const page = await new Promise<IncomingMessage>((resolve, reject) => {
      request(`${stack.nginx.url}/`, { headers: { 'Accept-Encoding': 'gzip' } }, (res) => {
        res.resume();
        resolve(res);
      }).once('error', reject).end();
    });
    expect(page.headers['content-encoding']).toBe('gzip');
  });

  it('refuses oversized API bodies at the edge with a JSON 413, before they reach the service', async () => {
    const res = await fetch(`${stack.nginx.url}/api/devices/${DEVICE}/commands`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${stack.commandToken}` },
      // Just past what nginx and the service both allow; nginx's answer says KiB, the service's bytes.
      body: JSON.stringify({ name: 'ping', params: { pad: 'x'.repeat(MAX_BODY_BYTES) } }),
    });
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(await res.json()).toEqual({ error: 'payload_too_large', message: expect.stringContaining(`${MAX_BODY_BYTES / 1024} KiB`) });
  });

  it('does not expose /metrics, which the service itself serves', async () => {
    const direct = await fetch(`${stack.urls.service}/metrics`);
    expect(direct.status).toBe(200);
    await direct.body?.cancel();
    for (const path of ['/metrics', '/metrics/', '/metrics?x=1']) {
      const proxied = await fetch(`${stack.nginx.url}${path}`);
      expect(proxied.status, path).toBe(404);
      expect(await proxied.json(), path).toEqual({ error: 'not_found', message: 'Not found.' });
    }
  });

  it('answers a 200 retry stream instead of 502 while the service is down, jittered per request', async () => {
    await stack.stopService();
    try {
      const retries = new Set<number>();
      for (let i = 0; i < 12; i += 1) {
        const stream = await open('/events');
        expect(stream.response.statusCode).toBe(200);
        expect(stream.response.headers['content-type']).toBe('text/event-stream; charset=utf-8');
        expect(stream.response.headers['cache-control']).toBe('no-cache, no-transform');
        await text(stream);
        const retry = stream.parser.retry!;
        expect(retry).toBeGreaterThanOrEqual(2000);
        expect(retry).toBeLessThanOrEqual(5750);
        expect(stream.parser.events).toEqual([
          { type: 'busy', data: JSON.stringify({ retryMs: retry, reason: 'unavailable' }), lastEventId: '' },
        ]);
        retries.add(retry);
      }
      expect(retries.size).toBeGreaterThan(1);
      // The API says so in JSON, with Retry-After.
      const api = await fetch(`${stack.nginx.url}/api/devices`);
      expect(api.status).toBe(503);
      expect(api.headers.get('retry-after')).toBe('5');
      expect(await api.json()).toMatchObject({ error: 'unavailable' });
    } finally {
      await stack.startService();
    }
  });

  it('keeps an EventSource retrying through a service restart, never closing it, and resumes it with nothing lost', async () => {
    const client = new SseCollector(`${stack.nginx.url}/events?device=${DEVICE}`);
    try {
      await client.waitFor((e) => e.type === 'snapshot', 'the first snapshot');
      await device.publishAsync(`devices/${DEVICE}/telemetry`, telemetry(1_001), { qos: 1 });
      await client.waitFor((e) => e.type === 'telemetry' && e.data.seq === 1_001, 'telemetry before the restart');
      await stack.stopService();
      await client.waitFor((e) => e.type === 'busy' && e.data.reason === 'unavailable', 'the busy event from nginx', 10_000);
      // Sent while no service runs: the broker holds it for the ingest session.
      await device.publishAsync(`devices/${DEVICE}/telemetry`, telemetry(1_002), { qos: 1 });
      await stack.startService();
      await client.waitFor((e) => e.type === 'telemetry' && e.data.seq === 1_002, 'the reading sent while it was down', 15_000);
      expect(client.source.readyState).not.toBe(2); // CLOSED would mean the browser gave up
      // The shared log (the stack's default): the restarted service resumes the stream.
      expect(client.of('reset')).toEqual([]);
      expect(client.of('snapshot')).toHaveLength(1);
    } finally {
      client.close();
    }
  });

  it('counts each HTTP/2 stream against the per-address limit, though they share one connection', async () => {
    const path = `/events?device=${DEVICE}&probe=h2-limit`;
    const session = await h2Session();
    try {
      const held: Stream[] = [];
      for (let i = 0; i < PER_ADDRESS_LIMIT; i += 1) {
        const stream = await openH2(session, path);
        held.push(stream);
        await eventually(() => stream.parser.events.some((e) => e.type === 'snapshot'), `stream ${i + 1} open`);
      }
      const refused = await openH2(session, path);
      expect(refused.response.statusCode).toBe(200);
      await refused.ended;
      expect(refused.parser.events.map((e) => [e.type, JSON.parse(e.data).reason])).toEqual([['busy', 'limited']]);
      expect(refused.parser.retry).toBeGreaterThanOrEqual(30_000);
      for (const stream of held) expect(stream.response.complete).toBe(false);
      for (const stream of held) stream.close();
    } finally {
      session.close();
    }
    // nginx frees a slot when it finishes the request, which it logs: the next test needs them all.
    const finished = async () => (await readFile(join(stack.logDir, 'nginx-access.log'), 'utf8')).split('\n').filter((l) => l.includes(`"GET ${path} HTTP/2.0"`)).length;
    await eventually(async () => (await finished()) === PER_ADDRESS_LIMIT + 1, 'every HTTP/2 stream finished at nginx', 10_000, finished);
  });

  it('refuses streams past the per-address limit with a 200 busy stream and a long retry', async () => {
    const held: Stream[] = [];
    try {
      for (let i = 0; i < PER_ADDRESS_LIMIT; i += 1) {
        const stream = await open(`/events?device=${DEVICE}`);
        held.push(stream);
        await eventually(() => stream.parser.events.some((e) => e.type === 'snapshot'), `stream ${i + 1} open`);
      }
      const refused = await open(`/events?device=${DEVICE}`);
      expect(refused.response.statusCode).toBe(200);
      await text(refused);
      const retry = refused.parser.retry!;
      expect(retry).toBeGreaterThanOrEqual(30_000);
      expect(retry).toBeLessThanOrEqual(45_000);
      expect(refused.parser.events).toEqual([
        { type: 'busy', data: JSON.stringify({ retryMs: retry, reason: 'limited' }), lastEventId: '' },
      ]);
      // The streams within the limit are untouched, and a freed slot can be used again.
      for (const stream of held) expect(stream.response.complete).toBe(false);
      held.shift()!.close();
      await eventually(async () => {
        const next = await open(`/events?device=${DEVICE}`);
        const ok = await eventually(() => next.parser.events[0], 'a first event');
        if (ok.type === 'snapshot') {
          held.push(next);
          return true;
        }
        return false;
      }, 'a stream once a slot is free', 3_000);
    } finally {
      for (const stream of held) stream.close();
    }
  });
});

describe('nginx streaming settings on their own', () => {
  it('follows the app to a new address by name, without a reload (a recreated container)', async () => {
    // Two app instances on one port at two loopback addresses, and a DNS server that names one.
    const app = (name: string) => createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ served: name }));
    });
    const before = app('before');
    before.listen(0, '127.0.0.1');
    await once(before, 'listening');
    const { port } = before.address() as AddressInfo;
    const after = app('after');
    after.listen(port, '127.0.0.2');
    await once(after, 'listening');
    const dns = await TinyDns.start('app.test', '127.0.0.1');
    const nginx = await Nginx.start({ appUpstream: `app.test:${port}`, tls: testTls(), vars: { NGINX_RESOLVER: `127.0.0.1:${dns.port}` } });
    const served = async () => {
      const res = await fetch(`${nginx.url}/api/devices`);
      return res.ok ? ((await res.json()) as { served: string }).served : `status ${res.status}`;
    };
    try {
      expect(await served()).toBe('before');
      expect(dns.queries, 'the name was looked up').toBeGreaterThan(0);
      // The old container goes away and the name now points at the new one; nginx is not touched.
      before.closeAllConnections();
      before.close();
      dns.address = '127.0.0.2';
      const switchedAt = Date.now();
      await eventually(async () => (await served()) === 'after', 'nginx to proxy to the new address', 20_000, served);
      expect(Date.now() - switchedAt, 'within the resolver cache time (valid=10s)').toBeLessThan(12_000);
    } finally {
      await nginx.stop();
      dns.stop();
      for (const server of [before, after]) {
        server.closeAllConnections();
        server.close();
      }
    }
  });

  it('tells the app that the browser came over HTTPS, whatever the client itself claims (X-Forwarded-Proto)', async () => {
    const seen: (string | undefined)[] = [];
    const upstream = createServer((req, res) => {
      seen.push(req.headers['x-forwarded-proto'] as string | undefined);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const nginx = await Nginx.start({ appUpstream: `127.0.0.1:${(upstream.address() as AddressInfo).port}`, tls: testTls() });
    try {
      for (const claim of [undefined, 'http', 'https, http']) {
        const res = await fetch(`${nginx.url}/api/session`, { headers: claim ? { 'X-Forwarded-Proto': claim } : {} });
        expect(res.status).toBe(200);
        await res.body?.cancel();
      }
      const res = await fetch(`${nginx.url}/events`, { headers: { 'X-Forwarded-Proto': 'http' } });
      await res.body?.cancel();
      expect(seen).toEqual(['https', 'https', 'https', 'https']);
      // Plain HTTP never reaches the app: it is redirected first.
      const plain = await new Promise<IncomingMessage>((resolve, reject) => {
        plainRequest(`${nginx.httpUrl}/api/session`, (r) => {
          r.resume();
          resolve(r);
        }).once('error', reject).end();
      });
      expect(plain.statusCode).toBe(301);
      expect(seen).toHaveLength(4);
    } finally {
      await nginx.stop();
      upstream.closeAllConnections();
      upstream.close();
    }
  });

  it('passes small events on at once, uncompressed, even from an upstream that does not opt out of buffering', async () => {
    // The service sends `X-Accel-Buffering: no` and `Cache-Control: no-transform`; this upstream
    // sends neither, so only the /events location's own settings keep the stream flowing.
    const upstream = createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      let n = 0;
      const timer = setInterval(() => {
        n += 1;
        res.write(`event: tick\ndata: ${JSON.stringify({ n, sentAt: Date.now() })}\n\n`);
      }, 200);
      req.socket.once('close', () => clearInterval(timer));
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const nginx = await Nginx.start({ appUpstream: `127.0.0.1:${(upstream.address() as AddressInfo).port}`, tls: testTls() });
    try {
      const stream = await open('/events', { 'Accept-Encoding': 'gzip' }, nginx.url);
      try {
        expect(stream.response.headers['content-encoding']).toBeUndefined();
        await eventually(() => stream.arrivals.length >= 5, 'five ticks', 5_000);
        for (const { event, at } of stream.arrivals) {
          expect(at - (JSON.parse(event.data) as { sentAt: number }).sentAt).toBeLessThan(150);
        }
      } finally {
        stream.close();
      }
    } finally {
      await nginx.stop();
      upstream.closeAllConnections();
      upstream.close();
    }
  });
});
