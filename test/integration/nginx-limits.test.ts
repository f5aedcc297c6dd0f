import { connect } from 'node:tls';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { Nginx } from '../../src/native/nginx.js';
import { MAX_FILTER_DEVICES } from '../../src/protocol.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { testCa, testTls } from '../helpers/tls.js';
import { eventually } from '../helpers/wait.js';

// The project's nginx template in front of the service: the documented 1,000-device filter gets
// through, anything longer gets the contract's JSON (never nginx's HTML), and /api/ is
// rate-limited per client address with a JSON 429. Over HTTPS (HTTP/1.1), as browsers without
// HTTP/2 and most scripts reach it.

let broker: Mosquitto;
let publisher: MqttClient;
let svc: RunningService;
let prefix: string;
const started: Nginx[] = [];

beforeAll(async () => {
  broker = await Mosquitto.start();
  publisher = await connectPublisher(broker.url);
  const ids = isolation('nginx-limits');
  prefix = ids.MQTT_TOPIC_PREFIX;
  svc = await startService({ MQTT_URL: broker.url, ...ids });
}, 30_000);

afterAll(async () => {
  await Promise.all(started.map((n) => n.stop()));
  await svc?.stop();
  await publisher?.endAsync();
  await broker?.stop();
});

/** Its own nginx, so rate-limit state never carries over from another test. */
async function freshNginx(): Promise<Nginx> {
  const nginx = await Nginx.start({ appUpstream: `127.0.0.1:${svc.port}`, tls: testTls() });
  started.push(nginx);
  return nginx;
}

/** 64-character ids, the longest allowed, `count` of them; `first` is a real device. */
function longIds(count: number, first: string): string[] {
  return [first, ...Array.from({ length: count - 1 }, (_, i) => `d${String(i).padStart(63, '0')}`)];
}

/**
 * A raw HTTP/1.1 request through nginx over TLS: status line, headers and body as they came. nginx may close a
 * connection it answered before reading all we sent (a request line past its buffer): the reset
 * that follows is the end of the answer then, once a whole head came.
 */
function raw(nginx: Nginx, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: nginx.port, host: '127.0.0.1', ca: testCa(), ALPNProtocols: ['http/1.1'] }, () => socket.write(head));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('end', () => resolve(answer));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' && answer.includes('\r\n\r\n') ? resolve(answer) : reject(err)));
    socket.setTimeout(5_000, () => socket.destroy(new Error(`no answer; so far: ${answer.slice(0, 200)}`)));
  });
}

describe('long stream filters through nginx', () => {
  const real = `${'r'.repeat(60)}-one`;

  beforeAll(async () => {
    await publisher.publishAsync(`${prefix}/${real}/telemetry`, telemetry(1), { qos: 1 });
    await eventually(() => svc.service.store.get(real), 'the real device known');
  });

  it.each([
    ['devices=a,b,…', (ids: string[]) => `devices=${ids.join(',')}`],
    ['device=a&device=b', (ids: string[]) => ids.map((id) => `device=${id}`).join('&')],
  ])('streams a snapshot for the documented maximum of 1,000 ids of 64 characters (%s)', async (_, query) => {
    const nginx = await freshNginx();
    const ids = longIds(MAX_FILTER_DEVICES, real);
    const url = `${nginx.url}/events?${query(ids)}`;
    expect(url.length).toBeGreaterThan(64_000); // what used to get nginx's 414 past ~8 KB
    const stream = new SseCollector(url);
    try {
      const snapshot = await stream.waitFor((e) => e.type === 'snapshot', 'snapshot through nginx');
      expect((snapshot.data.devices as { id: string }[]).map((d) => d.id)).toEqual([real]);
      expect(stream.errors).toBe(0);
    } finally {
      stream.close();
    }
  });

  it('answers a longer request line with a JSON 414, never an HTML page', async () => {
    const nginx = await freshNginx();
    const tooMany = longIds(1_300, real).join(','); // ~84 KB: past the 80 KiB line limit
    const res = await fetch(`${nginx.url}/events?devices=${tooMany}`, { headers: { Accept: 'text/event-stream' } });
    expect(res.status).toBe(414);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const text = await res.text();
    expect(text).not.toMatch(/<html/i);
    expect(JSON.parse(text)).toMatchObject({ error: 'uri_too_long', message: expect.stringContaining(`${MAX_FILTER_DEVICES} devices`) });
  });

  it('answers an oversized header line with a JSON 431, never an HTML page', async () => {
    const nginx = await freshNginx();
    const answer = await raw(nginx, `GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(90_000)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431/);
    expect(answer).toMatch(/\r\nContent-Type: application\/json/i);
    expect(answer).not.toMatch(/<html/i);
    expect(answer).toContain('{"error":"headers_too_large"');
  });

  it.each([
    [413, 'payload_too_large', `POST /api/devices/x/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n${'a'.repeat(20_000)}`],
    [414, 'uri_too_long', `GET /events?devices=${'a'.repeat(90_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
    [431, 'headers_too_large', `GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(90_000)}\r\n\r\n`],
  ])('closes the connection after its JSON %i, saying so in exactly one Connection header', async (status, error, head) => {
    const nginx = await freshNginx();
    const answer = await raw(nginx, head);
    const headers = answer.slice(0, answer.indexOf('\r\n\r\n'));
    expect(headers).toMatch(new RegExp(`^HTTP/1\\.1 ${status}`));
    expect(headers.match(/^connection:.*$/gim)).toEqual(['Connection: close']);
    expect(answer).toContain(`{"error":"${error}"`);
  });

  it('does not blame a single header when the 431 may be for their sum', async () => {
    const nginx = await freshNginx();
    // Two header lines of 50 KB: each below the 80 KiB line limit, together past what nginx holds.
    const answer = await raw(nginx, `GET /api/devices HTTP/1.1\r\nHost: x\r\nX-A: ${'a'.repeat(50_000)}\r\nX-B: ${'b'.repeat(50_000)}\r\nX-C: ${'c'.repeat(50_000)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: string; message: string };
    expect(body.error).toBe('headers_too_large');
    expect(body.message).not.toMatch(/\bA request header is\b/i);
    expect(body.message).toMatch(/headers/i);
  });

  it('passes the same long filter straight to the service too (its head limit is above nginx\'s)', async () => {
    const ids = longIds(MAX_FILTER_DEVICES, real);
    const stream = new SseCollector(`${svc.url}/events?${ids.map((id) => `device=${id}`).join('&')}`);
    try {
      await stream.waitFor((e) => e.type === 'snapshot', 'snapshot from the service');
    } finally {
      stream.close();
    }
  });
});

describe('API rate limit per client address', () => {
  it('lets normal use through: 30 requests one after another', async () => {
    const nginx = await freshNginx();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i += 1) {
      const res = await fetch(`${nginx.url}/api/devices`);
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  });

  it('limits sign-in attempts per address far below the API limit, and only POSTs of /api/session', async () => {
    const nginx = await freshNginx();
    const statuses: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      const res = await fetch(`${nginx.url}/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"user":"x","password":"y"}' });
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    // This service has no users (404 auth_off): nginx's own 429 is what is counted here. Five at
    // once plus one of the 10 a minute pass; the rest are refused before they reach the service.
    expect(statuses.filter((s) => s !== 429)).toHaveLength(6);
    expect(statuses.slice(6)).toEqual([429, 429, 429, 429]);
    // Other API requests from the same address, GET /api/session included, are not held back.
    expect((await fetch(`${nginx.url}/api/devices`)).status).toBe(200);
    expect((await fetch(`${nginx.url}/api/session`)).status).toBe(200);
  });

  it('answers a burst beyond the limit with a JSON 429 and Retry-After, and /events is not counted', async () => {
    const nginx = await freshNginx();
    const answers = await Promise.all(Array.from({ length: 150 }, async () => {
      const res = await fetch(`${nginx.url}/api/devices`);
      return { status: res.status, retryAfter: res.headers.get('retry-after'), type: res.headers.get('content-type'), text: await res.text() };
    }));
    const limited = answers.filter((a) => a.status === 429);
    const served = answers.filter((a) => a.status === 200);
    // 40 of burst and a few more at 20 per second; the rest are refused.
    expect(served.length).toBeGreaterThanOrEqual(40);
    expect(limited.length).toBeGreaterThan(50);
    expect(served.length + limited.length).toBe(150);
    for (const a of limited) {
      expect(a.type).toMatch(/^application\/json/);
      expect(a.retryAfter).toBe('1');
      expect(JSON.parse(a.text)).toMatchObject({ error: 'rate_limited', message: expect.any(String) });
    }
    // The address is over its API limit, yet its streams open (they have their own limit).
    const stream = new SseCollector(`${nginx.url}/events`);
    try {
      await stream.waitFor((e) => e.type === 'snapshot', 'snapshot while the API is limited');
    } finally {
      stream.close();
    }
  });
});
