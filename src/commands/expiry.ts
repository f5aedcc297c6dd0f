import { COMMAND_TIMEOUT_MIN_MS } from '../protocol.js';

/**
 * What the broker's clock may add to a message's expiry, beyond whole-second rounding: Mosquitto
 * samples time(NULL) once per loop iteration, before it handles that iteration's sockets, so a
 * delivery is checked against a clock up to one iteration's work old; timers here may also fire
 * a millisecond early.
 */
export const EXPIRY_SLACK_MS = 250;

/**
 * The MQTT message expiry interval (whole seconds) for a command whose HTTP wait is `timeoutMs`,
 * chosen so that the broker can no longer deliver the command once that wait is over.
 *
 * Mosquitto 2.0 stores `expiry = now_s + interval`, with now_s the whole second in which it
 * received the PUBLISH, and delivers a queued message while `now_s <= expiry`: up to (but not
 * including) `interval + 1` seconds after it received it. The HTTP wait starts at the PUBACK,
 * which is no earlier than that. So `interval + 1 s + slack <= timeoutMs`, and an interval of 0
 * means "never expires", hence COMMAND_TIMEOUT_MIN_MS (2.5 s) as the shortest wait.
 */
export function commandExpirySeconds(timeoutMs: number): number {
  if (timeoutMs < COMMAND_TIMEOUT_MIN_MS) throw new RangeError(`timeoutMs below ${COMMAND_TIMEOUT_MIN_MS}`);
  return Math.floor((timeoutMs - EXPIRY_SLACK_MS) / 1000) - 1;
}

