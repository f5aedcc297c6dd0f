import { describe, expect, it } from 'vitest';
import { decodeFold, encodeFold, type Fold } from '../../src/log/fold.js';

const reading = { ts: 1_700_000_000_000, seq: 7, metrics: { temperature: 21.5, humidity: 40 } };
const head = { state: 'online' as const, stateTs: 1_699_999_999_000, lastSeen: 1_700_000_000_010, telemetry: reading };
const data = { device: 'pump-1', ts: reading.ts, seq: reading.seq, metrics: reading.metrics };
const alert = { type: 'overheat', severity: 'critical' as const, message: 'hot', ts: 1_700_000_000_005, seq: 3, at: 1_700_000_000_006 };

describe('a fold as the shared log stores it', () => {
  it('leaves a telemetry event\'s reading to the event\'s data, and the reader puts it back', () => {
    for (const fold of [{ h: head }, { h: head, a: alert }] satisfies Fold[]) {
      const stored = encodeFold(fold, 'telemetry', data);
      expect(stored).not.toContain('telemetry');
      expect(stored).not.toContain('humidity');
      expect(decodeFold(stored, 'telemetry', JSON.stringify(data))).toEqual(fold);
    }
  });

  it('keeps the head whole where the event is not that reading', () => {
    const cases: [Fold, string | undefined, unknown][] = [
      [{ h: head }, 'status', { device: 'pump-1', state: 'online', ts: head.stateTs }],
      [{ h: head }, undefined, null],
      [{ h: { ...head, telemetry: null } }, 'status', { device: 'pump-1', state: 'online', ts: null }],
      // A reading other than the head's (never made so by the ingest, but not to be lost if it were).
      [{ h: head }, 'telemetry', { ...data, seq: 8 }],
      [{ h: head }, 'telemetry', { ...data, metrics: { ...reading.metrics } }],
      [{ forget: true }, undefined, null],
    ];
    for (const [fold, name, event] of cases) {
      const stored = encodeFold(fold, name, event);
      expect(stored).toBe(JSON.stringify(fold));
      expect(decodeFold(stored, name, name ? JSON.stringify(event) : undefined)).toEqual(fold);
    }
  });

  it('reads a fold stored whole with its event (as earlier builds stored every fold)', () => {
    expect(decodeFold(JSON.stringify({ h: head }), 'telemetry', JSON.stringify(data))).toEqual({ h: head });
  });

  it('reads a head without a reading on an entry that has none as no reading', () => {
    const { telemetry: _, ...rest } = head;
    expect(decodeFold(JSON.stringify({ h: rest }), 'status', '{"device":"pump-1"}')).toEqual({ h: { ...rest, telemetry: null } });
    expect(decodeFold(JSON.stringify({ h: rest }), 'telemetry', '{"device":"pump-1"}')).toEqual({ h: { ...rest, telemetry: null } });
  });
});
