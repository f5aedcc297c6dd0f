// Steps the browser tests share: signing in on the page's own form, and recording the connection
// indicator's every change in the page.
import type { Page } from 'playwright-core';
import type { Stack } from '../../src/native/stack.js';

declare const document: any;
declare const window: any;

/** Signs in on the sign-in page the dashboard sent `on` to, from the keyboard, and waits for the dashboard. */
export async function signIn(stack: Pick<Stack, 'people'>, on: Page, name: string): Promise<void> {
  await on.waitForURL(/\/signin\.html/, { timeout: 10_000 });
  const person = stack.people.find((p) => p.name === name)!;
  await on.locator('#signin-user').fill(person.name);
  await on.locator('#signin-password').fill(person.password);
  await on.locator('#signin-password').press('Enter');
  await on.waitForURL((url) => !url.pathname.endsWith('signin.html'), { timeout: 10_000 });
}

/** Every change of the connection indicator, kept in the page's `connectionStates` so none is missed. */
export async function recordConnectionStates(on: Page): Promise<void> {
  await on.evaluate(() => {
    const el = document.querySelector('#connection');
    window.connectionStates = [el.getAttribute('data-state')];
    new window.MutationObserver(() => {
      const state = el.getAttribute('data-state');
      if (window.connectionStates.at(-1) !== state) window.connectionStates.push(state);
    }).observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
}
