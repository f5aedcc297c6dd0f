import { describe, expect, it } from 'vitest';
import { alertTime } from '../../web/format.js';

describe('dashboard alert times', () => {
  it('shows the time the service received an alert, the device clock on hover', () => {
    const at = Date.now() - 60_000;
    const when = alertTime(at, at - 3_600_000, true);
    expect(when.text).toMatch(/^since \d/);
    expect(when.dateTime).toBe(new Date(at).toISOString());
    expect(when.title).toContain('device clock');
  });

  it('says the time is unknown for an alert stamped 0 (a retained copy from a clock ahead), never 1970', () => {
    for (const active of [true, false]) {
      const when = alertTime(0, Date.now() + 86_400_000, active);
      expect(when.text).toMatch(/unknown/);
      expect(when.text).not.toMatch(/1970|\d/);
      expect(when.dateTime).toBe('');
    }
  });
});
