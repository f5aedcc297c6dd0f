// What a device card says about a command (web/command-text.js): from the HTTP answer to our own
// request, and from the `command` events every stream gets. Plain browser JavaScript without DOM
// use, checked here directly; the e2e test clicks the real buttons.
import { describe, expect, it } from 'vitest';
import { describeAnswer, describeEvent } from '../../web/command-text.js';

const answered = (status: number, body: unknown) => describeAnswer('Ping', status, body);

describe('dashboard command outcomes', () => {
  it('tells a device that went offline while its command waited apart from an unknown state', () => {
    const outcome = describeEvent({ device: 'pump-1', id: 'c1', name: 'ping', status: 'offline', ts: 1, durationMs: 900 });
    expect(outcome).toEqual({ id: 'c1', status: 'offline', text: 'Ping not confirmed: the device went offline before acknowledging' });
  });

  it('shows the service\'s reason for a 409: offline before sending, or gone offline while waiting', () => {
    const before = answered(409, { error: 'device_offline', message: 'Device "pump-1" is offline.' });
    expect(before).toEqual({ id: null, status: 'offline', text: 'Ping: Device "pump-1" is offline.' });
    const went = 'Device "pump-1" went offline without acknowledging; it may still run the command if it had received it or reconnects within 6 s of it being sent.';
    expect(answered(409, { error: 'device_offline', message: went })).toEqual({ id: null, status: 'offline', text: `Ping: ${went}` });
    // nginx or a proxy may answer without a body.
    expect(answered(409, null)).toMatchObject({ status: 'offline', text: 'Ping: the device is offline' });
  });

  it('says why a command too large to publish was refused (413)', () => {
    const message = 'The command would be published as 70442 bytes of JSON, past the 65536 a device accepts; numbers are written out in full (1e20 as 21 digits).';
    expect(answered(413, { error: 'payload_too_large', message })).toEqual({ id: null, status: 'error', text: `Ping rejected: ${message}` });
  });
});
