import mqtt, { type MqttClient } from 'mqtt';

export async function connectPublisher(url: string, options: mqtt.IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, ...options });
}

export const now = () => Date.now();

export function telemetry(seq: number, metrics: Record<string, number> = { temperature: 20 + seq / 10 }, ts = Date.now()) {
  return JSON.stringify({ ts, seq, metrics });
}
