import mqtt, { type IClientPublishOptions, type ISubscriptionMap, type MqttClient, type Packet } from 'mqtt';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { Slicer } from './slice.js';

export interface BridgeDeps {
  config: Config['mqtt'];
  logger: Logger;
  metrics: Metrics;
  /** Every message on a subscribed topic, before any validation. */
  onMessage(topic: string, payload: Buffer, packet: Packet): void;
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
    return {
      [`${p}/+/status`]: { qos: 1 },
      [`${p}/+/telemetry`]: { qos: 1 },
      [`${p}/+/events`]: { qos: 1 },
      [`${p}/+/acks`]: { qos: 1 },
      [`${p}/+/commands`]: { qos: 1, nl: true },
    };
  }

  start(): void {
    const { config, logger, metrics } = this.deps;
    const client = mqtt.connect(config.url, {
      protocolVersion: 5,
      clientId: config.clientId,
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
    client.on('message', (topic, payload, packet) => this.deps.onMessage(topic, payload, packet));
    // Called after each 'message' (QoS 1: before its PUBACK); mqtt.js takes the next packet when called back.
    client.handleMessage = (_packet, callback) => {
      const stream = client.stream;
      this.slicer.done(() => {
        // A connection that closed meanwhile gets no PUBACK: mqtt.js would hold it for the next
        // connection, where the broker redelivers the message anyway (QoS 1) under its own id.
        if (client.stream !== stream || !client.connected) return;
        callback();
      });
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

  /** Clean DISCONNECT: the broker keeps the session for our return, and no will is sent. */
  async close(): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.closing = true;
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

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return '[invalid url]';
  }
}
