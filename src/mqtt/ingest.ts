import type { AckMessage, CommandMessage } from '../devices/schema.js';
import { parseMessage } from '../devices/schema.js';
import type { DeviceStore } from '../devices/store.js';
import type { RateLimitedLog } from '../logger.js';
import type { Metrics, MqttKind, RejectReason } from '../metrics.js';
import { TYPE_BIT } from '../sse/event.js';
import type { Hub } from '../sse/hub.js';

export interface IngestDeps {
  topicPrefix: string;
  maxPayloadBytes: number;
  store: DeviceStore;
  hub: Hub;
  metrics: Metrics;
  warn: RateLimitedLog;
  onAck(ack: AckMessage): void;
  /** A command another replica sent to a device. */
  onCommand(command: CommandMessage): void;
  now?: () => number;
}

/**
 * MQTT message → validated device message → device state → hub. Whatever is invalid, repeated or
 * over a limit stops here: counted by reason, logged at most once a minute per device.
 */
export function createIngest(deps: IngestDeps) {
  const { store, hub, metrics, warn } = deps;
  const now = deps.now ?? Date.now;

  function rejected(kind: MqttKind, reason: RejectReason, device: string | undefined, detail: string, topic: string) {
    metrics.mqttRejected.inc({ reason });
    warn.warn(`mqtt:${device ?? '?'}`, { reason, kind, device, topic: topic.slice(0, 200), detail }, 'mqtt message rejected');
  }

  /** `retained`: the broker's stored copy (on subscribe), history rather than a sign of life. */
  return function ingest(topic: string, payload: Buffer, retained = false): void {
    const parsed = parseMessage(deps.topicPrefix, topic, payload, deps.maxPayloadBytes);
    if (!parsed.ok) {
      metrics.mqttReceived.inc({ kind: parsed.kind });
      rejected(parsed.kind, parsed.reason, parsed.device, parsed.detail, topic);
      return;
    }
    const msg = parsed.message;
    metrics.mqttReceived.inc({ kind: msg.kind });
    const at = now();
    switch (msg.kind) {
      case 'status': {
        const applied = store.applyStatus(msg, at, retained);
        if (applied === 'changed') {
          const view = store.get(msg.device)!;
          hub.publish('status', msg.device, TYPE_BIT.status, { device: msg.device, state: view.state, ts: view.stateTs }, msg.ts);
        } else if (applied !== 'unchanged') {
          rejected('status', applied === 'limit' ? 'device_limit' : 'duplicate', msg.device, 'stale or refused status', topic);
        }
        return;
      }
      case 'telemetry': {
        const applied = store.applyTelemetry(msg, at);
        if (applied !== 'changed') {
          rejected('telemetry', applied === 'limit' ? 'device_limit' : 'duplicate', msg.device, `seq ${msg.seq} already seen`, topic);
          return;
        }
        const { device, ts, seq, metrics: values } = msg;
        hub.publish('telemetry', device, TYPE_BIT.telemetry, { device, ts, seq, metrics: values }, ts);
        return;
      }
      case 'events': {
        const applied = store.applyAlert(msg, at);
        if (applied !== 'changed') {
          rejected('events', applied === 'limit' ? 'device_limit' : 'duplicate', msg.device, `seq ${msg.seq} already seen`, topic);
          return;
        }
        const { device, ts, seq, type, severity, message } = msg;
        hub.publish('alert', device, TYPE_BIT.event, { device, ts, seq, type, severity, message }, ts);
        return;
      }
      case 'acks':
        store.touch(msg.device, at);
        deps.onAck(msg);
        return;
      case 'commands':
        deps.onCommand(msg);
        return;
    }
  };
}
