import { describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { MAX_DEVICE_PAGE } from '../../src/protocol.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { isolation, startService } from '../helpers/service.js';
import { metric, withBrokerAndService } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

const stage = withBrokerAndService();
const { cleanup, service, collect } = stage;

describe('gateway service with a real Mosquitto', () => {
  it('delivers a published telemetry message to an EventSource client as a telemetry event', async () => {
    const svc = await service('telemetry');
    const client = collect(`${svc.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const ts = Date.now();
    await stage.publisher.publishAsync(`${svc.prefix}/pump-1/telemetry`, telemetry(1, { pressure: 2.5 }, ts), { qos: 1 });
    const event = await client.waitFor((e) => e.type === 'telemetry', 'telemetry event');
    expect(event.data).toEqual({ device: 'pump-1', ts, seq: 1, metrics: { pressure: 2.5 } });
    expect(event.id).toMatch(new RegExp(`^${svc.service.hub.instanceId}-\\d+$`));
  });

  it('answers /events with the streaming headers and a jittered retry before the snapshot', async () => {
    const svc = await service('headers');
    const controller = new AbortController();
    const res = await fetch(`${svc.url}/events`, { signal: controller.signal, headers: { 'Accept-Encoding': 'gzip' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-cache, no-transform');
    expect(res.headers.get('x-accel-buffering')).toBe('no');
    expect(res.headers.get('content-encoding')).toBeNull();
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    const text = Buffer.from(value!).toString('utf8');
    controller.abort();
    expect(text).toMatch(/^retry: \d+\n\nevent: snapshot\nid: \S+\ndata: \{"devices":\[\],"mqtt":"up"\}\n\n/);
    const retry = Number(/^retry: (\d+)/.exec(text)![1]);
    expect(retry).toBeGreaterThanOrEqual(1500);
    expect(retry).toBeLessThanOrEqual(4500);
  });

  it('shows the retained status of a device in the snapshot of a new stream', async () => {
    const svc = await service('retained');
    const ts = Date.now();
    await stage.publisher.publishAsync(`${svc.prefix}/valve-2/status`, JSON.stringify({ state: 'online', ts }), { qos: 1, retain: true });
    await eventually(() => svc.service.store.has('valve-2'), 'valve-2 known');
    const client = collect(`${svc.url}/events`);
    const snapshot = await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    expect(snapshot.data.devices).toEqual([expect.objectContaining({ id: 'valve-2', state: 'online', stateTs: ts, lastSeen: expect.any(Number), telemetry: null })]);
    await stage.publisher.publishAsync(`${svc.prefix}/valve-2/status`, '', { qos: 1, retain: true }); // clear retained
  });

  it('filters streams by device and type, and refuses bad filters with a JSON 400', async () => {
    const svc = await service('filters');
    const client = collect(`${svc.url}/events?device=a&types=event`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const ts = Date.now();
    await stage.publisher.publishAsync(`${svc.prefix}/b/events`, JSON.stringify({ ts, seq: 1, type: 'x', severity: 'info', message: 'b' }), { qos: 1 });
    await stage.publisher.publishAsync(`${svc.prefix}/a/telemetry`, telemetry(1), { qos: 1 });
    await stage.publisher.publishAsync(`${svc.prefix}/a/events`, JSON.stringify({ ts, seq: 1, type: 'x', severity: 'critical', message: 'a' }), { qos: 1 });
    const alert = await client.waitFor((e) => e.type === 'alert', 'alert from a');
    expect(alert.data).toMatchObject({ device: 'a', severity: 'critical', message: 'a' });
    expect(client.events.map((e) => e.type)).toEqual(['snapshot', 'alert']);

    const res = await fetch(`${svc.url}/events?types=nope`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: 'bad_types', message: expect.stringContaining('nope') });
  });

  it('replays exactly the missed events after Last-Event-ID, in order, without duplicates', async () => {
    const svc = await service('resume');
    const first = collect(`${svc.url}/events`);
    // Published before the stream is open, they would be folded into its snapshot instead.
    await first.waitFor((e) => e.type === 'snapshot', 'snapshot');
    for (let seq = 1; seq <= 3; seq += 1) {
      await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(seq), { qos: 1 });
    }
    const seen = await first.waitForCount('telemetry', 3);
    const lastId = seen[2]!.id;
    first.close();
    for (let seq = 4; seq <= 8; seq += 1) {
      await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(seq), { qos: 1 });
    }
    await eventually(() => svc.service.store.get('d1')?.telemetry?.seq === 8, 'seq 8 ingested');

    const resumed = collect(`${svc.url}/events`, { 'Last-Event-ID': lastId });
    const replayed = await resumed.waitForCount('telemetry', 5);
    expect(replayed.map((e) => e.data.seq)).toEqual([4, 5, 6, 7, 8]);
    expect(resumed.of('snapshot')).toHaveLength(0);
    expect(resumed.of('reset')).toHaveLength(0);
    await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(9), { qos: 1 });
    await resumed.waitForCount('telemetry', 6);
    expect(resumed.of('telemetry').map((e) => e.data.seq)).toEqual([4, 5, 6, 7, 8, 9]);
    expect(await metric(svc.url, 'sse_replayed_events_total')).toBe(5);

    // The polyfill path: the same position as a query parameter.
    const viaQuery = collect(`${svc.url}/events?lastEventId=${encodeURIComponent(lastId)}`);
    expect((await viaQuery.waitForCount('telemetry', 6)).map((e) => e.data.seq)).toEqual([4, 5, 6, 7, 8, 9]);
  });

  it('answers an id from another instance with reset, then a fresh snapshot', async () => {
    const svc = await service('reset');
    await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(1), { qos: 1 });
    await eventually(() => svc.service.store.has('d1'), 'd1 known');
    const client = collect(`${svc.url}/events`, { 'Last-Event-ID': 'zzzzotherinstance-42' });
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    expect(client.events.map((e) => e.type)).toEqual(['reset', 'snapshot']);
    expect(client.events[0]!.data).toEqual({ reason: 'other-instance' });
    expect(client.events[1]!.data.devices.map((d: { id: string }) => d.id)).toEqual(['d1']);
    expect(await metric(svc.url, 'sse_resets_total')).toBe(1);
  });

  it('answers an id that fell out of the replay buffer with reset, then a snapshot', async () => {
    const svc = await service('expired', { SSE_REPLAY_SIZE: '2' });
    const first = collect(`${svc.url}/events`);
    await first.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(1), { qos: 1 });
    const [only] = await first.waitForCount('telemetry', 1);
    first.close();
    for (let seq = 2; seq <= 5; seq += 1) await stage.publisher.publishAsync(`${svc.prefix}/d1/telemetry`, telemetry(seq), { qos: 1 });
    await eventually(() => svc.service.store.get('d1')?.telemetry?.seq === 5, 'seq 5 ingested');
    const client = collect(`${svc.url}/events`, { 'Last-Event-ID': only!.id });
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    expect(client.events[0]).toMatchObject({ type: 'reset', data: { reason: 'expired' } });
    expect(client.events[1]!.data.devices[0].telemetry.seq).toBe(5);
  });

  it('never lets malformed or oversized payloads reach a client, and counts them by reason', async () => {
    const svc = await service('malformed', { MQTT_MAX_PAYLOAD_BYTES: '1024' });
    const client = collect(`${svc.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const p = svc.prefix;
    await stage.publisher.publishAsync(`${p}/d1/telemetry`, '{not json', { qos: 1 });
    await stage.publisher.publishAsync(`${p}/d1/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { t: 'hot' } }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/d1/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { t: 1 }, pad: 'x'.repeat(2000) }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/bad.id/telemetry`, telemetry(1), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/d1/events`, JSON.stringify({ ts: Date.now(), seq: 1, type: 'x', severity: 'panic', message: '' }), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/d1/telemetry`, telemetry(2), { qos: 1 }); // a good one after the bad
    await client.waitFor((e) => e.type === 'telemetry', 'the valid telemetry');
    expect(client.events.map((e) => e.type)).toEqual(['snapshot', 'telemetry']);
    expect(client.events[1]!.data.seq).toBe(2);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_json"}')).toBe(1);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_shape"}')).toBe(2);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="too_large"}')).toBe(1);
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_topic"}')).toBe(1);
  });

  it('serves devices over the JSON API with JSON errors for unknown ones and routes', async () => {
    const svc = await service('api');
    await stage.publisher.publishAsync(`${svc.prefix}/m1/telemetry`, telemetry(1, { rpm: 1200 }), { qos: 1 });
    await eventually(() => svc.service.store.has('m1'), 'm1 known');
    const listed = await fetch(`${svc.url}/api/devices`);
    expect(listed.headers.get('content-type')).toContain('application/json');
    const list = (await listed.json()) as { devices: unknown[]; next: string | null };
    expect(list).toEqual({
      devices: [expect.objectContaining({ id: 'm1', state: 'unknown', telemetry: expect.objectContaining({ metrics: { rpm: 1200 } }) })],
      next: null,
    });
    const one = await fetch(`${svc.url}/api/devices/m1`);
    expect(one.status).toBe(200);
    expect(one.headers.get('content-type')).toContain('application/json');
    expect(await one.json()).toEqual(list.devices[0]);
    const missing = await fetch(`${svc.url}/api/devices/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'unknown_device' });
    const bad = await fetch(`${svc.url}/api/devices/a%20b`);
    expect(bad.status).toBe(400);
    const unknown = await fetch(`${svc.url}/nothing/here`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: 'not_found', message: 'No such resource.' });
    const wrongMethod = await fetch(`${svc.url}/api/devices`, { method: 'DELETE' });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('GET');
    expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(200);
  });

  it('sends keepalive comments on idle streams at the heartbeat interval, each carrying the stream position', async () => {
    const svc = await service('heartbeat', { SSE_HEARTBEAT_MS: '100' });
    const controller = new AbortController();
    const res = await fetch(`${svc.url}/events`, { signal: controller.signal });
    const reader = res.body!.getReader();
    let text = '';
    const started = Date.now();
    const beat = /: keepalive\n(?:event: position\nid: ([^\n]+)\ndata: \{\}\n)?\n/g;
    while ((text.match(beat) ?? []).length < 3) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
    }
    controller.abort();
    const beats = [...text.matchAll(beat)];
    expect(beats).toHaveLength(3);
    expect(Date.now() - started).toBeLessThan(2_000);
    // Nothing was published after the snapshot: every heartbeat names the snapshot's position.
    const snapshotId = /event: snapshot\nid: ([^\n]+)\n/.exec(text)?.[1];
    expect(snapshotId).toMatch(/^[0-9a-z]+-\d+$/);
    expect(beats.map((b) => b[1])).toEqual([snapshotId, snapshotId, snapshotId]);
  });

  it('pages GET /api/devices in id order with a limit and an after cursor, and refuses bad ones as JSON', async () => {
    const svc = await service('pages');
    const ids = ['p-c', 'p-a', 'p-e', 'p-b', 'p-d'];
    for (const [i, id] of ids.entries()) await stage.publisher.publishAsync(`${svc.prefix}/${id}/telemetry`, telemetry(i + 1, { n: i }), { qos: 1 });
    await eventually(() => ids.every((id) => svc.service.store.has(id)), 'all five known');
    const seen: string[] = [];
    let after: string | null = '';
    let pages = 0;
    while (after !== null && pages < 10) {
      const res = await fetch(`${svc.url}/api/devices?limit=2${after ? `&after=${after}` : ''}`);
      expect(res.status).toBe(200);
      const page = (await res.json()) as { devices: { id: string }[]; next: string | null };
      expect(page.devices.length).toBeLessThanOrEqual(2);
      seen.push(...page.devices.map((d) => d.id));
      after = page.next;
      if (after !== null) expect(after).toBe(page.devices.at(-1)!.id);
      pages += 1;
    }
    expect(seen).toEqual(['p-a', 'p-b', 'p-c', 'p-d', 'p-e']);
    expect(pages).toBe(3);
    // A cursor need not be a known id: the page starts after where it would sort.
    const between = (await (await fetch(`${svc.url}/api/devices?after=p-bb`)).json()) as { devices: { id: string }[] };
    expect(between.devices.map((d) => d.id)).toEqual(['p-c', 'p-d', 'p-e']);
    for (const query of ['limit=0', `limit=${MAX_DEVICE_PAGE + 1}`, 'limit=abc', 'limit=2.5', 'limit=', 'after=a%20b', 'after=']) {
      const res = await fetch(`${svc.url}/api/devices?${query}`);
      expect(res.status, query).toBe(400);
      expect(await res.json(), query).toMatchObject({ error: 'bad_query', message: expect.any(String) });
    }
    expect(await metric(svc.url, 'http_requests_total{method="GET",route="/api/devices",status="400"}')).toBe(7);
  });

  it('answers past SSE_MAX_CLIENTS with a 200 busy stream for browsers and a 503 for others', async () => {
    const svc = await service('busy', { SSE_MAX_CLIENTS: '1' });
    const first = collect(`${svc.url}/events`);
    await first.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const browser = await fetch(`${svc.url}/events`, { headers: { Accept: 'text/event-stream' } });
    expect(browser.status).toBe(200);
    expect(browser.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const body = await browser.text();
    const match = /^retry: (\d+)\n\nevent: busy\ndata: (.*)\n\n$/.exec(body);
    expect(match, body).not.toBeNull();
    expect(Number(match![1])).toBeGreaterThanOrEqual(7_500); // longer than a normal retry, jittered
    expect(JSON.parse(match![2]!)).toEqual({ retryMs: Number(match![1]), reason: 'capacity' });
    const plain = await fetch(`${svc.url}/events`);
    expect(plain.status).toBe(503);
    expect(plain.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await plain.json()).toMatchObject({ error: 'busy' });
    expect(await metric(svc.url, 'sse_connections_total{outcome="busy"}')).toBe(2);
  });

  it('learns every retained status again after a restart that kept its broker session', async () => {
    const ids = isolation('kept-session');
    const env = { MQTT_URL: stage.broker.url, ...ids };
    const first = await startService(env);
    const ts = Date.now();
    await stage.publisher.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/r1/status`, JSON.stringify({ state: 'online', ts }), { qos: 1, retain: true });
    await eventually(() => first.service.store.get('r1')?.state === 'online', 'r1 online in the first instance');
    await first.stop();
    // Same client id: the broker still holds the session, yet this process starts with no state.
    const second = await startService(env);
    cleanup.push(() => second.stop());
    await eventually(() => second.service.store.get('r1')?.state === 'online', 'r1 online in the second instance');
    expect(second.service.store.get('r1')?.stateTs).toBe(ts);
    await stage.publisher.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/r1/status`, '', { qos: 1, retain: true });
  });

  it('delivers QoS 1 messages published while the service was away once it is back', async () => {
    const ids = isolation('away');
    const env = { MQTT_URL: stage.broker.url, ...ids };
    const first = await startService(env);
    await first.stop(); // clean disconnect: the broker keeps the session and queues for it
    for (let seq = 1; seq <= 5; seq += 1) {
      await stage.publisher.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/d9/telemetry`, telemetry(seq), { qos: 1 });
    }
    const second = await startService(env);
    cleanup.push(() => second.stop());
    await eventually(() => second.service.store.get('d9')?.telemetry?.seq === 5, 'queued telemetry delivered', 10_000);
    // Every one of them went through the hub, in order: a stream from position 0 replays them.
    const client = collect(`${second.url}/events`, { 'Last-Event-ID': `${second.service.hub.instanceId}-0` });
    const replayed = await client.waitForCount('telemetry', 5);
    expect(replayed.map((e) => e.data.seq)).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('broker outage', () => {
  it('turns /readyz to 503 and sends upstream down while the broker is stopped, then recovers both', async () => {
    const own = await Mosquitto.start();
    cleanup.push(() => own.stop());
    const ids = isolation('outage');
    const svc = await startService({ MQTT_URL: own.url, ...ids });
    cleanup.push(() => svc.stop());
    const client = collect(`${svc.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');

    await own.stop();
    await client.waitFor((e) => e.type === 'upstream' && e.data.mqtt === 'down', 'upstream down');
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(503);
    expect(await metric(svc.url, 'mqtt_connected')).toBe(0);

    await own.restart();
    await client.waitFor((e) => e.type === 'upstream' && e.data.mqtt === 'up', 'upstream up', 15_000);
    expect((await fetch(`${svc.url}/readyz`)).status).toBe(200);
    expect(await metric(svc.url, 'mqtt_reconnects_total')).toBeGreaterThan(0);

    const pub = await connectPublisher(own.url);
    cleanup.push(() => pub.endAsync());
    await pub.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/d1/telemetry`, telemetry(1), { qos: 1 });
    await client.waitFor((e) => e.type === 'telemetry', 'telemetry after recovery');
  });
});
