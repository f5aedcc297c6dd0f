import { describe, expect, it } from 'vitest';
import { commandExpirySeconds, EXPIRY_SLACK_MS } from '../../src/commands/expiry.js';
import { COMMAND_TIMEOUT_MAX_MS, COMMAND_TIMEOUT_MIN_MS } from '../../src/protocol.js';

// Mosquitto 2.0 delivers a queued message while its whole-second clock is at most
// received_s + interval: up to interval + 1 s after it received it. The wait starts at the PUBACK.
const latestDeliveryMs = (interval: number) => (interval + 1) * 1000 + EXPIRY_SLACK_MS;

describe('command expiry', () => {
  it('ends within the HTTP wait for every allowed timeoutMs, and is the longest that does', () => {
    for (let timeoutMs = COMMAND_TIMEOUT_MIN_MS; timeoutMs <= COMMAND_TIMEOUT_MAX_MS; timeoutMs += 1) {
      const interval = commandExpirySeconds(timeoutMs);
      // 0 would mean "never expires" to the broker.
      if (!Number.isInteger(interval) || interval < 1) throw new Error(`timeoutMs ${timeoutMs}: interval ${interval}`);
      if (latestDeliveryMs(interval) > timeoutMs) throw new Error(`timeoutMs ${timeoutMs}: deliverable until ${latestDeliveryMs(interval)} ms`);
      if (latestDeliveryMs(interval + 1) <= timeoutMs) throw new Error(`timeoutMs ${timeoutMs}: ${interval} s is shorter than needed`);
    }
    expect(commandExpirySeconds(COMMAND_TIMEOUT_MIN_MS)).toBe(1);
    expect(commandExpirySeconds(5_000)).toBe(3);
    expect(commandExpirySeconds(COMMAND_TIMEOUT_MAX_MS)).toBe(118);
  });

  it('has no expiry for a wait shorter than the minimum: no whole-second expiry fits it', () => {
    expect(() => commandExpirySeconds(COMMAND_TIMEOUT_MIN_MS - 1)).toThrow(RangeError);
    expect(latestDeliveryMs(1)).toBeLessThanOrEqual(COMMAND_TIMEOUT_MIN_MS);
  });
});
