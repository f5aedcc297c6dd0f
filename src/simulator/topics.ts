// The device side of the MQTT topic contract (README.md, "The contract in short").

export interface DeviceTopics {
  status: string;
  telemetry: string;
  events: string;
  commands: string;
  acks: string;
}

export function deviceTopics(prefix: string, id: string): DeviceTopics {
  const base = `${prefix}/${id}`;
  return {
    status: `${base}/status`,
    telemetry: `${base}/telemetry`,
    events: `${base}/events`,
    commands: `${base}/commands`,
    acks: `${base}/acks`,
  };
}

/** The last will: the broker publishes it when the connection dies, so it cannot carry a time. */
export const WILL_PAYLOAD = JSON.stringify({ state: 'offline' });

export function statusPayload(state: 'online' | 'offline', ts: number): string {
  return JSON.stringify({ state, ts });
}
