import { describe, expect, it } from 'vitest';
import { isolation } from '../helpers/service.js';
import type { SseCollector } from '../helpers/sse-client.js';
import { metric, withBrokerAndService, type TestService as Svc } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

// What a holder of the device login can cost the service: devices it invents are admitted at a
// capped rate and forgotten once gone; a device that floods cannot take the shared replay window.

const stage = withBrokerAndService();
const { service, collect } = stage;
/** Debug and up, parsed, into `lines`. */
const logInto = (lines: Record<string, any>[]) => ({ write: (line: string) => void lines.push(JSON.parse(line)) });

const status = (state: string, ts: number | undefined = Date.now()) => JSON.stringify({ state, ts });
const known = async (svc: Svc, id: string) => (await fetch(`${svc.url}/api/devices/${id}`)).status === 200;

describe('forgetting devices', () => {
  it('forgets a device unheard of for DEVICE_FORGET_AFTER_S whatever it claims (offline, or a retained online with no will), keeps one that talks, and counts it', async () => {
    const svc = await service('forget', { DEVICE_FORGET_AFTER_S: '1' });
    const p = svc.prefix;
    await stage.publisher.publishAsync(`${p}/stays/status`, status('online'), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/leaves/status`, status('online'), { qos: 1 });
    await stage.publisher.publishAsync(`${p}/leaves/status`, JSON.stringify({ state: 'offline' }), { qos: 1 });
    // Claims online for ever: retained, and the publisher has no last will for this id.
    await stage.publisher.publishAsync(`${p}/claims/status`, JSON.stringify({ state: 'online' }), { qos: 1, retain: true });
    await eventually(() => svc.service.store.get('leaves')?.state === 'offline' && svc.service.store.get('claims')?.state === 'online', 'offline and claiming');
    const wentOffline = Date.now();
    let seq = 0;
    const talking = setInterval(() => {
      seq += 1;
      stage.publisher.publish(`${p}/stays/telemetry`, JSON.stringify({ ts: Date.now(), seq, metrics: { t: seq } }), { qos: 1 });
    }, 200);
    try {
      await eventually(async () => !(await known(svc, 'leaves')) && !(await known(svc, 'claims')), 'both forgotten', 5_000);
      // Not before its time: at least a second after we saw it go offline.
      expect(Date.now() - wentOffline).toBeGreaterThanOrEqual(1_000);
      expect(await known(svc, 'stays')).toBe(true);
    } finally {
      clearInterval(talking);
    }
    expect(await metric(svc.url, 'devices_forgotten_total')).toBe(2);
    expect(await metric(svc.url, 'devices_known')).toBe(1);
    expect(svc.service.store.online).toBe(1);
    // It comes back with its next message, as a new device.
    await stage.publisher.publishAsync(`${p}/leaves/status`, status('online'), { qos: 1 });
    await eventually(async () => known(svc, 'leaves'), 'known again');
    await stage.publisher.publishAsync(`${p}/claims/status`, '', { qos: 1, retain: true });
  });

  it('an empty retained status (the operator clearing it) forgets the device at once and is never bad_json', async () => {
    const lines: Record<string, any>[] = [];
    const svc = await service('cleared', { LOG_LEVEL: 'debug' }, { logStream: logInto(lines) });
    const p = `${svc.prefix}/retired`;
    await stage.publisher.publishAsync(`${p}/status`, status('online'), { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { t: 1 } }), { qos: 1, retain: true });
    await eventually(async () => known(svc, 'retired'), 'known');
    const client = collect(`${svc.url}/events`);
    await client.waitFor((e) => e.type === 'snapshot' && e.data.devices.some((d: any) => d.id === 'retired'), 'snapshot with the device');
    await stage.publisher.publishAsync(`${p}/telemetry`, '', { qos: 1, retain: true });
    await stage.publisher.publishAsync(`${p}/status`, '', { qos: 1, retain: true });
    await eventually(async () => !(await known(svc, 'retired')), 'forgotten');
    expect(await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_json"}')).toBe(0);
    expect(await metric(svc.url, 'devices_forgotten_total')).toBe(1);
    expect(lines.filter((l) => l.msg === 'mqtt message rejected')).toEqual([]);
    expect(lines.filter((l) => l.msg?.startsWith('empty mqtt payload')).map((l) => [l.level, l.kind])).toEqual([[20, 'telemetry'], [20, 'status']]);
    expect(svc.service.store.online).toBe(0);
    // A new stream's snapshot no longer lists it.
    const fresh = collect(`${svc.url}/events`);
    const snapshot = await fresh.waitFor((e) => e.type === 'snapshot', 'a new snapshot');
    expect(snapshot.data.devices.map((d: any) => d.id)).not.toContain('retired');
  });
});

describe('admission of new devices', () => {
  it('admits new ids from live messages at DEVICE_ADMIT_RATE after the burst, counts the rest, logs one summary line', async () => {
    const ids = isolation('admit');
    // The fleet the broker already holds (retained statuses) is exempt: it arrives on our subscribe.
    for (let i = 0; i < 20; i += 1) await stage.publisher.publishAsync(`${ids.MQTT_TOPIC_PREFIX}/fleet-${i}/status`, status('online'), { qos: 1, retain: true });
    const lines: Record<string, any>[] = [];
    const svc = await service('admit', { DEVICE_ADMIT_RATE: '0.01', DEVICE_ADMIT_BURST: '3', LOG_LEVEL: 'debug' }, { ids, logStream: logInto(lines) });
    await eventually(() => svc.service.store.size === 20, 'the whole retained fleet admitted', 5_000, () => svc.service.store.size);
    for (let i = 0; i < 50; i += 1) {
      await stage.publisher.publishAsync(`${svc.prefix}/fake-${i}/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { t: 1 } }), { qos: 1 });
    }
    await eventually(async () => (await metric(svc.url, 'mqtt_messages_rejected_total{reason="admission"}')) === 47, '47 refused', 5_000);
    expect(svc.service.store.size).toBe(23);
    // Known devices are never refused.
    await stage.publisher.publishAsync(`${svc.prefix}/fake-0/telemetry`, JSON.stringify({ ts: Date.now(), seq: 2, metrics: { t: 2 } }), { qos: 1 });
    await eventually(() => svc.service.store.get('fake-0')?.telemetry?.seq === 2, 'fake-0 goes on');
    const refusals = lines.filter((l) => l.msg === 'mqtt message rejected' && l.reason === 'admission');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]!.detail).toContain('fake-3');
  });
});

describe('logging what strangers send', () => {
  it('bad messages under many invented ids log one summary line a minute; a known device still gets its own', async () => {
    const lines: Record<string, any>[] = [];
    const svc = await service('badids', { LOG_LEVEL: 'debug' }, { logStream: logInto(lines) });
    await stage.publisher.publishAsync(`${svc.prefix}/real/status`, status('online'), { qos: 1 });
    await eventually(async () => known(svc, 'real'), 'the real device known');
    for (let i = 0; i < 50; i += 1) await stage.publisher.publishAsync(`${svc.prefix}/junk-${i}/telemetry`, 'not json', { qos: 1 });
    await stage.publisher.publishAsync(`${svc.prefix}/real/telemetry`, 'not json either', { qos: 1 });
    await eventually(async () => (await metric(svc.url, 'mqtt_messages_rejected_total{reason="bad_json"}')) === 51, '51 counted', 5_000);
    const logged = lines.filter((l) => l.msg === 'mqtt message rejected' && l.reason === 'bad_json');
    expect(logged.map((l) => l.device)).toEqual(['junk-0', 'real']);
  });
});

describe('per-device rate limit', () => {
  async function flood(svc: Svc, count: number): Promise<void> {
    const base = Date.now();
    for (let seq = 1; seq < count; seq += 1) {
      stage.publisher.publish(`${svc.prefix}/flood/telemetry`, JSON.stringify({ ts: base + seq, seq, metrics: { v: seq } }), { qos: 0 });
    }
    await stage.publisher.publishAsync(`${svc.prefix}/flood/telemetry`, JSON.stringify({ ts: base + count, seq: count, metrics: { v: count } }), { qos: 1 });
    await eventually(() => svc.service.store.get('flood')?.telemetry?.seq === count, 'the flood taken in', 20_000);
  }

  /** 12,000 warning alerts of five types from one device, as fast as the publisher goes. */
  async function alertFlood(svc: Svc, count = 12_000): Promise<void> {
    const base = Date.now();
    const alert = (seq: number) => JSON.stringify({ ts: base + seq, seq, type: `x${seq % 5}`, severity: 'warning', message: `m${seq}` });
    for (let seq = 1; seq < count; seq += 1) stage.publisher.publish(`${svc.prefix}/flood/events`, alert(seq), { qos: 0 });
    await stage.publisher.publishAsync(`${svc.prefix}/flood/events`, alert(count), { qos: 1 });
    await eventually(() => svc.service.store.get('flood')?.alerts.at(-1)?.seq === count, 'the alert flood taken in', 20_000);
  }

  /** 12,000 status flips (online/offline, increasing ts) from one device. */
  async function statusFlood(svc: Svc, count = 12_000): Promise<void> {
    const base = Date.now();
    for (let i = 1; i < count; i += 1) stage.publisher.publish(`${svc.prefix}/flood/status`, status(i % 2 ? 'online' : 'offline', base + i), { qos: 0 });
    await stage.publisher.publishAsync(`${svc.prefix}/flood/status`, status('offline', base + count), { qos: 1 });
    await eventually(() => svc.service.store.get('flood')?.stateTs === base + count, 'the status flood taken in', 20_000);
  }

  /** A client filtered to the quiet device goes away, a flood passes, the quiet device raises an alert; the client comes back. */
  async function awayDuringFlood(svc: Svc, during: (svc: Svc) => Promise<void> = (s) => flood(s, 10_000)): Promise<SseCollector> {
    const q = `${svc.prefix}/quiet`;
    const before = collect(`${svc.url}/events?device=quiet`);
    await before.waitFor((e) => e.type === 'snapshot', 'snapshot');
    await stage.publisher.publishAsync(`${q}/telemetry`, JSON.stringify({ ts: Date.now(), seq: 1, metrics: { t: 1 } }), { qos: 1 });
    const last = await before.waitFor((e) => e.type === 'telemetry', 'the quiet device\'s reading');
    before.close();
    const away = Date.now();
    await during(svc);
    await stage.publisher.publishAsync(`${q}/events`, JSON.stringify({ ts: Date.now(), seq: 1, type: 'leak', severity: 'critical', message: 'water leak' }), { qos: 1 });
    await eventually(() => svc.service.store.get('quiet')?.alarms.length === 1, 'the alert taken in');
    // Away at least 2 s, as in the finding.
    while (Date.now() - away < 2_000) await new Promise((r) => setTimeout(r, 50));
    const back = collect(`${svc.url}/events?device=quiet`, { 'Last-Event-ID': last.id });
    await back.waitFor((e) => e.type === 'alert' || e.type === 'reset', 'the resumed stream\'s first event', 10_000);
    return back;
  }

  it('one device flooding 10,000 messages does not shorten a quiet device\'s resume: no reset, its critical alert arrives', { timeout: 60_000 }, async () => {
    const svc = await service('throttle', { SSE_REPLAY_SIZE: '500', DEVICE_MAX_MSG_RATE: '20', DEVICE_MSG_BURST: '20' });
    const watcher = collect(`${svc.url}/events?device=flood`);
    await watcher.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const back = await awayDuringFlood(svc);
    expect(back.of('reset')).toEqual([]);
    expect(back.of('alert').map((e) => e.data)).toMatchObject([{ device: 'quiet', severity: 'critical', message: 'water leak' }]);
    const throttled = await metric(svc.url, 'telemetry_throttled_total');
    expect(throttled).toBeGreaterThan(1_000);
    // Conflated, not lost: the newest value reaches the stream once the budget allows.
    await watcher.waitFor((e) => e.type === 'telemetry' && e.data.seq === 10_000, 'the newest flood value streamed', 5_000);
    expect(watcher.of('telemetry').length).toBeLessThan(500);
    console.info(`flood of 10,000: ${throttled} throttled, ${watcher.of('telemetry').length} streamed, quiet client resumed without reset`);
  });

  it('without the limit the same flood overruns the replay window (the case the limit exists for)', { timeout: 60_000 }, async () => {
    const svc = await service('unthrottled', { SSE_REPLAY_SIZE: '500', DEVICE_MAX_MSG_RATE: '0' });
    const back = await awayDuringFlood(svc);
    expect(back.of('reset')).toHaveLength(1);
    expect(await metric(svc.url, 'telemetry_throttled_total')).toBe(0);
  });

  it('one device flooding 12,000 alerts does not shorten a quiet device\'s resume; its own state keeps every alarm', { timeout: 60_000 }, async () => {
    const svc = await service('alert-flood', { SSE_REPLAY_SIZE: '500' });
    const watcher = collect(`${svc.url}/events?device=flood&types=event`);
    await watcher.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const back = await awayDuringFlood(svc, alertFlood);
    expect(back.of('reset')).toEqual([]);
    expect(back.of('alert').map((e) => e.data)).toMatchObject([{ device: 'quiet', severity: 'critical', message: 'water leak' }]);
    // Nothing lost from the state: five active alarms, the newest alerts in the recent window.
    const flooding = svc.service.store.get('flood')!;
    expect(flooding.alarms.map((a) => a.type).sort()).toEqual(['x0', 'x1', 'x2', 'x3', 'x4']);
    expect(flooding.alerts.at(-1)).toMatchObject({ seq: 12_000, message: 'm12000' });
    const throttled = await metric(svc.url, 'events_throttled_total{kind="alert"}');
    expect(throttled).toBeGreaterThan(10_000);
    // Conflated, not lost: the newest alert streams once the budget allows.
    await watcher.waitFor((e) => e.type === 'alert' && e.data.seq === 12_000, 'the newest flood alert streamed', 5_000);
    expect(watcher.of('alert').length).toBeLessThan(500);
    // Over budget, a critical then its "back to normal": both stream, the critical is not conflated away.
    const t = Date.now();
    stage.publisher.publish(`${svc.prefix}/flood/events`, JSON.stringify({ ts: t, seq: 12_001, type: 'x0', severity: 'critical', message: 'critical over budget' }), { qos: 1 });
    for (let seq = 12_002; seq < 12_200; seq += 1) {
      stage.publisher.publish(`${svc.prefix}/flood/events`, JSON.stringify({ ts: t + seq, seq, type: 'x0', severity: 'info', message: 'back to normal' }), { qos: 0 });
    }
    await stage.publisher.publishAsync(`${svc.prefix}/flood/events`, JSON.stringify({ ts: t + 12_200, seq: 12_200, type: 'x0', severity: 'info', message: 'back to normal' }), { qos: 1 });
    await watcher.waitFor((e) => e.type === 'alert' && e.data.seq === 12_200, 'the newest info streamed', 5_000);
    const x0 = watcher.of('alert').filter((e) => e.data.seq > 12_000).map((e) => `${e.data.severity}:${e.data.seq}`);
    expect(x0[0]).toBe('critical:12001');
    expect(x0.at(-1)).toBe('info:12200');
    expect(svc.service.store.get('flood')!.alarms.map((a) => a.type)).not.toContain('x0');
    console.info(`alert flood of 12,000: ${throttled} throttled, ${watcher.of('alert').length} streamed, quiet client resumed without reset`);
  });

  it('one device flipping its status 12,000 times does not shorten a quiet device\'s resume; the newest status streams', { timeout: 60_000 }, async () => {
    const svc = await service('status-flood', { SSE_REPLAY_SIZE: '500' });
    const watcher = collect(`${svc.url}/events?device=flood&types=status`);
    await watcher.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const back = await awayDuringFlood(svc, statusFlood);
    expect(back.of('reset')).toEqual([]);
    expect(back.of('alert').map((e) => e.data)).toMatchObject([{ device: 'quiet', severity: 'critical', message: 'water leak' }]);
    const last = svc.service.store.get('flood')!;
    expect(last.state).toBe('offline');
    const throttled = await metric(svc.url, 'events_throttled_total{kind="status"}');
    expect(throttled).toBeGreaterThan(10_000);
    await watcher.waitFor((e) => e.type === 'status' && e.data.ts === last.stateTs, 'the newest status streamed', 5_000);
    expect(watcher.of('status').at(-1)!.data.state).toBe('offline');
    expect(watcher.of('status').length).toBeLessThan(500);
    console.info(`status flood of 12,000: ${throttled} throttled, ${watcher.of('status').length} streamed, quiet client resumed without reset`);
  });

  it('without the event limit the same alert flood overruns the replay window (the case the limit exists for)', { timeout: 60_000 }, async () => {
    const svc = await service('alerts-unthrottled', { SSE_REPLAY_SIZE: '500', DEVICE_MAX_EVENT_RATE: '0' });
    const back = await awayDuringFlood(svc, alertFlood);
    expect(back.of('reset')).toHaveLength(1);
    expect(await metric(svc.url, 'events_throttled_total{kind="alert"}')).toBe(0);
  });

  it('without the event limit the same status flood overruns the replay window', { timeout: 60_000 }, async () => {
    const svc = await service('status-unthrottled', { SSE_REPLAY_SIZE: '500', DEVICE_MAX_EVENT_RATE: '0' });
    const back = await awayDuringFlood(svc, statusFlood);
    expect(back.of('reset')).toHaveLength(1);
    expect(await metric(svc.url, 'events_throttled_total{kind="status"}')).toBe(0);
  });

  it('the telemetry limit never throttles alerts or status; within DEVICE_EVENT_BURST every one streams', async () => {
    const svc = await service('alerts-free', { DEVICE_MAX_MSG_RATE: '1', DEVICE_MSG_BURST: '1', DEVICE_EVENT_BURST: '200' });
    const client = collect(`${svc.url}/events?device=loud&types=event,status`);
    await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const t = Date.now();
    for (let seq = 1; seq <= 100; seq += 1) {
      stage.publisher.publish(`${svc.prefix}/loud/events`, JSON.stringify({ ts: t + seq, seq, type: `x${seq % 5}`, severity: 'warning', message: 'm' }), { qos: 1 });
      stage.publisher.publish(`${svc.prefix}/loud/status`, status(seq % 2 ? 'online' : 'offline', t + seq), { qos: 1 });
    }
    await client.waitForCount('alert', 100, 10_000);
    await client.waitForCount('status', 100, 10_000);
    expect(await metric(svc.url, 'telemetry_throttled_total')).toBe(0);
    expect(await metric(svc.url, 'events_throttled_total{kind="alert"}')).toBe(0);
    expect(await metric(svc.url, 'events_throttled_total{kind="status"}')).toBe(0);
  });
});
