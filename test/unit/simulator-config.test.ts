import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/env.js';
import { DEFAULT_TOPIC_PREFIX, DEVICE_ID } from '../../src/protocol.js';
import { deviceIds, loadSimConfig } from '../../src/simulator/config.js';

function problems(env: Record<string, string>): string[] {
  try {
    loadSimConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('simulator config', () => {
  it('has the documented defaults when nothing is set', () => {
    expect(loadSimConfig({})).toEqual({
      mqtt: { url: 'mqtt://localhost:1883', username: undefined, password: undefined, topicPrefix: DEFAULT_TOPIC_PREFIX },
      devices: 20, idPrefix: 'sim', intervalMs: 1_000, keepaliveS: 10, faultRate: 0, malformedRate: 0,
      telemetryQos: 1, ackDelayMs: 300, connectRate: 500, seed: undefined, readyFile: undefined, logLevel: 'info',
    });
  });

  it('is frozen, nested parts included', () => {
    const config = loadSimConfig({});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.mqtt)).toBe(true);
  });

  it('reads every variable', () => {
    const config = loadSimConfig({
      MQTT_URL: 'mqtts://broker:8883', MQTT_USERNAME: 'device', MQTT_PASSWORD: 's3cret', MQTT_TOPIC_PREFIX: 'site/a',
      SIM_DEVICES: '3', SIM_ID_PREFIX: 'dev', SIM_INTERVAL_MS: '250', SIM_KEEPALIVE_S: '5', SIM_FAULT_RATE: '0.5',
      SIM_MALFORMED_RATE: '0.1', SIM_TELEMETRY_QOS: '0', SIM_ACK_DELAY_MS: '0', SIM_CONNECT_RATE: '50', SIM_SEED: '42', SIM_READY_FILE: '/tmp/sim.ready', LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      mqtt: { url: 'mqtts://broker:8883', username: 'device', password: 's3cret', topicPrefix: 'site/a' },
      devices: 3, idPrefix: 'dev', intervalMs: 250, keepaliveS: 5, faultRate: 0.5, malformedRate: 0.1,
      telemetryQos: 0, ackDelayMs: 0, connectRate: 50, seed: 42, readyFile: '/tmp/sim.ready', logLevel: 'debug',
    });
  });

  it.each([
    ['SIM_DEVICES', '0'], ['SIM_DEVICES', '10001'], ['SIM_DEVICES', 'many'], ['SIM_INTERVAL_MS', '5'],
    ['SIM_KEEPALIVE_S', '0'], ['SIM_FAULT_RATE', '61'], ['SIM_MALFORMED_RATE', '1.5'], ['SIM_TELEMETRY_QOS', '2'],
    ['SIM_ACK_DELAY_MS', '-1'], ['SIM_ID_PREFIX', 'has space'], ['MQTT_TOPIC_PREFIX', 'devices/#'],
    ['MQTT_URL', 'http://broker'], ['LOG_LEVEL', 'loud'], ['SIM_SEED', 'abc'],
    ['SIM_READY_FILE', 'relative/path'], ['SIM_READY_FILE', '/tmp/a b'],
  ])('reports %s=%s by name and value', (name, value) => {
    const found = problems({ [name]: value });
    expect(found).toHaveLength(1);
    expect(found[0]).toContain(`${name}=${JSON.stringify(value)}`);
  });

  it('reports every bad variable at once, one line each', () => {
    expect(problems({ SIM_DEVICES: '0', SIM_FAULT_RATE: 'x', LOG_LEVEL: 'loud' })).toHaveLength(3);
  });

  it('refuses an id prefix that would make device ids longer than 64 characters', () => {
    const found = problems({ SIM_ID_PREFIX: 'p'.repeat(60), SIM_DEVICES: '10000' });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^SIM_ID_PREFIX=.*64 characters/);
    expect(problems({ SIM_ID_PREFIX: 'p'.repeat(58), SIM_DEVICES: '10000' })).toEqual([]);
  });

  it('never echoes the password in an error line', () => {
    // Both halves are distinctive, so any echo of the value (raw, JSON-escaped, or split at the
    // line break) would show up in what main.ts prints: err.problems, one line each.
    const secret = 'Hunter2Leak\nQx7Tail';
    let error: unknown;
    try {
      loadSimConfig({ MQTT_PASSWORD: secret });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const { problems: found, message } = error as ConfigError;
    expect(found).toEqual(['MQTT_PASSWORD=<redacted> is invalid: expected at least 1 characters without line breaks']);
    for (const text of [...found, message]) {
      expect(text).not.toContain('Hunter2Leak');
      expect(text).not.toContain('Qx7Tail');
    }
  });
});

describe('device ids', () => {
  it('are the prefix and a zero-padded number that matches the device id contract', () => {
    expect(deviceIds('sim', 3)).toEqual(['sim-001', 'sim-002', 'sim-003']);
    expect(deviceIds('sim', 10_000).at(-1)).toBe('sim-10000');
    expect(deviceIds('sim', 10_000)[0]).toBe('sim-00001');
    for (const id of deviceIds('a_b-c', 50)) expect(id).toMatch(DEVICE_ID);
  });
});
