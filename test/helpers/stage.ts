// The setup most integration tests share: one real Mosquitto and one publisher for the test file,
// services started per test on their own topic prefix, and whatever a test opened closed after it.
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { connectPublisher } from './mqtt.js';
import { isolation, startService, type RunningService, type StartOptions } from './service.js';
import { SseCollector } from './sse-client.js';

/** A running service and the topic prefix its devices publish under. */
export type TestService = RunningService & { prefix: string };

export interface ServiceOptions extends StartOptions {
  /** The prefix and client id; a fresh pair by default. Pass the same pair to resume a session. */
  ids?: ReturnType<typeof isolation>;
}

export interface BrokerAndService {
  /** Started before the file's first test. */
  readonly broker: Mosquitto;
  readonly publisher: MqttClient;
  /** Run after the current test, last added first. */
  readonly cleanup: (() => unknown)[];
  /** A service on the broker (env after the defaults, so it may point MQTT_URL elsewhere), stopped after the test. */
  service(name: string, env?: Record<string, string>, options?: ServiceOptions): Promise<TestService>;
  /** An EventSource closed after the test. */
  collect(url: string, headers?: Record<string, string>): SseCollector;
}

/** Registers the file's hooks; call once, at the top level of a test file. */
export function withBrokerAndService(): BrokerAndService {
  let broker: Mosquitto | undefined;
  let publisher: MqttClient | undefined;
  const cleanup: (() => unknown)[] = [];

  beforeAll(async () => {
    broker = await Mosquitto.start();
    publisher = await connectPublisher(broker.url);
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });
  afterAll(async () => {
    await publisher?.endAsync();
    await broker?.stop();
  });

  const started = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`${what} starts in beforeAll: use it inside a test or hook`);
    return value;
  };
  return {
    get broker() {
      return started(broker, 'the broker');
    },
    get publisher() {
      return started(publisher, 'the publisher');
    },
    cleanup,
    async service(name, env = {}, { ids = isolation(name), ...options } = {}) {
      const running = await startService({ MQTT_URL: started(broker, 'the broker').url, ...ids, ...env }, options);
      cleanup.push(() => running.stop());
      return Object.assign(running, { prefix: ids.MQTT_TOPIC_PREFIX });
    },
    collect(url, headers) {
      const client = new SseCollector(url, headers);
      cleanup.push(() => client.close());
      return client;
    },
  };
}

/** The value of one metric line (`name{labels}`) from /metrics, or NaN when absent. */
export async function metric(url: string, line: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ')[1]) : Number.NaN;
}
