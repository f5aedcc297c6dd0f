import type { MqttClient } from 'mqtt';
import type { Browser } from 'playwright-core';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../../src/native/stack.js';
import { launchChromium } from '../helpers/browser.js';
import { deviceLogin } from '../helpers/devices.js';
import { connectPublisher, telemetry } from '../helpers/mqtt.js';
import { eventually } from '../helpers/wait.js';

// Ten EventSources in one page, one origin, through the native stack's nginx (HTTPS): over HTTP/2
// all ten are live; the same page over HTTP/1.1 (the same nginx, Chromium told not to speak
// HTTP/2) gets six connections per origin, and the seventh stream waits until one of them closes.

// Callbacks passed to page.evaluate run in the browser, not in Node.
declare const window: any;
declare const performance: any;
declare const EventSource: any;

const SOURCES = 10;
const DEVICE = 'h2-probe-1';
let stack: Stack;
let device: MqttClient;
let seq = 0;

beforeAll(async () => {
  stack = await startStack({
    // Streaming only: sign-in has its own e2e (dashboard.test.ts).
    auth: false,
    simulator: false,
    serviceEnv: { SSE_HEARTBEAT_MS: '2000', LOG_LEVEL: 'warn' },
    logDir: await mkdtemp(join(tmpdir(), 'e2e-h2-logs-')),
  });
  // A device of its own on the broker (each device has its own login).
  device = await connectPublisher(stack.urls.mqtt, await deviceLogin(stack.mosquitto, DEVICE));
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await stack?.stop();
});

interface PageState {
  protocol: string;
  /** Per source: its readyState, whether its snapshot came, and the readings it got. */
  sources: { state: number; snapshot: boolean; seqs: number[] }[];
}

/** Opens the page's origin and ten EventSources on it; returns a reader of their state. */
async function tenSources(browser: Browser): Promise<{ state: () => Promise<PageState>; close: (i: number) => Promise<void> }> {
  const page = await (await browser.newContext()).newPage();
  // A page of the same origin that opens no stream of its own (the dashboard would take a slot).
  await page.goto(`${stack.nginx.url}/healthz`);
  await page.evaluate(({ n, device: id }: { n: number; device: string }) => {
    window.sources = [];
    for (let i = 0; i < n; i += 1) {
      const es = new EventSource(`/events?device=${id}&types=telemetry&tab=${i}`);
      const entry = { es, snapshot: false, seqs: [] as number[] };
      es.addEventListener('snapshot', () => (entry.snapshot = true));
      es.addEventListener('telemetry', (e: any) => entry.seqs.push(JSON.parse(e.data).seq));
      window.sources.push(entry);
    }
  }, { n: SOURCES, device: DEVICE });
  return {
    state: () => page.evaluate(() => ({
      protocol: performance.getEntriesByType('navigation')[0].nextHopProtocol,
      sources: window.sources.map((s: any) => ({ state: s.es.readyState, snapshot: s.snapshot, seqs: [...s.seqs] })),
    })),
    close: (i: number) => page.evaluate((at: number) => window.sources[at].es.close(), i),
  };
}

/** Publishes one reading and waits until `live` sources have it (bounded). */
async function publishSeenBy(state: () => Promise<PageState>, live: number): Promise<{ seq: number; now: PageState }> {
  seq += 1;
  const mine = seq;
  await device.publishAsync(`devices/${DEVICE}/telemetry`, telemetry(mine), { qos: 1 });
  let now: PageState | undefined;
  await eventually(async () => {
    now = await state();
    return now.sources.filter((s) => s.seqs.includes(mine)).length >= live;
  }, `a reading seen by ${live} streams`, 10_000, () => now);
  return { seq: mine, now: now! };
}

describe('ten EventSources on one origin in Chromium', () => {
  it('needs the certificate trusted: a browser not told about it refuses the page (the local CA is no public one)', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await expect(page.goto(`${stack.nginx.url}/healthz`)).rejects.toThrow(/ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await browser.close();
    }
  });

  it('are all live over HTTP/2', async () => {
    const browser = await launchChromium(stack.tls.cert);
    try {
      const { state } = await tenSources(browser);
      await eventually(async () => (await state()).sources.every((s) => s.snapshot), 'ten snapshots', 10_000, state);
      const { seq: reading, now } = await publishSeenBy(state, SOURCES);
      expect(now.protocol).toBe('h2');
      expect(now.sources.map((s) => s.state)).toEqual(Array(SOURCES).fill(1)); // OPEN
      expect(now.sources.map((s) => s.seqs.includes(reading))).toEqual(Array(SOURCES).fill(true));
    } finally {
      await browser.close();
    }
  });

  it('over HTTP/1.1 (the control) leave the seventh stuck until one of the first six closes', async () => {
    const browser = await launchChromium(stack.tls.cert, ['--disable-http2']);
    try {
      const { state, close } = await tenSources(browser);
      await eventually(async () => (await state()).sources.filter((s) => s.snapshot).length === 6, 'six snapshots', 10_000, state);
      // A reading the six open streams all got: had the others been connected, they would have it too.
      const { seq: reading, now } = await publishSeenBy(state, 6);
      expect(now.protocol).toBe('http/1.1');
      expect(now.sources.map((s) => s.seqs.includes(reading))).toEqual([true, true, true, true, true, true, false, false, false, false]);
      expect(now.sources.slice(6).map((s) => [s.state, s.snapshot])).toEqual(Array(4).fill([0, false])); // CONNECTING, nothing yet
      // Queued, not failed: once the first closes, the seventh gets its connection and goes live.
      await close(0);
      await eventually(async () => (await state()).sources[6]!.snapshot, 'the seventh stream opening', 10_000, state);
      const after = await publishSeenBy(state, 6);
      expect(after.now.sources.map((s) => s.seqs.includes(after.seq))).toEqual([false, true, true, true, true, true, true, false, false, false]);
    } finally {
      await browser.close();
    }
  });
});
