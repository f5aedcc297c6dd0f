import { access, mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import { loadSimConfig } from '../../src/simulator/config.js';
import { startFleet, type Fleet } from '../../src/simulator/fleet.js';
import { ROOT } from '../helpers/built.js';

// The page people see, in a real browser, through the native stack's nginx: Mosquitto with the
// project's config, the built service, nginx with the project's template, and simulated devices.

// Callbacks passed to page.evaluate/waitForFunction run in the browser, not in Node.
declare const document: any;
declare const window: any;

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');
const DEVICES = 6;
let stack: Stack;
let fleet: Fleet;
let browser: Browser;
let page: Page;
let pageHeaders: Record<string, string> = {};
/** Uncaught exceptions and Content-Security-Policy refusals in the page. */
const pageProblems: string[] = [];

beforeAll(async () => {
  try {
    await access(CHROMIUM);
  } catch {
    throw new Error(`${CHROMIUM} not found: install it with \`apt-get install -y chromium\` (npm test does it)`);
  }
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
      MQTT_USERNAME: stack.users.device.username,
      MQTT_PASSWORD: stack.users.device.password,
      SIM_DEVICES: String(DEVICES),
      SIM_INTERVAL_MS: '400',
      SIM_KEEPALIVE_S: '2',
      SIM_ACK_DELAY_MS: '150',
    }),
    createLogger('warn', 'e2e-fleet'),
  );
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (err) => pageProblems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) pageProblems.push(`csp: ${msg.text()}`);
  });
  const response = await page.goto(stack.urls.http);
  pageHeaders = response?.headers() ?? {};
  // Every change of the connection indicator, recorded in the page so none is missed.
  await page.evaluate(() => {
    const el = document.querySelector('#connection');
    window.connectionStates = [el.getAttribute('data-state')];
    new window.MutationObserver(() => {
      const state = el.getAttribute('data-state');
      if (window.connectionStates.at(-1) !== state) window.connectionStates.push(state);
    }).observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
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

const card = (id: string) => page.locator(`[data-device-id="${id}"]`);
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
async function until<A>(what: string, fn: (arg: A) => unknown, arg: A, timeout = 10_000): Promise<void> {
  try {
    await page.waitForFunction(fn as (arg: unknown) => unknown, arg as unknown, { timeout });
  } catch (err) {
    const shown = await page.evaluate(() => ({
      connection: document.querySelector('#connection')?.textContent?.trim(),
      cards: [...document.querySelectorAll('[data-device-id]')].map((c: any) =>
        `${c.getAttribute('data-device-id')}:${c.getAttribute('data-state')}:${c.querySelector('[data-command-result]')?.getAttribute('data-status') ?? ''}:${c.querySelector('[data-command-result]')?.textContent?.trim() ?? ''}`),
      resetNotice: !document.querySelector('#reset-notice')?.hasAttribute('hidden'),
    }));
    throw new Error(`${what}: ${(err as Error).message}; the page showed ${JSON.stringify(shown)}`);
  }
}

describe('dashboard in headless Chromium through nginx', () => {
  it('shows every simulated device online within seconds, with values that change', async () => {
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-device-id][data-state="online"]').length === n,
      DEVICES,
      { timeout: 15_000 },
    );
    expect(await connectionState()).toBe('live');
    await valueChanges(fleet.devices[0]!);
  });

  it('turns a device offline on screen when its connection drops abruptly, and online when it returns', async () => {
    const victim = fleet.devices[DEVICES - 1]!;
    expect(fleet.dropConnection(victim)).toBe(true);
    // The broker notices the dead socket and publishes the last will; the page follows.
    await page.waitForSelector(`[data-device-id="${victim}"][data-state="offline"]`, { timeout: 10_000 });
    // The simulated device reconnects after 2-5 s, as a real one with backoff would.
    await page.waitForSelector(`[data-device-id="${victim}"][data-state="online"]`, { timeout: 15_000 });
  });

  it('runs a command from its button and shows the ack', async () => {
    const id = fleet.devices[0]!;
    await card(id).locator('[data-command="ping"]').click();
    // First use asks for the token once.
    await page.locator('#token-dialog').waitFor({ state: 'visible' });
    await page.locator('#token-input').fill(stack.commandToken);
    await page.locator('#token-input').press('Enter');
    const result = card(id).locator('[data-command-result]');
    await until('the ack on the card', (device) => document.querySelector(`[data-device-id="${device}"] [data-command-result][data-status="acked"]`), id);
    expect(await result.textContent()).toMatch(/ack|ok|pong/i);
  });

  it('asks for a second click before a reboot, then shows the ack and the device coming back', async () => {
    const id = fleet.devices[2]!;
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
    await takeStates();
    await stack.nginx.killWorkers();
    // The browser reconnects through new workers with Last-Event-ID; the same service instance
    // replays what was published meanwhile.
    await until('resumed', () => window.connectionStates.includes('resumed'), undefined, 15_000);
    await until('live again', isLive, undefined, 15_000);
    const states = await takeStates();
    expect(states, `indicator went ${states.join(' → ')}`).toEqual(['reconnecting', 'resumed', 'live']);
    expect(await page.locator('#reset-notice').isHidden(), 'no reset notice after a resume').toBe(true);
    await valueChanges(fleet.devices[1]!);
  });

  it('rides through a service restart without a reload: reconnecting, then live again with a visible reset', async () => {
    await page.evaluate(() => {
      window.marker = 42;
    });
    await takeStates();
    await stack.restartService();
    // The new instance cannot replay the old one's ids: the page is told (reset) and rebuilt.
    await page.waitForSelector('#reset-notice:not([hidden])', { timeout: 20_000 });
    await until('live again', isLive, undefined, 20_000);
    await until('devices online again', (n) => document.querySelectorAll('[data-device-id][data-state="online"]').length === n, DEVICES, 15_000);
    const states = await takeStates();
    // "reconnecting" may repeat while the service is down (nginx's busy stream, then errors).
    const order = states.filter((state, i) => state !== states[i - 1] && state !== 'connecting');
    expect(order.at(-1), `indicator went ${states.join(' → ')}`).toBe('live');
    expect(order.indexOf('reconnecting'), `indicator went ${states.join(' → ')}`).toBe(0);
    expect(order.indexOf('reset'), `indicator went ${states.join(' → ')}`).toBeGreaterThan(0);
    expect(await page.evaluate(() => window.marker), 'the page was not reloaded').toBe(42);
    await valueChanges(fleet.devices[0]!);
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
    await until('every device shown again', (n) => [...document.querySelectorAll('[data-device-id]')].filter((c: any) => c.offsetParent !== null).length === n, DEVICES);

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

  it('runs under its Content-Security-Policy without a refusal or an uncaught error', () => {
    expect(pageHeaders['content-security-policy']).toContain("default-src 'self'");
    expect(pageProblems).toEqual([]);
  });
});
