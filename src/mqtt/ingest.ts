import type { AckMessage, AlertMessage, CommandMessage } from '../devices/schema.js';
import { parseMessage } from '../devices/schema.js';
import { EventThrottle, TelemetryThrottle } from '../devices/limits.js';
import type { Applied, DeviceStore } from '../devices/store.js';
import type { Logger, RateLimitedLog } from '../logger.js';
import type { Metrics, MqttKind, RejectReason } from '../metrics.js';
import { TYPE_BIT } from '../sse/event.js';
import type { EventLog } from '../log/log.js';
import type { Severity } from '../protocol.js';

export interface IngestDeps {
  topicPrefix: string;
  maxPayloadBytes: number;
  store: DeviceStore;
  /** Where accepted events go; the hub fans out what it delivers. */
  log: Pick<EventLog, 'append'>;
  metrics: Metrics;
  warn: RateLimitedLog;
  /** For debug lines (cleared retained messages); none when absent. */
  logger?: Logger;
  /** Telemetry events a second each device may put on the stream (0 = no limit), and its burst. */
  deviceRate?: { rate: number; burst: number };
  /** Alerts + status changes a second each device may put on the stream (0 = no limit), and its burst. */
  eventRate?: { rate: number; burst: number };
  onAck(ack: AckMessage): void;
  /** A command another replica sent to a device. */
  onCommand(command: CommandMessage): void;
  now?: () => number;
}

export interface Ingest {
  /** `retained`: the broker's stored copy (on subscribe), history rather than a sign of life. */
  (topic: string, payload: Buffer, retained?: boolean): void;
  /** Stops the throttle's timer; what it held back is not sent. */
  stop(): void;
}

/** An alert as the stream carries it: the device's message, stamped with when the service took it. */
type AlertEvent = Omit<AlertMessage, 'kind'> & { at: number };

/** What the event throttle holds: a status (the store has the newest) or one alert event. */
type Held = { kind: 'status' } | { kind: 'alert'; alert: AlertEvent };

/** Eviction order when a device holds too many keys: status last, then critical, warning, info. */
const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

const REFUSED: Record<Exclude<Applied, 'changed' | 'unchanged'>, RejectReason> = {
  duplicate: 'duplicate',
  limit: 'device_limit',
  admission: 'admission',
};

/**
 * MQTT message → validated device message → device state → log (→ hub). Whatever is invalid, repeated or
 * over a limit stops here: counted by reason, logged at most once a minute per device (refusals of
 * new devices, which come from many ids, once a minute in all).
 */
export function createIngest(deps: IngestDeps): Ingest {
  const { store, log, metrics, warn } = deps;
  const now = deps.now ?? Date.now;

  function rejected(kind: MqttKind, reason: RejectReason, device: string | undefined, detail: string, topic: string) {
    metrics.mqttRejected.inc({ reason });
    // New ids are refused by the thousand in a flood, and so is garbage sent under invented ids:
    // one summary line a minute per reason, with the count. Known devices keep a line each.
    const perDevice = device !== undefined && reason !== 'admission' && reason !== 'device_limit' && store.has(device);
    const key = perDevice ? `mqtt:${device}` : `mqtt:${reason}`;
    warn.warn(key, { reason, kind, device, topic: topic.slice(0, 200), detail }, 'mqtt message rejected');
  }

  function refused(kind: MqttKind, applied: Applied, device: string, topic: string) {
    if (applied === 'changed' || applied === 'unchanged') return;
    rejected(kind, REFUSED[applied], device, store.refusal, topic);
  }

  function publishTelemetry(device: string): void {
    const t = store.telemetryOf(device);
    if (t) {
      const data = { device, ts: t.ts, seq: t.seq, metrics: t.metrics };
      log.append({ name: 'telemetry', device, bit: TYPE_BIT.telemetry, data, deviceTs: t.ts });
    }
  }

  const limit = deps.deviceRate ?? { rate: 0, burst: 1 };
  const throttle = new TelemetryThrottle({
    rate: limit.rate,
    burst: limit.burst,
    flush: publishTelemetry,
    onThrottled: () => metrics.telemetryThrottled.inc(),
    now,
  });
  const events = deps.eventRate ?? { rate: 0, burst: 1 };
  const eventThrottle = new EventThrottle<Held>({
    rate: events.rate,
    burst: events.burst,
    flush: (device, held) => (held.kind === 'status' ? publishStatus(device) : publishAlert(held.alert)),
    onThrottled: (held) => metrics.eventsThrottled.inc({ kind: held.kind }),
    now,
  });

  /** `deviceTs`: the message's own ts, for the latency histogram; none for a held one published late. */
  function publishStatus(device: string, deviceTs?: number): void {
    const view = store.get(device);
    if (view) {
      const data = { device, state: view.state, ts: view.stateTs };
      log.append({ name: 'status', device, bit: TYPE_BIT.status, data, deviceTs });
    }
  }

  function publishAlert(alert: AlertEvent): void {
    log.append({ name: 'alert', device: alert.device, bit: TYPE_BIT.event, data: alert, deviceTs: alert.ts });
  }

  store.subscribe((id, change) => {
    if (change !== 'forgotten') return;
    throttle.forget(id);
    eventThrottle.forget(id);
    metrics.devicesForgotten.inc();
  });

  const ingest = function ingest(topic: string, payload: Buffer, retained = false): void {
    const parsed = parseMessage(deps.topicPrefix, topic, payload, deps.maxPayloadBytes);
    if (!parsed.ok) {
      metrics.mqttReceived.inc({ kind: parsed.kind });
      rejected(parsed.kind, parsed.reason, parsed.device, parsed.detail, topic);
      return;
    }
    const msg = parsed.message;
    const at = now();
    if (msg.kind === 'cleared') {
      metrics.mqttReceived.inc({ kind: msg.topicKind });
      // An operator cleared the retained message. A cleared status means "this device is gone":
      // it is forgotten now, and comes back with its next message. Other kinds carry no meaning.
      const forgotten = msg.topicKind === 'status' && store.forget(msg.device);
      deps.logger?.debug({ device: msg.device, kind: msg.topicKind, retained, forgotten }, 'empty mqtt payload (retained message cleared)');
      return;
    }
    metrics.mqttReceived.inc({ kind: msg.kind });
    switch (msg.kind) {
      case 'status': {
        const applied = store.applyStatus(msg, at, retained);
        if (applied !== 'changed') return refused('status', applied, msg.device, topic);
        // Over its budget: the state has it; the stream gets the device's newest status later.
        if (eventThrottle.admit(msg.device, { key: 'status', rank: 3, value: { kind: 'status' } })) publishStatus(msg.device, msg.ts);
        return;
      }
      case 'telemetry': {
        const applied = store.applyTelemetry(msg, at, retained);
        if (applied !== 'changed') return refused('telemetry', applied, msg.device, topic);
        // Over its budget: the state has the value; the stream gets the newest one later.
        if (throttle.admit(msg.device)) publishTelemetry(msg.device);
        return;
      }
      case 'events': {
        const applied = store.applyAlert(msg, at, retained);
        if (applied !== 'changed') return refused('events', applied, msg.device, topic);
        const { device, ts, seq, type, severity, message } = msg;
        // The stored copy's `at`: the stream and the view date an alert alike (see alertAt).
        const dated = store.lastAlert(device)?.at ?? at;
        const alert: AlertEvent = { device, ts, seq, type, severity, message, at: dated };
        // Over its budget: kept in alarms and recent alerts; the stream gets the newest of this
        // type and severity later, so a critical is never hidden behind a later info.
        const held: Held = { kind: 'alert', alert };
        if (eventThrottle.admit(device, { key: `${severity}:${type}`, rank: SEVERITY_RANK[severity], value: held })) publishAlert(alert);
        return;
      }
      case 'acks':
        store.touch(msg.device, at, retained, msg.ts);
        deps.onAck(msg);
        return;
      case 'commands':
        deps.onCommand(msg);
        return;
    }
  } as Ingest;
  ingest.stop = () => {
    throttle.stop();
    eventThrottle.stop();
  };
  return ingest;
}
