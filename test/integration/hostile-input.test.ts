import { connect } from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_HEADER_BYTES } from '../../src/http/server.js';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { DEVICE_ID_MAX_CHARS, MAX_LAST_EVENT_ID } from '../../src/protocol.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { SseCollector } from '../helpers/sse-client.js';
import { parseAll } from '../helpers/sse-parser.js';
import { eventually } from '../helpers/wait.js';

// Bad input from every side: each is refused with a clear error, counted, and disturbs nothing else.

let broker: Mosquitto;
let publisher: MqttClient;
let svc: RunningService;
let prefix: string;
const logLines: Record<string, unknown>[] = [];
/** MQTT_MAX_PAYLOAD_BYTES here. */
const MAX_PAYLOAD = 4096;

beforeAll(async () => {
  broker = await Mosquitto.start();
  publisher = await connectPublisher(broker.url);
  const ids = isolation('hostile');
  prefix = ids.MQTT_TOPIC_PREFIX;
  svc = await startService(
    { MQTT_URL: broker.url, ...ids, LOG_LEVEL: 'warn', MQTT_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD) },
    { logStream: { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) } },
  );
});

afterAll(async () => {
  await svc?.stop();
  await publisher?.endAsync();
  await broker?.stop();
});

async function rejected(reason: string): Promise<number> {
  const text = await (await fetch(`${svc.url}/metrics`)).text();
  return Number(new RegExp(`^mqtt_messages_rejected_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
}

/** Sends raw bytes as an HTTP request and returns the raw answer. */
function rawRequest(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: svc.port, host: '127.0.0.1' }, () => socket.end(bytes));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer')));
  });
}

describe('hostile MQTT input', () => {
  it('keeps CR, LF and NUL in device strings inside one data line, never a new SSE field', async () => {
    const controller = new AbortController();
    const res = await fetch(`${svc.url}/events?types=event`, { signal: controller.signal });
    const reader = res.body!.getReader();
    const message = 'line1\r\nevent: reset\r\nid: forged\n\ndata: {"x":1}\r\0tail';
    await publisher.publishAsync(`${prefix}/inj/events`, JSON.stringify({ ts: Date.now(), seq: 1, type: 'inj', severity: 'critical', message }), { qos: 1 });
    let text = '';
    while (!text.includes('event: alert')) text += Buffer.from((await reader.read()).value!).toString('utf8');
    while (!text.endsWith('\n\n')) text += Buffer.from((await reader.read()).value!).toString('utf8');
    controller.abort();
    const parsed = parseAll(text);
    const alerts = parsed.events.filter((e) => e.type === 'alert');
    expect(alerts).toHaveLength(1);
    expect(parsed.events.map((e) => e.type)).toEqual(['snapshot', 'alert']);
    expect(JSON.parse(alerts[0]!.data).message).toBe(message);
    expect(alerts[0]!.lastEventId).toMatch(/^[0-9a-z]+-\d+$/);
  });

  it('drops invalid JSON, wrong shapes, huge payloads and bad ids, counted by reason, while valid traffic flows', async () => {
    const client = new SseCollector(`${svc.url}/events?types=telemetry`);
    try {
      await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
      const before = {
        json: await rejected('bad_json'),
        shape: await rejected('bad_shape'),
        large: await rejected('too_large'),
        topic: await rejected('bad_topic'),
      };
      const bad: [string, string | Buffer][] = [
        [`${prefix}/d1/telemetry`, '{"ts":'],
        [`${prefix}/d1/telemetry`, Buffer.from([0xff, 0xfe, 0x00])],
        [`${prefix}/d1/telemetry`, 'null'],
        [`${prefix}/d1/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1.5, metrics: { a: 1 } })],
        [`${prefix}/d1/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { a: 1e999 } })],
        [`${prefix}/d1/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { a: 1 }, pad: 'x'.repeat(MAX_PAYLOAD) })],
        [`${prefix}/d1/status`, JSON.stringify({ state: 'online\nevent: reset' })],
        [`${prefix}/${'x'.repeat(DEVICE_ID_MAX_CHARS + 1)}/telemetry`, telemetry(1)],
        [`${prefix}/a.b/telemetry`, telemetry(1)],
        [`${prefix}/d1/unknown-kind`, telemetry(1)],
      ];
      for (const [topic, payload] of bad) await publisher.publishAsync(topic, payload, { qos: 1 });
      await publisher.publishAsync(`${prefix}/d1/telemetry`, telemetry(1), { qos: 1 });
      await client.waitFor((e) => e.type === 'telemetry', 'the valid message');
      expect(client.events.map((e) => e.type)).toEqual(['snapshot', 'telemetry']);
      expect(await rejected('bad_json')).toBe(before.json + 2);
      expect(await rejected('bad_shape')).toBe(before.shape + 4);
      expect(await rejected('too_large')).toBe(before.large + 1);
      // The unknown kind is not subscribed to, so the broker never delivers it.
      expect(await rejected('bad_topic')).toBe(before.topic + 2);
    } finally {
      client.close();
    }
  });

  it('logs a flood of invalid messages from one device once, not once per message', async () => {
    // A known device: garbage under ids the service does not know shares one line per reason.
    await publisher.publishAsync(`${prefix}/flood/telemetry`, telemetry(1, { a: 1 }), { qos: 1 });
    await eventually(() => svc.service.store.has('flood'), 'the device known');
    const before = logLines.filter((l) => l.device === 'flood').length;
    for (let i = 0; i < 500; i += 1) publisher.publish(`${prefix}/flood/telemetry`, `garbage ${i}`, { qos: 0 });
    await publisher.publishAsync(`${prefix}/flood/telemetry`, 'last garbage', { qos: 1 });
    await eventually(async () => (await rejected('bad_json')) >= 501, 'the flood counted');
    expect(logLines.filter((l) => l.device === 'flood').length - before).toBe(1);
    expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
  });

  it('drops a QoS 1 redelivery of a message already seen', async () => {
    const ts = Date.now();
    await publisher.publishAsync(`${prefix}/dup/telemetry`, telemetry(7, { a: 1 }, ts), { qos: 1 });
    await eventually(() => svc.service.store.get('dup')?.telemetry?.seq === 7, 'first copy');
    const before = await rejected('duplicate');
    await publisher.publishAsync(`${prefix}/dup/telemetry`, telemetry(7, { a: 1 }, ts), { qos: 1 });
    await eventually(async () => (await rejected('duplicate')) === before + 1, 'second copy dropped');
  });
});

describe('hostile HTTP input', () => {
  it('answers bad stream queries with JSON 400s and opens no stream', async () => {
    for (const query of ['types=bogus', 'device=%00', 'devices=a,b%0Aevent:x', 'device=' + 'x'.repeat(DEVICE_ID_MAX_CHARS + 1)]) {
      const res = await fetch(`${svc.url}/events?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.headers.get('content-type')).toContain('application/json');
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toMatch(/^bad_/);
      expect(body.message.length).toBeGreaterThan(10);
    }
  });

  it('ignores query parameters it does not know (cache busters) instead of refusing the stream', async () => {
    const client = new SseCollector(`${svc.url}/events?_=1700000000&types=status`);
    try {
      await client.waitFor((e) => e.type === 'snapshot', 'snapshot despite the unknown parameter');
    } finally {
      client.close();
    }
  });

  it('treats a malformed Last-Event-ID as unknown (reset + snapshot) and a huge one as a 400', async () => {
    const client = new SseCollector(`${svc.url}/events`, { 'Last-Event-ID': '../../etc/passwd' });
    try {
      await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
      expect(client.events[0]).toMatchObject({ type: 'reset', data: { reason: 'invalid-id' } });
    } finally {
      client.close();
    }
    const huge = await fetch(`${svc.url}/events`, { headers: { 'Last-Event-ID': 'x'.repeat(MAX_LAST_EVENT_ID + 1) } });
    expect(huge.status).toBe(400);
    expect(await huge.json()).toMatchObject({ error: 'bad_last_event_id' });
  });

  it('answers oversized headers and malformed requests in the same JSON error shape', async () => {
    // The most nginx forwards (two 80 KiB header buffers, src/http/server.ts) is accepted...
    const nginxMost = await rawRequest(`GET /api/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: ${'a'.repeat(80_000)}\r\nX-B: ${'b'.repeat(80_000)}\r\n\r\n`);
    expect(nginxMost).toMatch(/^HTTP\/1\.1 200 /);
    // ...and past MAX_HEADER_BYTES the answer is a JSON 431.
    const tooLarge = await rawRequest(`GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(MAX_HEADER_BYTES)}\r\n\r\n`);
    expect(tooLarge).toMatch(/^HTTP\/1\.1 431 /);
    expect(tooLarge).toContain('{"error":"headers_too_large"');
    const injected = await rawRequest('GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Evil: a\rSet-Cookie: b\r\n\r\n');
    expect(injected).toMatch(/^HTTP\/1\.1 400 /);
    expect(injected).toContain('"error":"bad_request"');
    expect(injected).not.toContain('Set-Cookie');
    const garbage = await rawRequest('NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('never echoes a request id that is not a plain token', async () => {
    const res = await fetch(`${svc.url}/healthz`, { headers: { 'X-Request-Id': '<script>alert(1)</script>' } });
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const kept = await fetch(`${svc.url}/healthz`, { headers: { 'X-Request-Id': 'trace-123' } });
    expect(kept.headers.get('x-request-id')).toBe('trace-123');
  });

  it('keeps serving after all of it', async () => {
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(200);
    expect(svc.service.shuttingDown).toBe(false);
  });
});
