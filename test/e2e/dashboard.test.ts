import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import type { Severity } from '../../src/protocol.js';
import { loadSimConfig } from '../../src/simulator/config.js';
import { startFleet, type Fleet } from '../../src/simulator/fleet.js';
import { launchChromium } from '../helpers/browser.js';
import { ROOT } from '../helpers/built.js';
import { fleetCredentials } from '../helpers/devices.js';
import { eventually } from '../helpers/wait.js';
import { recordConnectionStates, signIn } from './page-steps.js';
import { connectProbe } from './probe-device.js';

// The page people see, in a real browser, through the native stack's nginx: Mosquitto with the
// project's config, the built service, nginx with the project's template, and simulated devices.

// Callbacks passed to page.evaluate/waitForFunction run in the browser, not in Node.
declare const document: any;
declare const window: any;

const ARTIFACTS = join(ROOT, 'test-artifacts');
const DEVICES = 6;
let stack: Stack;
let fleet: Fleet;
let browser: Browser;
/** One browser profile, signed in as the operator: its pages share the session cookie. */
let context: BrowserContext;
let page: Page;
let pageHeaders: Record<string, string> = {};
/** Uncaught exceptions and Content-Security-Policy refusals in the page. */
const pageProblems: string[] = [];

beforeAll(async () => {
  stack = await startStack({
    simulator: false,
    logDir: await mkdtemp(join(tmpdir(), 'e2e-logs-')),
    // Short drain and retry so the restart below takes seconds, not the production defaults.
    serviceEnv: { SHUTDOWN_DRAIN_MS: '500', SSE_RETRY_MS: '500', SSE_HEARTBEAT_MS: '2000' },
  });
  // The fleet runs here so the test can inject a fault into one device on purpose.
  fleet = await startFleet(
    loadSimConfig({
      MQTT_URL: stack.urls.mqtt,
      SIM_CREDENTIALS_FILE: await fleetCredentials(stack.mosquitto, 'sim', DEVICES),
      SIM_DEVICES: String(DEVICES),
      SIM_INTERVAL_MS: '400',
      SIM_KEEPALIVE_S: '2',
      SIM_ACK_DELAY_MS: '150',
    }),
    createLogger('warn', 'e2e-fleet'),
  );
  // Every test may run alone: none relies on an earlier one to have waited for the fleet.
  await fleet.waitForOnline(DEVICES, 15_000);
  // Over HTTPS with the stack's certificate, whose key Chromium is told to accept (see the helper).
  browser = await launchChromium(stack.tls.cert);
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (err) => pageProblems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) pageProblems.push(`csp: ${msg.text()}`);
  });
  const response = await page.goto(stack.urls.http);
  pageHeaders = response?.headers() ?? {};
  // Sign-in is on (the stack's default): the page sends a visitor to sign in first.
  await signIn(stack, page, 'operator');
  await page.waitForSelector('#account:not([hidden])', { timeout: 10_000 });
  // Every change of the connection indicator, recorded in the page so none is missed.
  await recordConnectionStates(page);
}, 60_000);

afterAll(async () => {
  // Whatever happened above, leave a picture of the page for a person to look at.
  if (page) {
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true }).catch(() => undefined);
  }
  await browser?.close();
  await fleet?.stop();
  await stack?.stop();
});

const card = (id: string, on: Page = page) => on.locator(`[data-device-id="${id}"]`);
const connectionState = () => page.locator('#connection').getAttribute('data-state');
const isLive = () => document.querySelector('#connection')?.getAttribute('data-state') === 'live';
/** The indicator's states since the last call, oldest first. */
const takeStates = (): Promise<string[]> => page.evaluate(() => window.connectionStates.splice(0));
const temperatureOf = (id: string) => card(id).locator('[data-metric="temperature"]').textContent();

async function valueChanges(id: string): Promise<void> {
  const before = await temperatureOf(id);
  await until(`${id}'s temperature to change`,
    ([device, was]) => document.querySelector(`[data-device-id="${device}"] [data-metric="temperature"]`)?.textContent !== was,
    [id, before] as const);
}

/**
 * Waits in the page; on failure says what the page showed instead. Predicates are functions, not
 * strings: a string would be evaluated in the page, which its Content-Security-Policy forbids.
 */
async function until<A>(what: string, fn: (arg: A) => unknown, arg: A, timeout = 10_000, on: Page = page): Promise<void> {
  try {
    await on.waitForFunction(fn as (arg: unknown) => unknown, arg as unknown, { timeout });
  } catch (err) {
    const shown = await on.evaluate(() => ({
      connection: document.querySelector('#connection')?.textContent?.trim(),
      cards: [...document.querySelectorAll('[data-device-id]')].map((c: any) =>
        `${c.getAttribute('data-device-id')}:${c.getAttribute('data-state')}:${c.querySelector('[data-command-result]')?.getAttribute('data-status') ?? ''}:${c.querySelector('[data-command-result]')?.textContent?.trim() ?? ''}`),
      resetNotice: !document.querySelector('#reset-notice')?.hasAttribute('hidden'),
      active: [...document.querySelectorAll('#active-alarms li')].map((li: any) => `${li.dataset.device}:${li.dataset.type}:${li.dataset.severity}`),
      recent: [...document.querySelectorAll('#alerts li')].slice(0, 8).map((li: any) => `${li.dataset.device}:${li.dataset.type}:${li.dataset.severity}`),
    }));
    throw new Error(`${what}: ${(err as Error).message}; the page showed ${JSON.stringify(shown)}`);
  }
}

/** A reset notice stays up for a while: one left by an earlier test must not pass for a new one. */
async function dismissResetNotice(): Promise<void> {
  const dismiss = page.locator('#reset-notice .notice-dismiss');
  if (await dismiss.isVisible()) await dismiss.click();
  await page.locator('#reset-notice').waitFor({ state: 'hidden' });
}

/** Every fleet device's card is there and says online (other tests add devices of their own). */
const fleetOnline = (ids: readonly string[]) =>
  ids.every((id) => document.querySelector(`[data-device-id="${id}"][data-state="online"]`));

interface AlertViewJson { type: string; severity: Severity; message: string; ts: number; seq: number; at: number }

/** Waits until the service itself (not the page) reports these active alarm types for a device, in this order. */
/** The admin's session cookie, for asking the service itself. */
let adminCookie: string | undefined;
async function asAdmin(): Promise<string> {
  if (adminCookie) return adminCookie;
  const admin = stack.people.find((p) => p.name === 'admin')!;
  const res = await fetch(`${stack.urls.service}/api/session`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: admin.name, password: admin.password }),
  });
  adminCookie = res.headers.get('set-cookie')!.split(';')[0]!;
  return adminCookie;
}

async function serviceAlarms(id: string, types: string[]): Promise<AlertViewJson[]> {
  let last: unknown;
  const cookie = await asAdmin();
  const body = await eventually(async () => {
    await sleep(100);
    const res = await fetch(`${stack.urls.service}/api/devices/${id}`, { headers: { Cookie: cookie } });
    last = res.ok ? await res.json() : `HTTP ${res.status}`;
    const alarms = (last as { alarms?: AlertViewJson[] })?.alarms;
    return Array.isArray(alarms) && alarms.map((a) => a.type).join() === types.join() ? alarms : null;
  }, `GET /api/devices/${id} to list the active alarms [${types.join(', ')}] (the service side of issue 14 §4)`, 10_000, () => last);
  return body;
}

/** What a page's alerts panel lists, as device:type:severity, top to bottom. */
const panelOf = (on: Page) => on.evaluate(() => ({
  empty: !document.querySelector('#alerts-empty').hidden,
  active: [...document.querySelectorAll('#active-alarms li')].map((li: any) => `${li.dataset.device}:${li.dataset.type}:${li.dataset.severity}`),
  // The last part is the service's receive stamp, the last field of the page's alert key.
  recent: [...document.querySelectorAll('#alerts li')].map((li: any) =>
    `${li.dataset.device}:${li.dataset.type}:${li.dataset.severity}:${li.dataset.key.split('\u0000').at(-1)}`),
}));
const chipOf = (on: Page, id: string) => on.evaluate((device) => {
  const chip = document.querySelector(`[data-device-id="${device}"] .card-alert`);
  return chip && !chip.hidden ? { severity: chip.dataset.severity, type: chip.dataset.type, text: chip.textContent } : null;
}, id);

describe('dashboard in headless Chromium through nginx', () => {
  it('shows every simulated device online within seconds, with values that change', async () => {
    await until('every fleet device online', fleetOnline, fleet.devices, 15_000);
    expect(await connectionState()).toBe('live');
    await valueChanges(fleet.devices[0]!);
  });

  it('turns a device offline on screen when its connection drops abruptly, and online when it returns', async () => {
    const victim = fleet.devices[DEVICES - 1]!;
    await until(`${victim} online`, fleetOnline, [victim], 15_000);
    expect(fleet.dropConnection(victim)).toBe(true);
    // The broker notices the dead socket and publishes the last will; the page follows.
    await page.waitForSelector(`[data-device-id="${victim}"][data-state="offline"]`, { timeout: 10_000 });
    // The simulated device reconnects after 2-5 s, as a real one with backoff would.
    await page.waitForSelector(`[data-device-id="${victim}"][data-state="online"]`, { timeout: 15_000 });
  });

  it('runs a command from its button and shows the ack', async () => {
    const id = fleet.devices[0]!;
    await until(`${id} online`, fleetOnline, [id], 15_000);
    await card(id).locator('[data-command="ping"]').click();
    // Signed in as an operator: the session cookie is enough, no token is asked for.
    expect(await page.locator('#token-dialog').isVisible()).toBe(false);
    const result = card(id).locator('[data-command-result]');
    await until('the ack on the card', (device) => document.querySelector(`[data-device-id="${device}"] [data-command-result][data-status="acked"]`), id);
    expect(await result.textContent()).toMatch(/ack|ok|pong/i);
  });

  it('asks for a second click before a reboot, then shows the ack and the device coming back', async () => {
    const id = fleet.devices[2]!;
    await until(`${id} online`, fleetOnline, [id], 15_000);
    const reboot = card(id).locator('[data-command="reboot"]');
    // A double-click only arms it: its second click is not a deliberate confirmation.
    await reboot.dblclick();
    expect(await reboot.textContent()).toBe('Reboot?');
    expect(await reboot.getAttribute('aria-label')).toBe('Confirm reboot: press again');
    expect(await card(id).locator('[data-command-result]').getAttribute('data-status'), 'nothing sent by a double-click').toBeNull();
    await page.waitForTimeout(500); // a person reading "Reboot?"
    await reboot.click();
    expect(await reboot.textContent()).toBe('Reboot');
    await until('the reboot ack', (device) => document.querySelector(`[data-device-id="${device}"] [data-command-result][data-status="acked"]`), id);
    // The simulated device goes offline for a moment, then comes back.
    await page.waitForSelector(`[data-device-id="${id}"][data-state="offline"]`, { timeout: 10_000 });
    await page.waitForSelector(`[data-device-id="${id}"][data-state="online"]`, { timeout: 15_000 });
  });

  it('rides through a proxy crash (nginx workers killed) by resuming: nothing missed, no reset', async () => {
    await until('a settled live indicator', isLive, undefined, 15_000);
    await dismissResetNotice();
    await takeStates();
    await stack.nginx.killWorkers();
    // The browser reconnects through new workers with Last-Event-ID; the same service instance
    // replays what was published meanwhile.
    await until('resumed', () => window.connectionStates.includes('resumed'), undefined, 15_000);
    await until('live again', isLive, undefined, 15_000);
    const states = await takeStates();
    // Reconnecting, resumed (never a reset), live. On a loaded machine the browser may need more
    // than one attempt while nginx's master brings new workers up (seen once in CI over HTTP/2:
    // three reconnect–resume rounds): each round must be a resume.
    expect(states[0], `indicator went ${states.join(' → ')}`).toBe('reconnecting');
    expect(states.at(-1), `indicator went ${states.join(' → ')}`).toBe('live');
    expect(states.slice(1, -1).every((st, i) => st === (i % 2 === 0 ? 'resumed' : 'reconnecting')), `indicator went ${states.join(' → ')}`).toBe(true);
    expect(states.length % 2, `indicator went ${states.join(' → ')}`).toBe(1);
    expect(await page.locator('#reset-notice').isHidden(), 'no reset notice after a resume').toBe(true);
    await valueChanges(fleet.devices[1]!);
  });

  it('rides through a service restart without a reload: reconnecting, then resumed with no reset, the alert raised meanwhile shown once', async () => {
    const probe = await connectProbe(stack, 'e2e-gap');
    try {
      await until('the gap probe on the page', (id) => document.querySelector(`[data-device-id="${id}"][data-state="online"]`), probe.id, 10_000);
      await page.evaluate(() => {
        window.marker = 42;
      });
      await dismissResetNotice();
      await takeStates();
      await stack.stopService();
      // Raised while nobody could tell the page: the broker keeps it for the ingest session.
      await probe.alert('door-open', 'critical', 'door opened while the gateway was away');
      await stack.startService();
      // The shared log (the stack's default): the new process resumes the page from its last id.
      await until('resumed', () => window.connectionStates.includes('resumed'), undefined, 20_000);
      await until('live again', isLive, undefined, 20_000);
      await until('devices online again', fleetOnline, fleet.devices, 15_000);
      await until('the gap alert in the panel', (id) =>
        document.querySelector(`#active-alarms li[data-device="${id}"][data-type="door-open"]`) &&
        document.querySelector(`#alerts li[data-device="${id}"][data-type="door-open"]`), probe.id, 15_000);
      const panel = await panelOf(page);
      expect(panel.recent.filter((a) => a.startsWith(`${probe.id}:door-open:critical:`)), 'shown once').toHaveLength(1);
      expect(panel.active.filter((a) => a.startsWith(`${probe.id}:`))).toEqual([`${probe.id}:door-open:critical`]);
      expect(await chipOf(page, probe.id)).toMatchObject({ severity: 'critical', type: 'door-open' });
      expect(new Set(panel.recent).size, 'no alert listed twice').toBe(panel.recent.length);
      expect(await page.locator('#reset-notice').isHidden(), 'no reset notice after a resume').toBe(true);
    } finally {
      await probe.close();
    }
    const states = await takeStates();
    // "reconnecting" may repeat while the service is down (nginx's busy stream, then errors).
    const order = states.filter((state, i) => state !== states[i - 1] && state !== 'connecting');
    expect(order.at(-1), `indicator went ${states.join(' → ')}`).toBe('live');
    expect(order.indexOf('reconnecting'), `indicator went ${states.join(' → ')}`).toBe(0);
    expect(order, `indicator went ${states.join(' → ')}`).toContain('resumed');
    expect(order, `indicator went ${states.join(' → ')}`).not.toContain('reset');
    expect(await page.evaluate(() => window.marker), 'the page was not reloaded').toBe(42);
    await valueChanges(fleet.devices[0]!);
  });

  it('names the shared log while Redis is away, and shows a visible reset that keeps the devices when Redis lost its data', async () => {
    await until('a settled live indicator', isLive, undefined, 15_000);
    await dismissResetNotice();
    await takeStates();
    await stack.redis!.stop();
    await until('the banner naming the shared log', () => {
      const banner = document.querySelector('#upstream-banner');
      return banner && !banner.hidden && /shared log \(Redis\)/.test(banner.textContent ?? '');
    }, undefined, 15_000);
    // Back on an empty disk: the log's history is gone, so every page is told and rebuilt.
    await stack.redis!.restart({ wipe: true });
    await page.waitForSelector('#reset-notice:not([hidden])', { timeout: 20_000 });
    await until('live again', isLive, undefined, 20_000);
    await until('the banner gone', () => document.querySelector('#upstream-banner')?.hidden === true, undefined, 15_000);
    await until('devices online again', fleetOnline, fleet.devices, 15_000);
    const states = await takeStates();
    expect(states, `indicator went ${states.join(' → ')}`).toContain('reset');
    await valueChanges(fleet.devices[2]!);
  });

  it('filters the grid from the keyboard and fits a phone screen without sideways scrolling', async () => {
    const target = fleet.devices[3]!;
    await page.locator('#filter').focus();
    await page.keyboard.type(target);
    await until('only the typed device shown', (id) => {
      const shown = [...document.querySelectorAll('[data-device-id]')].filter((c: any) => c.offsetParent !== null);
      return shown.length === 1 && shown[0].getAttribute('data-device-id') === id;
    }, target);
    await page.locator('#filter').fill('');
    await until('every device shown again', () => {
      const all = [...document.querySelectorAll('[data-device-id]')];
      return all.filter((c: any) => c.offsetParent !== null).length === all.length;
    }, undefined);

    await page.setViewportSize({ width: 390, height: 844 });
    try {
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow, 'horizontal overflow on a 390 px wide screen').toBeLessThanOrEqual(0);
      await mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png') });
    } finally {
      await page.setViewportSize({ width: 1400, height: 900 });
    }
  });

  it('shows the alarms already active when a page opens, before any new alert, and ends one on its info alert', async () => {
    const probe = await connectProbe(stack, 'e2e-alarms');
    let fresh: Page | undefined;
    try {
      await probe.alert('battery-low', 'warning', 'battery 17.5 %: below the warning limit of 20 %');
      await probe.alert('temperature-high', 'critical', 'temperature 47.2 °C: above the critical limit of 45 °C');
      // The service holds them, most severe first, before the page exists.
      const alarms = await serviceAlarms(probe.id, ['temperature-high', 'battery-low']);
      fresh = await context.newPage();
      fresh.on('pageerror', (err) => pageProblems.push(`uncaught (second page): ${err.message}`));
      fresh.on('console', (msg) => {
        if (/Content.Security.Policy/i.test(msg.text())) pageProblems.push(`csp (second page): ${msg.text()}`);
      });
      await fresh.goto(stack.urls.http);
      // The probe publishes nothing more: what the page shows comes from its first snapshot. The
      // card's very first drawing already carries the chip.
      await fresh.waitForSelector(`[data-device-id="${probe.id}"]`, { timeout: 10_000 });
      expect(await chipOf(fresh, probe.id), 'chip at first paint').toMatchObject({ severity: 'critical', type: 'temperature-high' });
      expect((await chipOf(fresh, probe.id))?.text).toBe('Critical: temperature 47.2 °C: above the critical limit of 45 °C (+1 more)');
      const first = await panelOf(fresh);
      expect(first.empty, '"No alerts yet" with alarms active').toBe(false);
      expect(first.active.filter((a) => a.startsWith(`${probe.id}:`)))
        .toEqual([`${probe.id}:temperature-high:critical`, `${probe.id}:battery-low:warning`]);
      const mine = first.recent.filter((a) => a.startsWith(`${probe.id}:`));
      expect(mine.map((a) => a.split(':').slice(0, 3).join(':')), 'recent, newest first')
        .toEqual([`${probe.id}:temperature-high:critical`, `${probe.id}:battery-low:warning`]);
      // The page keys them by the service's stamp: the same alerts as GET /api/devices/:id reports.
      expect(mine.map((a) => a.split(':').at(-1)).sort()).toEqual(alarms.map((a) => String(a.at)).sort());
      await mkdir(ARTIFACTS, { recursive: true });
      await fresh.screenshot({ path: join(ARTIFACTS, 'dashboard-alarms.png'), fullPage: true });
      // From the keyboard: an active alarm's device id narrows the grid to that device.
      await fresh.locator(`#active-alarms li[data-device="${probe.id}"] .alert-device`).first().focus();
      await fresh.keyboard.press('Enter');
      await until('only the alarmed device shown', (id) => {
        const shown = [...document.querySelectorAll('[data-device-id]')].filter((c: any) => c.offsetParent !== null);
        return shown.length === 1 && shown[0].getAttribute('data-device-id') === id;
      }, probe.id, 5_000, fresh);
      await fresh.locator('#filter').fill('');

      // Back to normal: the info alert of its type ends that alarm on both pages, and is listed.
      await probe.alert('temperature-high', 'info', 'temperature 31.0 °C: back to normal');
      for (const on of [fresh, page]) {
        await until('the temperature alarm to end', (id) =>
          !document.querySelector(`#active-alarms li[data-device="${id}"][data-type="temperature-high"]`) &&
          document.querySelector(`#alerts li[data-device="${id}"][data-type="temperature-high"][data-severity="info"]`), probe.id, 10_000, on);
        expect(await chipOf(on, probe.id))
          .toMatchObject({ severity: 'warning', type: 'battery-low', text: 'Warning: battery 17.5 %: below the warning limit of 20 %' });
        expect((await panelOf(on)).active.filter((a) => a.startsWith(`${probe.id}:`))).toEqual([`${probe.id}:battery-low:warning`]);
      }
      await serviceAlarms(probe.id, ['battery-low']);
      // A phone, in the dark scheme: the alarms stay first and legible.
      await fresh.emulateMedia({ colorScheme: 'dark' });
      await fresh.setViewportSize({ width: 390, height: 844 });
      const overflow = await fresh.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow, 'horizontal overflow on a 390 px wide screen').toBeLessThanOrEqual(0);
      await fresh.screenshot({ path: join(ARTIFACTS, 'dashboard-alarms-phone.png') });
    } finally {
      await fresh?.close();
      await probe.close();
    }
  });

  it('asks a visitor to sign in with the reason, says a wrong password is wrong, and signs in from the keyboard', async () => {
    const visitor = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    try {
      const tab = await visitor.newPage();
      tab.on('pageerror', (err) => pageProblems.push(`uncaught (sign-in): ${err.message}`));
      await tab.goto(stack.urls.http);
      await tab.waitForURL(/\/signin\.html\?reason=signed_out$/, { timeout: 10_000 });
      expect(await tab.locator('#signin-reason').textContent()).toBe('Sign in to see your devices.');
      // The name field has the focus: type, Tab, type, Enter.
      await tab.keyboard.type('viewer');
      await tab.keyboard.press('Tab');
      await tab.keyboard.type('not the password');
      await tab.keyboard.press('Enter');
      await tab.waitForSelector('#signin-error:not([hidden])');
      expect(await tab.locator('#signin-error').textContent()).toBe('Wrong user name or password.');
      await mkdir(ARTIFACTS, { recursive: true });
      await tab.screenshot({ path: join(ARTIFACTS, 'signin.png') });
      await signIn(stack, tab, 'viewer');
      await tab.waitForSelector('#account:not([hidden])', { timeout: 10_000 });
      expect(await tab.locator('#account-name').textContent()).toBe('viewer (viewer)');
      // The viewer's grant is sim-00*: the fleet's first devices, nothing else.
      await tab.waitForSelector('[data-device-id]', { timeout: 10_000 });
      const shown = await tab.evaluate(() => [...document.querySelectorAll('[data-device-id]')].map((c) => c.getAttribute('data-device-id')));
      expect(shown.length).toBeGreaterThan(0);
      expect(shown.every((id) => /^sim-00/.test(String(id))), JSON.stringify(shown)).toBe(true);
    } finally {
      await visitor.close();
    }
  });

  it('shows the sign-in page with the reason when the user signs out in another tab, instead of a dead "Reconnecting"', async () => {
    const profile = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    try {
      const first = await profile.newPage();
      await first.goto(stack.urls.http);
      await signIn(stack, first, 'admin');
      await first.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
      const second = await profile.newPage();
      await second.goto(stack.urls.http);
      await second.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
      // Signing out in the second tab ends the first tab's stream within a second.
      await second.locator('#sign-out').click();
      await second.waitForURL(/\/signin\.html\?reason=bye$/, { timeout: 10_000 });
      expect(await second.locator('#signin-reason').textContent()).toBe('You have signed out.');
      // The cookie went with the sign-out: the first tab is told the same, not a dead "Reconnecting".
      await first.waitForURL(/\/signin\.html\?reason=bye$/, { timeout: 15_000 });
      expect(await first.locator('#signin-reason').textContent()).toBe('You have signed out.');
    } finally {
      await profile.close();
    }
  });

  it('is served over HTTPS and HTTP/2, its session cookie Secure, HttpOnly and SameSite=Strict', async () => {
    expect(page.url()).toMatch(/^https:\/\//);
    expect(await page.evaluate(() => (window.performance.getEntriesByType('navigation')[0] as any).nextHopProtocol)).toBe('h2');
    const cookie = (await context.cookies()).find((c) => c.name === 'mss_session');
    expect(cookie).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Strict' });
  });

  it('runs under its Content-Security-Policy without a refusal or an uncaught error', () => {
    expect(pageHeaders['content-security-policy']).toContain("default-src 'self'");
    expect(pageProblems).toEqual([]);
  });
});
