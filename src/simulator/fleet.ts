import { setTimeout as sleep } from 'node:timers/promises';
import { RateLimitedLog, type Logger } from '../logger.js';
import { deviceIds, type SimConfig } from './config.js';
import { SimDevice, type DeviceCounters } from './device.js';
import { seededRandom, seedFor } from './random.js';

export interface FleetStats extends DeviceCounters {
  devices: number;
  /** Devices that have begun connecting; below `devices` while the start is still staggered. */
  started: number;
  online: number;
}

export interface Fleet {
  readonly devices: readonly string[];
  /** The seed of this run's random walks: set SIM_SEED to it to replay the same readings. */
  readonly seed: number;
  /** Resolves once every device has begun connecting (starts are spread at SIM_CONNECT_RATE). */
  readonly started: Promise<void>;
  /** Kills one device's socket without DISCONNECT; false if unknown or not online. */
  dropConnection(id: string): boolean;
  stats(): FleetStats;
  /** Resolves once at least `count` devices are online; rejects after `timeoutMs`. */
  waitForOnline(count?: number, timeoutMs?: number): Promise<void>;
  /** Graceful: every device publishes its offline status and disconnects. Idempotent. */
  stop(): Promise<void>;
}

export interface FleetOptions {
  now?: () => number;
}

/** Builds the fleet and starts connecting in the background; `stop` works at any moment. */
export function createFleet(config: Readonly<SimConfig>, logger: Logger, options: FleetOptions = {}): Fleet {
  const now = options.now ?? Date.now;
  const seed = config.seed ?? Math.floor(Math.random() * 2 ** 32);
  const warn = new RateLimitedLog(logger);
  const ids = deviceIds(config.idPrefix, config.devices);
  const devices = ids.map((id, index) =>
    new SimDevice(id, { config, logger, warn, random: seededRandom(seedFor(seed, id)), index, now }));
  const byId = new Map(devices.map((device) => [device.id, device]));
  const abort = new AbortController();
  let startedCount = 0;
  let stopping: Promise<void> | undefined;

  logger.info({ devices: ids.length, seed, url: withoutCredentials(config.mqtt.url), prefix: config.mqtt.topicPrefix },
    'simulator fleet starting');

  // Spread the connects: 10,000 sockets opened in one tick look like a SYN flood to the broker.
  const started = (async () => {
    const batch = Math.max(1, Math.ceil(config.connectRate / 20));
    const pauseMs = (1000 * batch) / config.connectRate;
    for (let i = 0; i < devices.length; i += batch) {
      if (abort.signal.aborted) return;
      for (const device of devices.slice(i, i + batch)) device.start();
      startedCount = Math.min(devices.length, i + batch);
      if (startedCount < devices.length) await sleep(pauseMs, undefined, { signal: abort.signal }).catch(() => undefined);
    }
  })();

  const stats = (): FleetStats => {
    const total: FleetStats = {
      devices: devices.length, started: startedCount, online: 0,
      sent: 0, telemetry: 0, events: 0, acks: 0, malformed: 0, faults: 0, connects: 0, publishErrors: 0,
    };
    for (const device of devices) {
      if (device.online) total.online += 1;
      const c = device.counters;
      total.sent += c.sent;
      total.telemetry += c.telemetry;
      total.events += c.events;
      total.acks += c.acks;
      total.malformed += c.malformed;
      total.faults += c.faults;
      total.connects += c.connects;
      total.publishErrors += c.publishErrors;
    }
    return total;
  };

  return {
    devices: ids,
    seed,
    started,
    stats,
    dropConnection: (id) => byId.get(id)?.drop() ?? false,
    async waitForOnline(count = devices.length, timeoutMs = 30_000) {
      const deadline = now() + timeoutMs;
      for (;;) {
        const { online } = stats();
        if (online >= count) return;
        if (now() > deadline) throw new Error(`only ${online} of ${count} devices online after ${timeoutMs} ms`);
        await sleep(25);
      }
    },
    stop() {
      stopping ??= (async () => {
        abort.abort();
        await started;
        await Promise.all(devices.map((device) => device.stop()));
      })();
      return stopping;
    },
  };
}

/** Creates the fleet and resolves once every device has begun connecting. */
export async function startFleet(config: Readonly<SimConfig>, logger: Logger, options: FleetOptions = {}): Promise<Fleet> {
  const fleet = createFleet(config, logger, options);
  await fleet.started;
  return fleet;
}

/** MQTT_URL may carry user:password; a log line must not. */
function withoutCredentials(url: string): string {
  const parsed = new URL(url);
  parsed.username = '';
  parsed.password = '';
  return parsed.toString();
}
