// A small seeded generator, so one SIM_SEED reproduces a whole fleet's readings and tests can
// step the walks deterministically. Not for anything security related.

/** Returns a float in [0, 1), like Math.random. */
export type Random = () => number;

/** mulberry32: 32 bits of state, fast, and good enough for simulated sensors. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** FNV-1a of a string mixed with a seed: one independent stream per device id. */
export function seedFor(seed: number, key: string): number {
  let hash = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

export function between(random: Random, min: number, max: number): number {
  return min + (max - min) * random();
}

/** `value` ± `fraction` of itself, uniformly. */
export function jitter(random: Random, value: number, fraction: number): number {
  return value * (1 + fraction * (2 * random() - 1));
}

/** A standard normal sample (Box–Muller). */
export function gaussian(random: Random): number {
  const u = 1 - random(); // (0, 1]: log(0) would be -Infinity
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Waiting time until the next event of a Poisson process with `perMinute` events a minute. */
export function exponentialDelayMs(random: Random, perMinute: number): number {
  return (-Math.log(1 - random()) / perMinute) * 60_000;
}

/**
 * Delay before reconnect attempt `attempt` (0 = first after losing the connection): 2–5 s, then
 * doubling up to a minute, spread out so thousands of devices do not come back in one burst.
 */
export function reconnectDelayMs(random: Random, attempt: number): number {
  return Math.min(60_000, 2_000 * 2 ** Math.min(attempt, 5) * (1 + 1.5 * random()));
}

export function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

export function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}
