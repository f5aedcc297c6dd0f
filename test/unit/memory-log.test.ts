import { describe, expect, it } from 'vitest';
import { eventId, type EventLog, type LogEntry, type NewEntry } from '../../src/log/log.js';
import { MemoryLog } from '../../src/log/memory.js';
import { createMetrics } from '../../src/metrics.js';
import { ALL_TYPES, TYPE_BIT } from '../../src/sse/event.js';
import { Hub } from '../../src/sse/hub.js';

const reading = (device: string, seq: number): NewEntry => ({
  name: 'telemetry',
  device,
  bit: TYPE_BIT.telemetry,
  data: { device, seq },
  deviceTs: 1_000 + seq,
});

const positions = (entries: Iterable<LogEntry>) => [...entries].map((e) => e.seq);

function hubOver(log: EventLog): Hub {
  return new Hub({ replaySize: 100, clientBufferBytes: 1 << 20, heartbeatMs: 60_000, writeDeadlineMs: 1_000, coalesceMs: 0, writesPerSecond: 100, metrics: createMetrics(), log });
}

describe('embedded event log (MemoryLog)', () => {
  it('numbers entries densely from 1 and delivers each once, in order, before append returns', () => {
    const log = new MemoryLog({ replaySize: 10, epoch: 'e1' });
    const first: number[] = [];
    const second: number[] = [];
    log.onEntries((batch) => first.push(...batch.map((e) => e.seq)));
    log.onEntries((batch) => second.push(...batch.map((e) => e.seq)));
    expect(log.head).toBe(0);
    for (let i = 1; i <= 5; i += 1) {
      log.append(reading('d1', i));
      expect(first.at(-1), 'delivered within the append').toBe(i);
      expect(log.head).toBe(i);
    }
    expect(first).toEqual([1, 2, 3, 4, 5]);
    expect(second).toEqual([1, 2, 3, 4, 5]);
  });

  it('encodes each entry once, with the id <epoch>-<position>, and keeps what a stream needs', () => {
    const log = new MemoryLog({ replaySize: 10, epoch: 'abcd1234' });
    const seen: LogEntry[] = [];
    log.onEntries((batch) => seen.push(...batch));
    log.append(reading('pump-1', 7));
    log.append({ name: 'upstream', device: null, bit: 0, data: { mqtt: 'down', ts: 5 } });
    expect(seen[0]!.frame.toString()).toBe(`event: telemetry\nid: abcd1234-1\ndata: {"device":"pump-1","seq":7}\n\n`);
    expect(seen[0]).toMatchObject({ seq: 1, name: 'telemetry', device: 'pump-1', bit: TYPE_BIT.telemetry, deviceTs: 1_007 });
    expect(seen[1]).toMatchObject({ seq: 2, name: 'upstream', device: null, bit: 0, deviceTs: undefined });
    expect(eventId(log.epoch, 2)).toBe('abcd1234-2');
    // The replayed entry is the very object (and buffer) streams got live: serialised once.
    const [kept] = [...log.range(0)];
    expect(kept).toBe(seen[0]);
  });

  it('draws a fresh epoch per log, in the shape event ids take', () => {
    const a = new MemoryLog({ replaySize: 1 });
    const b = new MemoryLog({ replaySize: 1 });
    expect(a.epoch).toMatch(/^[0-9a-z]{4,32}$/);
    expect(b.epoch).toMatch(/^[0-9a-z]{4,32}$/);
    expect(a.epoch).not.toBe(b.epoch);
  });

  it('covers a resume only while every later entry is retained, and never ahead of the head', () => {
    const log = new MemoryLog({ replaySize: 3, epoch: 'e1' });
    expect(log.covers(0)).toBe(true);
    expect(log.covers(1)).toBe(false);
    for (let i = 1; i <= 5; i += 1) log.append(reading('d1', i));
    expect(log.covers(0)).toBe(false);
    expect(log.covers(1)).toBe(false);
    expect(log.covers(2)).toBe(true);
    expect(positions(log.range(2))).toEqual([3, 4, 5]);
    expect(positions(log.range(4))).toEqual([5]);
    expect(log.covers(5)).toBe(true);
    expect(positions(log.range(5))).toEqual([]);
    expect(log.covers(6)).toBe(false);
  });

  it('evicts by bytes as well as by count', () => {
    const log = new MemoryLog({ replaySize: 1_000, replayMaxBytes: 200, epoch: 'e1' });
    for (let i = 1; i <= 20; i += 1) log.append(reading('d1', i));
    const kept = positions(log.range(log.head - 1));
    expect(kept).toEqual([20]);
    expect(log.covers(1)).toBe(false);
    const frame = [...log.range(19)][0]!.frame.length;
    const oldest = 20 - Math.floor(200 / frame);
    expect(log.covers(oldest)).toBe(true);
    expect(log.covers(oldest - 1)).toBe(false);
  });

  it('with no replay window covers only the head', () => {
    const log = new MemoryLog({ replaySize: 0, epoch: 'e1' });
    log.append(reading('d1', 1));
    log.append(reading('d1', 2));
    expect(log.covers(2)).toBe(true);
    expect(log.covers(1)).toBe(false);
  });
});

describe('hub over a given log', () => {
  it('fans out what the log delivers: its head, ids and history are the log\'s', () => {
    const log = new MemoryLog({ replaySize: 100, epoch: 'given01' });
    log.append(reading('d0', 0));
    const hub = hubOver(log);
    expect(hub.instanceId).toBe('given01');
    expect(hub.head).toBe(1);
    log.append(reading('d1', 1));
    log.append({ name: 'status', device: 'd2', bit: TYPE_BIT.status, data: { device: 'd2', state: 'online' } });
    expect(hub.head).toBe(3);
    expect(hub.idOf(3)).toBe('given01-3');
    const all = { devices: null, mask: ALL_TYPES };
    expect(positions(hub.eventsAfter(1, all)!)).toEqual([2, 3]);
    expect(positions(hub.eventsAfter(1, { devices: new Set(['d2']), mask: ALL_TYPES })!)).toEqual([3]);
    const resumed = hub.resume('given01-1', all);
    expect(resumed.kind === 'replay' && positions(resumed.events)).toEqual([2, 3]);
    expect(hub.resume('given01-4', all)).toEqual({ kind: 'reset', reason: 'unknown-id' });
    expect(hub.resume('other01-1', all)).toEqual({ kind: 'reset', reason: 'other-instance' });
    // publish goes through the log too: same numbering, the entry the log delivered.
    const event = hub.publish('telemetry', 'd1', TYPE_BIT.telemetry, { seq: 2 });
    expect(event.seq).toBe(4);
    expect(log.head).toBe(4);
    expect([...log.range(3)][0]).toBe(event);
  });

  it('refuses publish on a log that does not deliver within its append', () => {
    const log = new MemoryLog({ replaySize: 10, epoch: 'e1' });
    const silent: EventLog = {
      mode: 'memory',
      epoch: 'e1',
      pacingMs: 0,
      get head() {
        return log.head;
      },
      append: (entry) => log.append(entry),
      onEntries: () => undefined,
      covers: (after) => log.covers(after),
      retainedAfter: 0,
      range: (after) => log.range(after),
    };
    const hub = hubOver(silent);
    expect(() => hub.publish('telemetry', 'd1', TYPE_BIT.telemetry, {})).toThrow(/did not deliver position 1/);
    expect(hub.head).toBe(0);
    expect(hub.eventsAfter(0, { devices: null, mask: ALL_TYPES })).toEqual([]);
  });
});
