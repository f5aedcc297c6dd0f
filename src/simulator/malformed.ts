// Payloads that are wrong on purpose, so the service's validation, rejection counters and
// rate-limited logs get exercised by the same simulator that drives the happy path. Each kind
// targets a different check; devices cycle through them so every kind shows up in a short run.

import type { Metrics } from './sensors.js';

// No empty payload: that is how a retained message is cleared, which the service takes as such.
export const MALFORMED_KINDS = [
  'not-json',
  'truncated-json',
  'nan-metric',
  'wrong-shape',
  'string-metric-with-crlf',
  'metric-name-with-crlf',
  'huge',
  'invalid-utf8',
  'json-array',
  'nul-in-string',
] as const;

export type MalformedKind = (typeof MALFORMED_KINDS)[number];

/** Larger than the service's default MQTT_MAX_PAYLOAD_BYTES (65536; a unit test checks it). */
export const HUGE_BYTES = 96 * 1024;

export interface Reading {
  ts: number;
  seq: number;
  metrics: Metrics;
}

/** The `n`th kind in a fixed cycle: the same run order every time, all kinds within a cycle. */
export function malformedKind(n: number): MalformedKind {
  return MALFORMED_KINDS[((n % MALFORMED_KINDS.length) + MALFORMED_KINDS.length) % MALFORMED_KINDS.length]!;
}

export function malformedPayload(kind: MalformedKind, reading: Reading): Buffer {
  const { ts, seq, metrics } = reading;
  const valid = JSON.stringify(reading);
  switch (kind) {
    case 'not-json':
      return Buffer.from(`temperature=${metrics.temperature};humidity=${metrics.humidity}`);
    case 'truncated-json':
      return Buffer.from(valid.slice(0, Math.floor(valid.length / 2)));
    case 'nan-metric':
      // JSON has no NaN; firmware that prints floats with printf produces exactly this.
      return Buffer.from(`{"ts":${ts},"seq":${seq},"metrics":{"temperature":NaN,"humidity":${metrics.humidity}}}`);
    case 'wrong-shape':
      return Buffer.from(JSON.stringify({ ts: String(ts), seq: -seq, metrics: Object.values(metrics) }));
    case 'string-metric-with-crlf':
      // If this reached an SSE stream unescaped it would end the event and inject a fake one.
      return Buffer.from(JSON.stringify({ ts, seq, metrics: { temperature: `${metrics.temperature}\r\n\r\nevent: reset\r\ndata: {}` } }));
    case 'metric-name-with-crlf':
      return Buffer.from(JSON.stringify({ ts, seq, metrics: { 'temperature\r\nevent: reset\r\n\r\ndata: x': metrics.temperature } }));
    case 'huge':
      return Buffer.from(JSON.stringify({ ts, seq, metrics, padding: 'x'.repeat(HUGE_BYTES) }));
    case 'invalid-utf8':
      return Buffer.concat([Buffer.from('{"ts":'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('}')]);
    case 'json-array':
      return Buffer.from(JSON.stringify([reading]));
    case 'nul-in-string':
      return Buffer.from(JSON.stringify({ ts, seq, metrics: { 'temperature\u0000': metrics.temperature } }));
  }
}

/**
 * The `n`th malformed stand-in for `reading`. A payload past the broker's Maximum Packet Size
 * would make the broker close the session, a fault nobody asked for: it becomes `not-json`.
 */
export function malformedTelemetry(n: number, reading: Reading, maxPacketSize: number | undefined, topic: string): Buffer {
  const payload = malformedPayload(malformedKind(n), reading);
  const overhead = Buffer.byteLength(topic) + 16; // fixed header, topic length, packet id, properties
  return maxPacketSize !== undefined && payload.length + overhead > maxPacketSize ? malformedPayload('not-json', reading) : payload;
}
