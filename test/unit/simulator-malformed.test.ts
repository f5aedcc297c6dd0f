import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parseMessage } from '../../src/devices/schema.js';
import { DEFAULT_TOPIC_PREFIX } from '../../src/protocol.js';
import { HUGE_BYTES, MALFORMED_KINDS, malformedKind, malformedPayload, malformedTelemetry } from '../../src/simulator/malformed.js';

const reading = { ts: 1_700_000_000_000, seq: 7, metrics: { temperature: 21.5, humidity: 40.1, battery: 88.2, rssi: -61 } };
const TOPIC = `${DEFAULT_TOPIC_PREFIX}/sim-001/telemetry`;
/** The service's default MQTT_MAX_PAYLOAD_BYTES: what a deployment refuses by default. */
const MAX = loadConfig({ AUTH: 'off' }).mqtt.maxPayloadBytes;

describe('malformed telemetry', () => {
  it.each(MALFORMED_KINDS)('of kind %s is rejected by the service\'s own validator', (kind) => {
    const parsed = parseMessage(DEFAULT_TOPIC_PREFIX, TOPIC, malformedPayload(kind, reading), MAX);
    expect(parsed.ok).toBe(false);
  });

  it('is built from the same reading that would otherwise have been sent valid', () => {
    expect(parseMessage(DEFAULT_TOPIC_PREFIX, TOPIC, Buffer.from(JSON.stringify(reading)), MAX).ok).toBe(true);
  });

  it('cycles through every kind in a fixed order', () => {
    const kinds = Array.from({ length: MALFORMED_KINDS.length }, (_, i) => malformedKind(i + 3));
    expect(new Set(kinds).size).toBe(MALFORMED_KINDS.length);
    expect(malformedKind(3)).toBe(malformedKind(3 + MALFORMED_KINDS.length));
  });

  it('includes a payload larger than the default MQTT_MAX_PAYLOAD_BYTES', () => {
    expect(malformedPayload('huge', reading).length).toBeGreaterThan(HUGE_BYTES);
    expect(HUGE_BYTES).toBeGreaterThan(MAX);
  });

  it('includes strings with CR and LF that would break SSE framing if written raw', () => {
    expect(malformedPayload('string-metric-with-crlf', reading).toString()).toContain('\\r\\n');
    expect(malformedPayload('metric-name-with-crlf', reading).toString()).toContain('\\r\\n');
  });

  it('stays under the broker\'s maximum packet size, so it never gets the device disconnected', () => {
    const huge = MALFORMED_KINDS.indexOf('huge');
    expect(malformedTelemetry(huge, reading, undefined, TOPIC).length).toBeGreaterThan(HUGE_BYTES);
    expect(malformedTelemetry(huge, reading, 131_072, TOPIC).length).toBeGreaterThan(HUGE_BYTES);
    const small = malformedTelemetry(huge, reading, MAX, TOPIC);
    expect(small.length).toBeLessThan(1_000);
    expect(parseMessage(DEFAULT_TOPIC_PREFIX, TOPIC, small, MAX).ok).toBe(false);
  });
});
