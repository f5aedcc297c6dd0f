// The device side of the MQTT topic contract (README.md, "The contract in short").
import { TOPIC_KINDS, type TopicKind } from '../protocol.js';

/** One device's topic for each kind: `<prefix>/<id>/<kind>`. */
export type DeviceTopics = Readonly<Record<TopicKind, string>>;

export function deviceTopics(prefix: string, id: string): DeviceTopics {
  return Object.fromEntries(TOPIC_KINDS.map((kind) => [kind, `${prefix}/${id}/${kind}`])) as Record<TopicKind, string>;
}

/** The last will: the broker publishes it when the connection dies, so it cannot carry a time. */
export const WILL_PAYLOAD = JSON.stringify({ state: 'offline' });

export function statusPayload(state: 'online' | 'offline', ts: number): string {
  return JSON.stringify({ state, ts });
}
