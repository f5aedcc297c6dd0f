// A device of an e2e test's own, beside the simulated fleet.
import mqtt from 'mqtt';
import type { Stack } from '../../src/native/stack.js';
import { DEFAULT_TOPIC_PREFIX, type Severity } from '../../src/protocol.js';
import { deviceTopics, statusPayload, WILL_PAYLOAD } from '../../src/simulator/topics.js';
import { deviceLogin } from '../helpers/devices.js';

/**
 * A device of the test's own, speaking MQTT as a real one does (its own login, its id as client
 * id, a last will, retained status), so it can raise exactly the alerts a test needs.
 */
export interface Probe {
  id: string;
  /** Resolves with the alert's ts. */
  alert(type: string, severity: Severity, message: string): Promise<number>;
  /** One reading, stamped now by default (the device's clock is the machine's); resolves with its ts. */
  telemetry(metrics: Record<string, number>, ts?: number): Promise<number>;
  close(): Promise<void>;
}

export async function connectProbe(stack: Pick<Stack, 'urls' | 'mosquitto'>, id: string): Promise<Probe> {
  const topics = deviceTopics(DEFAULT_TOPIC_PREFIX, id);
  const client = await mqtt.connectAsync(stack.urls.mqtt, {
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...(await deviceLogin(stack.mosquitto, id)),
    will: { topic: topics.status, payload: Buffer.from(WILL_PAYLOAD), qos: 1, retain: true },
  });
  await client.publishAsync(topics.status, statusPayload('online', Date.now()), { qos: 1, retain: true });
  let seq = 0;
  return {
    id,
    async alert(type, severity, message) {
      seq += 1;
      const ts = Date.now();
      await client.publishAsync(topics.events, JSON.stringify({ ts, seq, type, severity, message }), { qos: 1 });
      return ts;
    },
    async telemetry(metrics, ts = Date.now()) {
      seq += 1;
      await client.publishAsync(topics.telemetry, JSON.stringify({ ts, seq, metrics }), { qos: 1 });
      return ts;
    },
    async close() {
      await client.publishAsync(topics.status, statusPayload('offline', Date.now()), { qos: 1, retain: true }).catch(() => undefined);
      await client.endAsync().catch(() => undefined);
    },
  };
}
