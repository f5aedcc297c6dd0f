/**
 * Bounds how long the MQTT client may keep the event loop in one go. mqtt.js hands over the
 * packets of everything its socket buffered back to back (each next one on process.nextTick), so a
 * burst of tens of thousands of messages on one connection is ingested in one stretch while HTTP
 * requests wait. It takes the next packet only when our handler calls back: after `budgetMs` of
 * work in one turn of the loop, the call back goes through setImmediate, which lets pending I/O
 * (requests, stream writes, timers) run first. Order and exactly-once handling stay mqtt.js's:
 * it still handles one packet at a time, and acknowledges each after the call back.
 */
export class Slicer {
  private sliceStart = 0;
  private inSlice = false;
  /** Slices that ran out of budget, i.e. times the loop was given back mid-backlog. */
  yields = 0;

  constructor(
    private readonly budgetMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  private readonly endSlice = (): void => {
    this.inSlice = false;
  };

  /** After one message was handled: calls `next` now, or after the loop served other work. */
  done(next: () => void): void {
    const now = this.now();
    if (!this.inSlice) {
      // First message of this turn: the slice starts here (work done before it is not ours).
      this.inSlice = true;
      this.sliceStart = now;
      setImmediate(this.endSlice);
    } else if (now - this.sliceStart >= this.budgetMs) {
      this.yields += 1;
      // endSlice, queued earlier, runs first: the next message starts a fresh slice.
      setImmediate(next);
      return;
    }
    next();
  }
}
