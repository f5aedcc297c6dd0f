import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, BrowserContext, Page, Route } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import { loadSimConfig } from '../../src/simulator/config.js';
import { startFleet, type Fleet } from '../../src/simulator/fleet.js';
import { launchChromium } from '../helpers/browser.js';
import { ROOT } from '../helpers/built.js';
import { fleetCredentials } from '../helpers/devices.js';
import { eventually } from '../helpers/wait.js';
import { recordConnectionStates, signIn } from './page-steps.js';
import { connectProbe, type Probe } from './probe-device.js';

// The dashboard's history in a real browser, through the native stack's nginx: cards that open
// with the readings from before the page did and continue live with no seam, refilled after a
// reset, the device view's charts, marks and pointer, its keyboard use, a viewer refused another
// device's history, and the main thread's load with 100 devices × 4 metrics live.

declare const document: any;
declare const window: any;

const ARTIFACTS = join(ROOT, 'test-artifacts');
const DEVICES = 4;
const INTERVAL_MS = 1_000;
/**
 * Puts the page's store (web/app.js exports it) where the checks below read it. A string, sent as
 * it is: a callback's `import()` would be rewritten by the test runner's module transform.
 */
const exposeStore = (on: Page) => on.evaluate("import('/app.js').then((m) => { window.dashboardStore = m.store; })");
let stack: Stack;
let fleet: Fleet;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let openedAt = 0;
const pageProblems: string[] = [];

/** The admin's session cookie, to ask the service itself. */
let adminCookie = '';

beforeAll(async () => {
  stack = await startStack({
    simulator: false,
    logDir: await mkdtemp(join(tmpdir(), 'e2e-history-logs-')),
    serviceEnv: { SSE_RETRY_MS: '500', SSE_HEARTBEAT_MS: '2000' },
  });
  fleet = await startFleet(
    loadSimConfig({
      MQTT_URL: stack.urls.mqtt,
      SIM_CREDENTIALS_FILE: await fleetCredentials(stack.mosquitto, 'sim', DEVICES),
      SIM_DEVICES: String(DEVICES),
      SIM_INTERVAL_MS: String(INTERVAL_MS),
      SIM_ACK_DELAY_MS: '150',
    }),
    createLogger('warn', 'e2e-history-fleet'),
  );
  await fleet.waitForOnline(DEVICES, 15_000);
  const admin = stack.people.find((p) => p.name === 'admin')!;
  const res = await fetch(`${stack.urls.service}/api/session`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: admin.name, password: admin.password }),
  });
  adminCookie = res.headers.get('set-cookie')!.split(';')[0]!;
  // History to open with: several readings of every device before the page exists.
  await eventually(async () => ((await serviceSeries(fleet.devices[0]!, Date.now() - 60_000)).t.length >= 5 ? true : null),
    'five readings of the first device in the log', 15_000);
  browser = await launchChromium(stack.tls.cert);
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  watch(page, 'page');
  openedAt = Date.now();
  await page.goto(stack.urls.http);
  await signIn(stack, page, 'operator');
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
  await exposeStore(page);
  await recordConnectionStates(page);
}, 60_000);

afterAll(async () => {
  if (page) {
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'history-last.png'), fullPage: true }).catch(() => undefined);
  }
  await browser?.close();
  await fleet?.stop();
  await stack?.stop();
});

function watch(on: Page, name: string): void {
  on.on('pageerror', (err) => pageProblems.push(`uncaught (${name}): ${err.message}`));
  on.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) pageProblems.push(`csp (${name}): ${msg.text()}`);
  });
}

/** One metric of a device as the service's history holds it from `since` (device time). */
async function serviceSeries(device: string, since: number, metric = 'temperature'): Promise<{ t: number[]; v: number[] }> {
  const res = await fetch(`${stack.urls.service}/api/devices/${device}/history?since=${Math.floor(since)}&metrics=${metric}&points=2000`, { headers: { Cookie: adminCookie } });
  if (!res.ok) throw new Error(`history of ${device}: HTTP ${res.status}`);
  const body = (await res.json()) as { metrics: Record<string, { t: number[]; v: number[] }>; downsampled: boolean };
  expect(body.downsampled, 'the comparison needs every reading').toBe(false);
  return body.metrics[metric] ?? { t: [], v: [] };
}

/** A card's sparkline points as the page holds them (oldest first), and whether history filled it. */
function cardSeries(on: Page, device: string, metric = 'temperature'): Promise<{ t: number[]; v: number[]; filled: boolean } | null> {
  return on.evaluate(([d, m]) => {
    const model = window.dashboardStore.devices.get(d);
    const ring = model?.metrics.get(m)?.ring;
    if (!ring) return null;
    const t: number[] = [];
    const v: number[] = [];
    for (let k = 0; k < ring.length; k++) {
      const i = (ring.start + k) % ring.ts.length;
      t.push(ring.ts[i]);
      v.push(ring.values[i]);
    }
    return { t, v, filled: model.filled };
  }, [device, metric] as const);
}

/**
 * The card's points are exactly the service's readings over the same span: none missing (no
 * seam, no gap), none twice, no break marker.
 */
async function expectSeamless(device: string, from: number): Promise<{ t: number[]; v: number[] }> {
  const mine = await cardSeries(page, device);
  expect(mine, `${device}'s sparkline`).not.toBeNull();
  expect(mine!.v.some((x) => Number.isNaN(x)), `${device}'s sparkline has a break`).toBe(false);
  const first = mine!.t[0]!;
  const last = mine!.t.at(-1)!;
  expect(first, 'the sparkline reaches back as asked').toBeLessThanOrEqual(from);
  const theirs = await serviceSeries(device, first);
  const span = theirs.t.map((ts, i) => [ts, theirs.v[i]!] as const).filter(([ts]) => ts >= first && ts <= last);
  expect(mine!.t, `${device}: the page's points are the log's readings, each once`).toEqual(span.map(([ts]) => ts));
  expect(mine!.v).toEqual(span.map(([, v]) => v));
  return mine!;
}

const takeStates = (): Promise<string[]> => page.evaluate(() => window.connectionStates.splice(0));

describe('the dashboard with history', () => {
  it('opens every card with the readings from before the page opened, then continues live with no seam and no point twice', async () => {
    const id = fleet.devices[0]!;
    await page.waitForFunction((d) => window.dashboardStore.devices.get(d)?.filled === true, id, { timeout: 10_000 });
    const before = await cardSeries(page, id);
    expect(before!.t.filter((ts) => ts < openedAt).length, 'points from before the page opened').toBeGreaterThanOrEqual(4);
    // A few live readings later, the history and the stream meet exactly.
    await sleep(3 * INTERVAL_MS);
    const after = await expectSeamless(id, openedAt - 3 * INTERVAL_MS);
    expect(after.t.at(-1)!, 'live points after the answer').toBeGreaterThan(openedAt + INTERVAL_MS);
    // Every card was filled from one bulk answer.
    for (const d of fleet.devices) expect((await cardSeries(page, d))?.filled, d).toBe(true);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'history-grid.png') });
  });

  let probe: Probe;
  let alertTs = 0;
  const readings: number[] = [];

  it('opens a device view from the keyboard: charts with a time and a value axis, the alert marked at its time, the value under the pointer, back with Escape', async () => {
    probe = await connectProbe(stack, 'e2e-view');
    for (let i = 0; i < 12; i += 1) {
      if (i === 8) alertTs = await probe.alert('pressure-high', 'critical', 'pressure above its limit');
      readings.push(await probe.telemetry({ temperature: 20 + i, humidity: 40 + i }));
      await sleep(250);
    }
    const link = page.locator('[data-device-id="e2e-view"] .card-link');
    await link.waitFor({ timeout: 10_000 });
    await link.focus();
    await page.keyboard.press('Enter');
    await page.waitForURL(/#\/devices\/e2e-view$/);
    // The URL changes before the page's hashchange handler runs (it is a task of its own): wait
    // for the handler's work, then check it.
    await page.waitForFunction(() => !document.querySelector('#device-view')?.hasAttribute('hidden'), undefined, { timeout: 5_000 });
    expect(await page.evaluate(() => document.activeElement?.id), 'focus on the way back').toBe('device-back');
    expect(await page.locator('#devices').isHidden()).toBe(true);
    const chart = page.locator('.device-chart .uplot[data-metric="temperature"]');
    await chart.waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => document.querySelectorAll('.device-chart .uplot').length === 2);
    // Both axes drawn: their strips of the canvas hold ink (tick labels), the plot its line.
    const ink = await chart.evaluate((root: any) => {
      const canvas = root.querySelector('canvas');
      const ctx = canvas.getContext('2d');
      const box = canvas.getBoundingClientRect();
      const scale = canvas.width / box.width;
      const inkIn = (r: any) => {
        const data = ctx.getImageData((r.left - box.left) * scale, (r.top - box.top) * scale, Math.max(1, r.width * scale), Math.max(1, r.height * scale)).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n;
      };
      return [...root.querySelectorAll('.u-axis')].map((a: any) => inkIn(a.getBoundingClientRect()));
    });
    expect(ink, 'a time axis and a value axis, each with labels').toHaveLength(2);
    for (const n of ink) expect(n).toBeGreaterThan(50);
    // The alert's mark sits at its time on the time axis.
    const mark = chart.locator(`.mark[data-kind="alert"][data-ts="${alertTs}"]`);
    await mark.waitFor({ state: 'attached', timeout: 5_000 });
    const placed = await chart.evaluate((root: any, ts: number) => {
      const over = root.querySelector('.u-over').getBoundingClientRect();
      const el = root.querySelector(`.mark[data-kind="alert"][data-ts="${ts}"]`);
      const min = Number(root.dataset.xMin);
      const max = Number(root.dataset.xMax);
      return { at: el.getBoundingClientRect().left - over.left, expected: ((ts - min) / (max - min)) * over.width, tone: el.dataset.tone, hidden: el.hidden };
    }, alertTs);
    expect(placed.hidden).toBe(false);
    expect(placed.tone).toBe('critical');
    expect(Math.abs(placed.at - placed.expected), JSON.stringify(placed)).toBeLessThan(2);
    // The pointer at the alert's time shows the reading there.
    const over = await chart.locator('.u-over').boundingBox();
    await page.mouse.move(over!.x + placed.expected + 1, over!.y + over!.height / 2);
    const shown = await chart.locator('.u-legend .u-series').nth(1).locator('.u-value').textContent();
    expect(['27.0', '28.0', '29.0'], `the value under the pointer: ${shown}`).toContain(shown);
    // The status change and the alert are listed in words too.
    expect(await page.locator('#device-events [data-kind="alert"][data-tone="critical"]').count()).toBe(1);
    // A window from the keyboard: the next choice widens the time axis to 15 minutes.
    await page.locator('#device-windows input[value="5m"]').focus();
    await page.keyboard.press('ArrowRight');
    await page.waitForFunction(() => {
      const root = document.querySelector('.device-chart .uplot[data-metric="temperature"]');
      return root && Math.abs(Number(root.dataset.xMax) - Number(root.dataset.xMin) - 15 * 60_000) < 1;
    }, undefined, { timeout: 5_000 });
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'history-device.png'), fullPage: true });
    // Escape: back to the grid, the card's link focused again.
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('#devices').hidden);
    expect(await page.evaluate(() => document.activeElement?.closest('[data-device-id]')?.getAttribute('data-device-id'))).toBe('e2e-view');
    expect(await page.locator('#device-view').isHidden()).toBe(true);
  });

  it('lists alerts with time, device and severity, filters them by severity, and opens the device view at an alert\'s moment', async () => {
    await probe.alert('door-open', 'info', 'door opened');
    const item = page.locator('#alerts li[data-device="e2e-view"][data-type="pressure-high"]');
    await item.waitFor({ timeout: 10_000 });
    expect(await item.locator('.severity').textContent()).toBe('Critical');
    expect(await item.locator('.alert-device').textContent()).toBe('e2e-view');
    expect(await item.locator('time').getAttribute('datetime')).toMatch(/^\d{4}-\d\d-\d\dT/);
    const info = page.locator('#alerts li[data-device="e2e-view"][data-type="door-open"]');
    await info.waitFor({ timeout: 10_000 });
    await page.locator('#severity-filter').selectOption('critical');
    expect(await info.isVisible()).toBe(false);
    expect(await item.isVisible()).toBe(true);
    await page.locator('#severity-filter').selectOption('info');
    expect(await info.isVisible()).toBe(true);
    // The alert's time opens the device view at that moment, the pointer on it.
    await item.locator('.alert-when').click();
    await page.waitForURL(new RegExp(`#/devices/e2e-view\\?at=${alertTs}$`));
    const chart = page.locator('.device-chart .uplot[data-metric="temperature"]');
    await chart.locator(`.mark[data-kind="moment"][data-ts="${alertTs}"]`).waitFor({ state: 'attached', timeout: 10_000 });
    await page.waitForFunction(() => /^\d/.test(document.querySelector('.device-chart .u-legend .u-series:nth-child(2) .u-value')?.textContent ?? ''), undefined, { timeout: 5_000 });
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('#devices').hidden);
  });

  it('shows the command history with outcomes in a device view', async () => {
    const id = fleet.devices[1]!;
    await page.locator(`[data-device-id="${id}"] [data-command="ping"]`).click();
    await page.waitForSelector(`[data-device-id="${id}"] [data-command-result][data-status="acked"]`, { timeout: 10_000 });
    await page.locator(`[data-device-id="${id}"] .seen`).click();
    await page.waitForURL(new RegExp(`#/devices/${id}$`));
    const ping = page.locator('#device-commands [data-kind="command"]').first();
    await ping.waitFor({ timeout: 10_000 });
    expect(await ping.getAttribute('data-tone')).toBe('acked');
    expect(await ping.textContent()).toMatch(/Ping/);
    await page.waitForFunction(() => document.querySelectorAll('.device-chart .uplot').length === 4, undefined, { timeout: 10_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'history-device-sim.png'), fullPage: true });
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('#devices').hidden);
  });

  it('refills the cards after a forced reset, over the time the stream was away, without a gap; the alerts stay listed', async () => {
    const id = fleet.devices[2]!;
    await takeStates();
    let blocked = true;
    let rewritten = false;
    // The stream is cut and kept away for a few readings; then one answer (as a proxy that lost
    // track might give) moves the browser's last event id to one the service cannot use, so its
    // next reconnect is a reset, after which the page holds none of what it missed live.
    const seen: string[] = [];
    const handler = async (route: Route) => {
      seen.push(`${blocked ? 'blocked' : rewritten ? 'passed' : 'rewritten'} ${route.request().headers()['last-event-id'] ?? ''}`);
      if (blocked) return route.abort('failed');
      if (rewritten) return route.continue();
      rewritten = true;
      await route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' }, body: 'retry: 300\nid: not-an-id\n\n' });
    };
    await page.route('**/events*', handler);
    const cutAt = Date.now();
    try {
      await stack.nginx.killWorkers();
      await sleep(4 * INTERVAL_MS);
      blocked = false;
      await page.waitForFunction(() => window.connectionStates.includes('reset'), undefined, { timeout: 20_000 }).catch(async (err: Error) => {
        throw new Error(`${err.message}; requests ${JSON.stringify(seen)}, indicator ${JSON.stringify(await page.evaluate(() => window.connectionStates))}`);
      });
    } finally {
      await page.unroute('**/events*', handler);
    }
    expect(rewritten).toBe(true);
    await page.waitForFunction((d) => window.dashboardStore.devices.get(d)?.filled === true, id, { timeout: 10_000 });
    await sleep(2 * INTERVAL_MS);
    const points = await expectSeamless(id, cutAt - 2 * INTERVAL_MS);
    const outage = points.t.filter((ts) => ts > cutAt && ts < cutAt + 3 * INTERVAL_MS);
    expect(outage.length, 'readings from while the stream was away').toBeGreaterThanOrEqual(2);
    expect(await page.locator('#alerts li[data-device="e2e-view"][data-type="pressure-high"]').count(), 'the alert survives the reset').toBe(1);
  });

  it('refuses a viewer another device\'s history through nginx: 404, and left out of the bulk answer', async () => {
    const visitor = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    try {
      const tab = await visitor.newPage();
      watch(tab, 'viewer');
      await tab.goto(stack.urls.http);
      await signIn(stack, tab, 'viewer');
      await tab.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
      const answers = await tab.evaluate(async () => {
        const one = await fetch('/api/devices/e2e-view/history');
        const mine = await fetch('/api/devices/sim-001/history');
        const bulk: any = await (await fetch('/api/history?devices=e2e-view,sim-001')).json();
        return { one: [one.status, ((await one.json()) as any).error], mine: mine.status, bulk: bulk.devices.map((h: any) => h.device) };
      });
      expect(answers).toEqual({ one: [404, 'unknown_device'], mine: 200, bulk: ['sim-001'] });
      await tab.goto(`${stack.urls.http}#/devices/e2e-view`);
      await tab.waitForFunction(() => /No device "e2e-view" is known to you/.test(document.querySelector('#device-view-note')?.textContent ?? ''), undefined, { timeout: 10_000 });
    } finally {
      await visitor.close();
    }
  });

  it('keeps the main thread under 20 % busy with 100 devices × 4 metrics live at one reading a second', async () => {
    const load = await startFleet(
      loadSimConfig({
        MQTT_URL: stack.urls.mqtt,
        SIM_CREDENTIALS_FILE: await fleetCredentials(stack.mosquitto, 'load', 100),
        SIM_DEVICES: '100',
        SIM_ID_PREFIX: 'load',
        SIM_INTERVAL_MS: '1000',
      }),
      createLogger('warn', 'e2e-history-load'),
    );
    try {
      await load.waitForOnline(100, 30_000);
      await page.waitForFunction(() => document.querySelectorAll('[data-device-id^="load-"][data-state="online"]').length === 100, undefined, { timeout: 20_000 });
      // Settled: the cards on screen filled, the rest drawn as they scroll in.
      await sleep(3_000);
      const cdp = await context.newCDPSession(page);
      await cdp.send('Performance.enable');
      const read = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
      await page.evaluate(() => {
        window.longTaskMs = 0;
        new window.PerformanceObserver((list: any) => {
          for (const e of list.getEntries()) window.longTaskMs += e.duration;
        }).observe({ type: 'longtask' });
      });
      const from = Date.now();
      const m0 = await read();
      await sleep(10_000);
      const m1 = await read();
      const to = Date.now();
      const busy = (m1['TaskDuration']! - m0['TaskDuration']!) / (m1['Timestamp']! - m0['Timestamp']!);
      const longTaskMs = await page.evaluate(() => window.longTaskMs);
      // The load was there: readings of the 100 devices reached the page meanwhile.
      const received = await page.evaluate(([a, b]) => {
        let n = 0;
        for (const [id, d] of window.dashboardStore.devices as Map<string, any>) {
          if (!id.startsWith('load-')) continue;
          const ring = d.metrics.get('temperature')?.ring;
          for (let k = 0; ring && k < ring.length; k++) {
            const ts = ring.ts[(ring.start + k) % ring.ts.length];
            if (ts >= a && ts <= b) n++;
          }
        }
        return n;
      }, [from, to] as const);
      console.log(`main thread busy ${(busy * 100).toFixed(1)} % (CDP TaskDuration over ${((m1['Timestamp']! - m0['Timestamp']!)).toFixed(1)} s), long tasks ${longTaskMs.toFixed(0)} ms, ${received} readings of 100 devices × 4 metrics received`);
      expect(received, 'readings of the 100 devices during the measurement').toBeGreaterThan(100 * 10 * 0.7);
      expect(busy, 'main thread busy fraction').toBeLessThan(0.2);
      await page.screenshot({ path: join(ARTIFACTS, 'history-grid-load.png') });
    } finally {
      await load.stop();
    }
  }, 90_000);

  it('runs under its Content-Security-Policy without a refusal or an uncaught error', async () => {
    await probe?.close();
    expect(pageProblems).toEqual([]);
  });
});
