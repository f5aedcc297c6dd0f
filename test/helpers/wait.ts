import { setTimeout as sleep } from 'node:timers/promises';

/** Polls until `check` is truthy; fails naming what was awaited and, if given, what was seen. */
export async function eventually<T>(
  check: () => T | Promise<T>,
  what: string,
  timeoutMs = 5_000,
  seen?: () => unknown,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) {
      const detail = seen ? `; last seen: ${JSON.stringify(seen())}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(20);
  }
}
