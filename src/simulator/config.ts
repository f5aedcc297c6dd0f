import { LOG_LEVELS, type LogLevel } from '../config.js';
import { EnvReader, type Env } from '../env.js';
import { DEFAULT_TOPIC_PREFIX, DEVICE_ID, TOPIC_PREFIX } from '../protocol.js';
import { readCredentials } from '../broker/credentials.js';

export interface SimConfig {
  mqtt: {
    url: string;
    /** One login for every device, for a broker without per-device identities; see `credentials`. */
    username: string | undefined;
    password: string | undefined;
    topicPrefix: string;
    /**
     * Each device's own password (SIM_CREDENTIALS_FILE), its username and client id being its
     * device id: what the project broker requires. Replaces username/password when set.
     */
    credentials: ReadonlyMap<string, string> | undefined;
  };
  devices: number;
  idPrefix: string;
  intervalMs: number;
  keepaliveS: number;
  /** Expected abrupt disconnects per device per minute (a Poisson rate, not a probability). */
  faultRate: number;
  /** Fraction of telemetry messages replaced by a deliberately invalid payload. */
  malformedRate: number;
  telemetryQos: 0 | 1;
  ackDelayMs: number;
  /** New connections opened per second while the fleet starts. */
  connectRate: number;
  /** Seed for the random walks; unset means a different fleet every run. */
  seed: number | undefined;
  /** A file that exists while at least one device holds an acknowledged connection (healthchecks). */
  readyFile: string | undefined;
  logLevel: LogLevel;
}

const ID_PREFIX = /^[A-Za-z0-9_-]{1,60}$/;
const ABSOLUTE_PATH = /^\/[A-Za-z0-9_.\/-]{1,255}$/;

/** Device ids are `<prefix>-001`, zero-padded to the width of the count (at least 3) so they sort. */
export function deviceId(prefix: string, n: number, count: number): string {
  return `${prefix}-${String(n).padStart(Math.max(3, String(count).length), '0')}`;
}

export function deviceIds(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => deviceId(prefix, i + 1, count));
}

/** Reads the simulator's environment once; throws ConfigError naming every bad variable. */
export function loadSimConfig(env: Env = process.env): Readonly<SimConfig> {
  const r = new EnvReader(env);
  const devices = r.int('SIM_DEVICES', 20, 1, 10_000);
  const idPrefix = r.string('SIM_ID_PREFIX', 'sim', ID_PREFIX, 'letters, digits, _ and - (1 to 60 characters)');
  const longest = deviceId(idPrefix, devices, devices);
  r.check(DEVICE_ID.test(longest),
    `SIM_ID_PREFIX=${JSON.stringify(idPrefix)} is invalid: device id ${JSON.stringify(longest)} would exceed 64 characters`);
  const credentialsFile = r.string('SIM_CREDENTIALS_FILE', undefined, ABSOLUTE_PATH, 'an absolute path of letters, digits and _ . / -');
  let credentials: Map<string, string> | undefined;
  if (credentialsFile !== undefined) {
    try {
      credentials = readCredentials(credentialsFile);
      const missing = deviceIds(idPrefix, devices).filter((id) => !credentials!.has(id));
      r.check(missing.length === 0,
        `SIM_CREDENTIALS_FILE=${JSON.stringify(credentialsFile)} has no password for ${missing.length} of the ${devices} devices (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''})`);
    } catch (err) {
      r.check(false, `SIM_CREDENTIALS_FILE=${JSON.stringify(credentialsFile)} is invalid: ${(err as Error).message}`);
    }
  }
  const config: SimConfig = {
    mqtt: {
      url: r.url('MQTT_URL', 'mqtt://localhost:1883', ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ws:', 'wss:']),
      username: r.string('MQTT_USERNAME', undefined, /^[^\r\n\0]{1,256}$/, 'up to 256 characters without line breaks'),
      password: r.secret('MQTT_PASSWORD'),
      topicPrefix: r.string('MQTT_TOPIC_PREFIX', DEFAULT_TOPIC_PREFIX, TOPIC_PREFIX,
        'topic levels of letters, digits, _ and - separated by / (no wildcards, no leading or trailing /)'),
      credentials,
    },
    devices,
    idPrefix,
    intervalMs: r.int('SIM_INTERVAL_MS', 1_000, 100, 3_600_000),
    // 0 would disable keepalive, and with it the broker's detection of a hung device.
    keepaliveS: r.int('SIM_KEEPALIVE_S', 10, 1, 65_535),
    faultRate: r.number('SIM_FAULT_RATE', 0, 0, 60),
    malformedRate: r.number('SIM_MALFORMED_RATE', 0, 0, 1),
    telemetryQos: r.oneOf('SIM_TELEMETRY_QOS', '1', ['0', '1']) === '0' ? 0 : 1,
    ackDelayMs: r.int('SIM_ACK_DELAY_MS', 300, 0, 60_000),
    connectRate: r.int('SIM_CONNECT_RATE', 500, 1, 100_000),
    seed: env['SIM_SEED']?.trim() ? r.int('SIM_SEED', 0, 0, 2 ** 32 - 1) : undefined,
    readyFile: r.string('SIM_READY_FILE', undefined, ABSOLUTE_PATH, 'an absolute path of letters, digits and _ . / -'),
    logLevel: r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
  };
  return r.done(config);
}
