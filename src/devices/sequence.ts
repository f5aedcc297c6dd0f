// The duplicate rule for a device's numbered messages (telemetry, events), resting only on what
// the gateway can trust: the order messages arrive in and the device's MQTT connection.

/** How many accepted (seq, ts) pairs are remembered per device and kind, across connections. */
const RECENT_FINGERPRINTS = 4;

/**
 * One sequence of one device (its telemetry, or its events).
 *
 * - A new connection of the device (a live `online` status, or the broker's last will) starts a
 *   new epoch: the device may have rebooted, so its seq may start again anywhere, and its clock may
 *   be anywhere too. Neither is held against it.
 * - Within an epoch, a seq not above the last accepted one is a duplicate: this is how a QoS 1
 *   redelivery from the broker is dropped.
 * - Across epochs, a message identical in seq and ts to one of the last few accepted is a
 *   duplicate too. A device that reconnects resends what its broker never acknowledged right after
 *   its new `online`, and the broker may hand us again what it sent just before; both are exact
 *   copies. A rebooted device whose seq restarts at 1 would have to repeat an old ts to the
 *   fraction of a millisecond to be taken for one.
 */
export class Sequence {
  /** Last seq accepted in the current epoch; -1 before the first. */
  private last = -1;
  /** (seq, ts) pairs of the last accepted messages, flat, oldest overwritten first. */
  private readonly recent: number[] = [];
  private next = 0;

  newEpoch(): void {
    this.last = -1;
  }

  /** Why the message is a duplicate, or undefined when it is news. */
  check(seq: number, ts: number): string | undefined {
    for (let i = 0; i < this.recent.length; i += 2) {
      if (this.recent[i] === seq && this.recent[i + 1] === ts) {
        return `seq ${seq} with ts ${ts} was already accepted (a redelivery)`;
      }
    }
    if (this.last >= 0 && seq <= this.last) {
      return `seq ${seq} is not above ${this.last}, the last accepted since the device's current connection began`;
    }
    return undefined;
  }

  accept(seq: number, ts: number): void {
    this.last = seq;
    this.recent[this.next] = seq;
    this.recent[this.next + 1] = ts;
    this.next = (this.next + 2) % (2 * RECENT_FINGERPRINTS);
  }
}
