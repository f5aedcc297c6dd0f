import { describe, expect, it } from 'vitest';
import type { HubEvent } from '../../src/sse/event.js';
import { ReplayBuffer } from '../../src/sse/replay.js';

const event = (seq: number, bytes = 10): HubEvent => ({
  seq,
  name: 'telemetry',
  device: 'd1',
  bit: 1,
  frame: Buffer.alloc(bytes),
  deviceTs: undefined,
});

describe('replay buffer', () => {
  it('returns the events after a seq in order', () => {
    const buffer = new ReplayBuffer(10);
    for (const seq of [1, 2, 4, 7, 9]) buffer.push(event(seq));
    expect([...buffer.after(2)].map((e) => e.seq)).toEqual([4, 7, 9]);
    expect([...buffer.after(3)].map((e) => e.seq)).toEqual([4, 7, 9]);
    expect([...buffer.after(0)].map((e) => e.seq)).toEqual([1, 2, 4, 7, 9]);
    expect([...buffer.after(9)]).toEqual([]);
  });

  it('keeps at most capacity events and stops covering what it dropped', () => {
    const buffer = new ReplayBuffer(3);
    for (let seq = 1; seq <= 10; seq += 1) buffer.push(event(seq));
    expect(buffer.size).toBe(3);
    expect([...buffer.after(7)].map((e) => e.seq)).toEqual([8, 9, 10]);
    expect(buffer.covers(7)).toBe(true);
    expect(buffer.covers(6)).toBe(false);
  });

  it('covers gaps left by per-client ids as long as no real event was dropped', () => {
    const buffer = new ReplayBuffer(3);
    buffer.push(event(5));
    buffer.push(event(8));
    expect(buffer.covers(0)).toBe(true);
    expect(buffer.covers(6)).toBe(true);
    expect([...buffer.after(6)].map((e) => e.seq)).toEqual([8]);
  });

  it('is bounded in bytes as well as in count', () => {
    const buffer = new ReplayBuffer(1000, 100);
    for (let seq = 1; seq <= 50; seq += 1) buffer.push(event(seq, 30));
    expect(buffer.byteSize).toBeLessThanOrEqual(100);
    expect(buffer.size).toBe(3);
    expect(buffer.covers(47)).toBe(true);
    expect(buffer.covers(46)).toBe(false);
  });

  it('with capacity zero keeps nothing and covers nothing already sent', () => {
    const buffer = new ReplayBuffer(0);
    buffer.push(event(1));
    buffer.push(event(2));
    expect(buffer.size).toBe(0);
    expect(buffer.covers(1)).toBe(false);
    expect(buffer.covers(2)).toBe(true);
  });
});
