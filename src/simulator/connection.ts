import { connect, type IClientOptions, type IClientPublishOptions, type MqttClient, type OnMessageCallback } from 'mqtt';
import type { Logger, RateLimitedLog } from '../logger.js';
import type { SimConfig } from './config.js';
import { reconnectDelayMs, type Random } from './random.js';
import { statusPayload, WILL_PAYLOAD, type DeviceTopics } from './topics.js';

export type PublishPacket = Parameters<OnMessageCallback>[2];

export interface ConnectionContext {
  config: Readonly<SimConfig>;
  log: Logger;
  warn: RateLimitedLog;
  random: Random;
  now: () => number;
}

export interface ConnectionHooks {
  onMessage(topic: string, payload: Buffer, packet: PublishPacket): void;
}

const SHUTDOWN_STEP_MS = 3_000;

/**
 * One device's MQTT session: last will, retained online/offline status, the commands
 * subscription, and reconnects with backoff. Knows nothing about what the device publishes.
 */
export class DeviceConnection {
  readonly stats = { sent: 0, connects: 0, publishErrors: 0 };
  private client: MqttClient | undefined;
  private wanted = false;
  private failedAttempts = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private brokerMaxPacket: number | undefined;

  constructor(
    readonly id: string,
    private readonly topics: DeviceTopics,
    private readonly ctx: ConnectionContext,
    private readonly hooks: ConnectionHooks,
  ) {}

  get connected(): boolean {
    return this.wanted && this.client?.connected === true;
  }

  /** The broker's Maximum Packet Size from CONNACK: a larger packet gets the session closed. */
  get maxPacketSize(): number | undefined {
    return this.brokerMaxPacket;
  }

  /** Starts connecting (a fresh session); keeps reconnecting until `close`. */
  open(): void {
    this.wanted = true;
    this.client = this.createClient();
  }

  /** Abrupt loss: the socket dies without DISCONNECT, so the broker publishes the last will. */
  drop(): boolean {
    if (!this.connected || !this.client) return false;
    this.client.stream.destroy();
    return true;
  }

  /** Publishes once the session is up (QoS 1 is queued while down); `done` gets the outcome. */
  publish(topic: string, payload: string | Buffer, options: IClientPublishOptions, done?: (err?: Error) => void): void {
    if (!this.client) {
      done?.(new Error('not connected'));
      return;
    }
    this.client.publish(topic, payload, options, (err) => {
      if (err) {
        this.stats.publishErrors += 1;
      } else {
        this.stats.sent += 1;
      }
      done?.(err);
    });
  }

  /** Graceful: retained `offline` status, then DISCONNECT (so no last will), and no reconnect. */
  async close(): Promise<void> {
    this.wanted = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const client = this.client;
    if (!client) return;
    if (client.connected) {
      try {
        await withTimeout(client.publishAsync(this.topics.status, statusPayload('offline', this.ctx.now()), { qos: 1, retain: true }), SHUTDOWN_STEP_MS);
        this.stats.sent += 1;
      } catch (err) {
        this.ctx.warn.warn('sim-offline-status-failed', { device: this.id, err }, 'could not publish the offline status');
      }
    }
    try {
      await withTimeout(client.endAsync(!client.connected), SHUTDOWN_STEP_MS);
    } catch {
      client.stream.destroy(); // the broker never answered; its last will covers the status
    }
  }

  private createClient(): MqttClient {
    const { config } = this.ctx;
    const options: IClientOptions = {
      protocolVersion: 5,
      clientId: this.id,
      clean: true,
      keepalive: config.keepaliveS,
      // Reconnects are scheduled in onClose, with backoff and jitter, instead of mqtt.js's fixed period.
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      resubscribe: false,
      will: { topic: this.topics.status, payload: Buffer.from(WILL_PAYLOAD), qos: 1, retain: true },
    };
    const own = config.mqtt.credentials?.get(this.id);
    if (own !== undefined) {
      // The project broker binds this login to client id = device id, and its role to the device's topics.
      options.username = this.id;
      options.password = own;
    } else {
      if (config.mqtt.username !== undefined) options.username = config.mqtt.username;
      if (config.mqtt.password !== undefined) options.password = config.mqtt.password;
    }
    const client = connect(config.mqtt.url, options);
    client.on('connect', (connack) => {
      this.brokerMaxPacket = connack.properties?.maximumPacketSize;
      this.onConnect(client);
    });
    client.on('close', () => this.onClose(client));
    client.on('message', (topic, payload, packet) => {
      if (client === this.client && this.wanted) this.hooks.onMessage(topic, payload, packet);
    });
    client.on('error', (err: Error & { code?: unknown }) => {
      // Keyed by the kind of error, not the device: a broker outage is one line a minute, not 10,000.
      this.ctx.warn.warn(`sim-mqtt-error:${String(err.code ?? err.message)}`, { device: this.id, err }, 'device connection error');
    });
    return client;
  }

  private onConnect(client: MqttClient): void {
    if (client !== this.client) return;
    this.failedAttempts = 0;
    this.stats.connects += 1;
    this.ctx.log.debug('connected');
    this.publish(this.topics.status, statusPayload('online', this.ctx.now()), { qos: 1, retain: true }, (err) => {
      if (err) this.ctx.warn.warn('sim-online-status-failed', { device: this.id, err }, 'could not publish the online status');
    });
    client.subscribe(this.topics.commands, { qos: 1 }, (err) => {
      if (err) this.ctx.warn.warn('sim-subscribe-failed', { device: this.id, err }, 'could not subscribe to commands');
    });
  }

  private onClose(client: MqttClient): void {
    if (client !== this.client || !this.wanted || this.reconnectTimer) return;
    const delay = reconnectDelayMs(this.ctx.random, this.failedAttempts++);
    this.ctx.log.debug({ delayMs: Math.round(delay) }, 'connection closed, reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (client !== this.client || !this.wanted || client.connected) return;
      // Same stores: QoS 1 messages not yet acknowledged are sent again on the new connection.
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    }, delay);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
