import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Slicer } from '../../src/mqtt/slice.js';

describe('MQTT backlog slicing', () => {
  it('calls back at once within the budget, through setImmediate past it, and starts a fresh slice after yielding', async () => {
    let clock = 0;
    const slicer = new Slicer(5, () => clock);
    const order: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      clock += 2; // 0 (slice start), then 2 and 4 ms into it: within budget
      slicer.done(() => order.push(`sync ${i}`));
    }
    expect(order).toEqual(['sync 0', 'sync 1', 'sync 2']);
    clock += 2; // 6 ms into the slice
    slicer.done(() => order.push('deferred'));
    expect(order).toHaveLength(3);
    expect(slicer.yields).toBe(1);
    await turn();
    expect(order.at(-1)).toBe('deferred');
    // The loop turned: the next message starts a new slice and is called back at once.
    clock += 1;
    slicer.done(() => order.push('fresh'));
    expect(order.at(-1)).toBe('fresh');
  });

  it('does not yield for a message that arrives after an idle spell, however long ago the last one was', async () => {
    let clock = 0;
    const slicer = new Slicer(5, () => clock);
    slicer.done(() => undefined);
    await turn();
    clock += 10_000;
    let called = false;
    slicer.done(() => (called = true));
    expect(called).toBe(true);
    expect(slicer.yields).toBe(0);
  });
});
