import mqtt, { type IClientPublishOptions, type ISubscriptionMap, type MqttClient, type Packet } from 'mqtt';
import type { Config } from '../config.js';
import { redactUrl, type Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { Slicer } from './slice.js';

export interface BridgeDeps {
  config: Config['mqtt'];
  logger: Logger;
  metrics: Metrics;
  /**
   * Every message on a subscribed topic, before any validation. A promise returned holds the
   * message's PUBACK (and the next message) until it resolves; if it rejects, the message is
   * never acknowledged and the broker delivers it again on the session's next connection.
   */
  onMessage(topic: string, payload: Buffer, packet: Packet): void | Promise<void>;
  /** The client id, when not config.clientId (the shared ingest session's). */
  clientId?: string;
  /** Which topics: every device topic and other replicas' commands (default), only the devices' data, or only acks. */
  topics?: 'all' | 'device-data' | 'acks';
  /** Called on every change of readiness: connected and subscribed, or not. */
  onReadyChange(ready: boolean): void;
}

const BASE_RECONNECT_MS = 500;
const MAX_RECONNECT_MS = 30_000;
// How long the broker keeps our session (subscriptions + queued QoS 1 messages) while we are away.
const SESSION_EXPIRY_S = 24 * 60 * 60;
// Most time ingest may hold the event loop in one stretch of a backlog (see slice.ts).
const SLICE_MS = 5;

/** Exponential backoff with full jitter, so a fleet of replicas does not hammer a recovering broker. */
export function backoff(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(MAX_RECONNECT_MS, BASE_RECONNECT_MS * 2 ** Math.min(attempt, 16));
  return Math.max(BASE_RECONNECT_MS, Math.round(ceiling * random()));
}

/**
 * The service's one MQTT connection: a persistent QoS 1 session under a fixed client id, so the
 * broker queues what devices publish while the service is away and hands it over on return.
 */
export class MqttBridge {
  private client: MqttClient | undefined;
  private ready = false;
  private closing = false;
  private subscribed = false;
  private attempts = 0;
  private readonly slicer = new Slicer(SLICE_MS);

  constructor(private readonly deps: BridgeDeps) {}

  get isReady(): boolean {
    return this.ready;
  }

  /**
   * Device topics, and the commands other replicas send (no-local: never our own), so every
   * replica's streams can show every command's life, whichever replica took the request.
   */
  subscriptions(): ISubscriptionMap {
    const p = this.deps.config.topicPrefix;
    const acks: ISubscriptionMap = { [`${p}/+/acks`]: { qos: 1 } };
    if (this.deps.topics === 'acks') return acks;
    const data: ISubscriptionMap = {
      [`${p}/+/status`]: { qos: 1 },
      [`${p}/+/telemetry`]: { qos: 1 },
      [`${p}/+/events`]: { qos: 1 },
      ...acks,
    };
    if (this.deps.topics === 'device-data') return data;
    return { ...data, [`${p}/+/commands`]: { qos: 1, nl: true } };
  }

  start(): void {
    const { config, logger, metrics } = this.deps;
    const client = mqtt.connect(config.url, {
      protocolVersion: 5,
      clientId: this.deps.clientId ?? config.clientId,
      username: config.username,
      password: config.password,
      clean: false,
      properties: { sessionExpiryInterval: SESSION_EXPIRY_S },
      keepalive: 30,
      connectTimeout: 10_000,
      reconnectPeriod: BASE_RECONNECT_MS,
      // A refused CONNECT (bad credentials, broker starting) is retried too, with backoff.
      reconnectOnConnackError: true,
      // We subscribe ourselves, exactly when the broker says it kept no session.
      resubscribe: false,
      queueQoSZero: false,
    });
    this.client = client;

    client.on('connect', (connack) => {
      this.attempts = 0;
      client.options.reconnectPeriod = BASE_RECONNECT_MS;
      logger.info({ url: redactUrl(config.url), sessionPresent: connack.sessionPresent }, 'mqtt connected');
      // A kept session keeps our subscriptions, but a fresh process also needs the retained
      // statuses, which the broker sends only in answer to a SUBSCRIBE: so the first connect of
      // every process subscribes, and later ones only when the broker lost the session.
      if (connack.sessionPresent && this.subscribed) this.setReady(true);
      else this.subscribe(client);
    });
    const held = new WeakMap<Packet, Promise<void>>();
    client.on('message', (topic, payload, packet) => {
      const hold = this.deps.onMessage(topic, payload, packet);
      if (hold) {
        // A message not acked (a fenced or closed session) must not become an unhandled rejection.
        hold.catch(() => undefined);
        // Only a QoS 1 message has a PUBACK to hold.
        if (packet.qos === 1 && packet.messageId !== undefined) held.set(packet, hold);
      }
    });
    // PUBACKs held until their message is in the log, while mqtt.js goes on to the next message:
    // holding the callback instead would take one message per log round trip, in series (at
    // 1,000 msg/s, measured: seconds of backlog). mqtt.js sends the PUBACK right after the
    // callback; this defers that one packet. The holds resolve in arrival order (the log appends
    // in order), so the PUBACKs go out in the order the PUBLISHes came, as MQTT requires.
    const acks = new Map<number, Promise<void>>();
    const internals = client as unknown as { _sendPacket(packet: { cmd: string; messageId?: number }, cb?: () => void, ...rest: unknown[]): void };
    const sendPacket = internals._sendPacket.bind(client);
    internals._sendPacket = (packet, cb, ...rest) => {
      const hold = packet.cmd === 'puback' && packet.messageId !== undefined ? acks.get(packet.messageId) : undefined;
      if (!hold) return sendPacket(packet, cb, ...rest);
      acks.delete(packet.messageId!);
      const stream = client.stream;
      cb?.();
      // A connection that closed meanwhile gets no PUBACK: the broker redelivers the message (DUP).
      hold.then(() => {
        if (client.stream === stream && client.connected) sendPacket(packet, () => undefined);
      }, () => undefined);
    };
    // Called after each 'message' (QoS 1: before its PUBACK); mqtt.js takes the next packet when called back.
    client.handleMessage = (packet, callback) => {
      const stream = client.stream;
      const ack = () => {
        // A connection that closed meanwhile gets no PUBACK: mqtt.js would hold it for the next
        // connection, where the broker redelivers the message anyway (QoS 1) under its own id.
        if (client.stream !== stream || !client.connected) return;
        callback();
      };
      const hold = held.get(packet);
      if (hold) {
        held.delete(packet);
        if (packet.cmd === 'publish' && packet.qos === 1 && packet.messageId !== undefined) acks.set(packet.messageId, hold);
      }
      this.slicer.done(ack);
    };
    client.on('close', () => this.setReady(false));
    client.on('reconnect', () => {
      this.attempts += 1;
      metrics.mqttReconnects.inc();
      client.options.reconnectPeriod = backoff(this.attempts);
    });
    client.on('error', (err) => {
      logger.warn({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'mqtt error');
    });
  }

  private subscribe(client: MqttClient): void {
    client.subscribe(this.subscriptions(), (err, granted) => {
      const refused = granted?.filter((g) => g.qos > 2) ?? [];
      if (!err && refused.length === 0) {
        this.subscribed = true;
        this.setReady(true);
        return;
      }
      this.deps.logger.error(
        { err: err && { message: err.message }, refused: refused.map((g) => g.topic) },
        'mqtt subscribe refused (check the broker ACL); retrying in 5 s',
      );
      setTimeout(() => {
        if (client.connected && !this.ready) this.subscribe(client);
      }, 5_000).unref();
    });
  }

  private setReady(ready: boolean): void {
    if (this.ready === ready) return;
    this.ready = ready;
    if (!ready && !this.closing) this.deps.logger.warn('mqtt connection lost; reconnecting');
    this.deps.onReadyChange(ready);
  }

  publish(topic: string, payload: string, options: IClientPublishOptions): Promise<void> {
    const client = this.client;
    if (!client || !this.ready) return Promise.reject(new Error('not connected to the broker'));
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, options, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Clean DISCONNECT: the broker keeps the session for our return, and no will is sent. `force`:
   * drop the connection at once, acknowledging nothing more (the lease was lost: what was not
   * acknowledged goes to the next holder).
   */
  async close(force = false): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.closing = true;
    if (force) {
      await new Promise<void>((resolve) => client.end(true, () => resolve()));
      this.setReady(false);
      return;
    }
    await new Promise<void>((resolve) => {
      // A broker that does not answer must not hold up shutdown.
      const force = setTimeout(() => client.end(true, () => resolve()), 2_000);
      client.end(false, {}, () => {
        clearTimeout(force);
        resolve();
      });
    });
    this.setReady(false);
  }
}
