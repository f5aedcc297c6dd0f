import type { IClientPublishOptions } from 'mqtt';
import type { Logger, RateLimitedLog } from '../logger.js';
import { buildAck, planAck } from './commands.js';
import type { SimConfig } from './config.js';
import { DeviceConnection, type PublishPacket } from './connection.js';
import { malformedTelemetry } from './malformed.js';
import { exponentialDelayMs, jitter, type Random } from './random.js';
import { Sensors } from './sensors.js';
import { ThresholdMonitor } from './thresholds.js';
import { deviceTopics, type DeviceTopics } from './topics.js';

/** `sent`: every message the broker (QoS 1) or the socket (QoS 0) took, status included. */
export type DeviceCounters = Record<
  'sent' | 'telemetry' | 'events' | 'acks' | 'malformed' | 'faults' | 'connects' | 'publishErrors', number>;

export interface DeviceContext {
  config: Readonly<SimConfig>;
  logger: Logger;
  warn: RateLimitedLog;
  random: Random;
  /** Position in the fleet; staggers the malformed-payload cycle so devices differ. */
  index: number;
  now: () => number;
}

type State = 'idle' | 'running' | 'rebooting' | 'stopped';
type Counted = 'telemetry' | 'events' | 'acks' | 'malformed';

const REBOOT_MS = 2_000;
const MAX_PENDING_EVENTS = 100;

/** One simulated device: sensors, alerts and command handling on top of its own MQTT session. */
export class SimDevice {
  readonly topics: DeviceTopics;
  private readonly connection: DeviceConnection;
  private readonly counts = { telemetry: 0, events: 0, acks: 0, malformed: 0, faults: 0 };
  private state: State = 'idle';
  private intervalMs: number;
  // Telemetry and events count separately, each from 1 for the whole process run (reconnects
  // and reboots included), so a consumer can spot a lost message on either topic on its own.
  private telemetrySeq = 0;
  private eventSeq = 0;
  private lastStepAt = 0;
  private pendingEvents = 0;
  private readonly sensors: Sensors;
  private readonly monitor = new ThresholdMonitor();
  private readonly timers = new Set<NodeJS.Timeout>();
  private tickTimer: NodeJS.Timeout | undefined;

  constructor(readonly id: string, private readonly ctx: DeviceContext) {
    this.topics = deviceTopics(ctx.config.mqtt.topicPrefix, id);
    this.intervalMs = ctx.config.intervalMs;
    this.sensors = new Sensors(ctx.random);
    const log = ctx.logger.child({ device: id });
    this.connection = new DeviceConnection(id, this.topics, { ...ctx, log }, {
      onMessage: (topic, payload, packet) => this.onMessage(topic, payload, packet),
    });
  }

  get online(): boolean {
    return this.state === 'running' && this.connection.connected;
  }

  get counters(): DeviceCounters {
    return { ...this.counts, ...this.connection.stats };
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.lastStepAt = this.ctx.now();
    this.connection.open();
    this.scheduleTick();
    this.scheduleFault();
  }

  /** Abrupt loss (fault injection): the broker sees the socket die and publishes the last will. */
  drop(): boolean {
    if (this.state !== 'running' || !this.connection.drop()) return false;
    this.counts.faults += 1;
    return true;
  }

  /** Graceful: retained `offline` status, then DISCONNECT. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await this.connection.close();
  }

  private onMessage(topic: string, payload: Buffer, packet: PublishPacket): void {
    if (topic !== this.topics.commands) return;
    const plan = planAck(payload, packet.properties, this.topics.acks);
    if (plan.refusedResponseTopic) {
      this.ctx.warn.warn('sim-response-topic-refused', { device: this.id },
        'command named a foreign response topic; answering on the device\'s own acks topic');
    }
    const { id, outcome, properties } = plan;
    if (id === undefined) {
      this.ctx.warn.warn('sim-bad-command', { device: this.id, error: outcome.error }, 'ignoring a command that cannot be acknowledged');
      return;
    }
    this.later(Math.max(0, jitter(this.ctx.random, this.ctx.config.ackDelayMs, 0.5)), () => {
      if (this.state !== 'running') return;
      const { effect } = outcome;
      if (effect.kind === 'set-interval') {
        this.intervalMs = effect.intervalMs;
        this.scheduleTick();
      }
      const ack = JSON.stringify(buildAck(id, outcome, this.ctx.now()));
      // A reboot waits for the broker to take the ack, as firmware would before restarting.
      this.publish(plan.topic, ack, { qos: 1, properties }, 'acks', effect.kind === 'reboot' ? () => void this.reboot() : undefined);
    });
  }

  /** Goes offline like a real reboot and comes back ~2 s later on a new connection. */
  private async reboot(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'rebooting';
    await this.connection.close();
    if (this.state !== 'rebooting') return; // stopped meanwhile
    this.later(jitter(this.ctx.random, REBOOT_MS, 0.25), () => {
      if (this.state !== 'rebooting') return;
      this.state = 'running';
      this.connection.open();
    });
  }

  private scheduleTick(): void {
    if (this.tickTimer) {
      clearTimeout(this.tickTimer);
      this.timers.delete(this.tickTimer);
    }
    this.tickTimer = this.later(jitter(this.ctx.random, this.intervalMs, 0.2), () => {
      this.tick();
      this.scheduleTick();
    });
  }

  private tick(): void {
    if (this.state !== 'running') return; // a rebooting device measures nothing
    const now = this.ctx.now();
    const metrics = this.sensors.step(now - this.lastStepAt);
    this.lastStepAt = now;
    // Alerts matter, so mqtt.js queues them while the link is down and sends them on reconnect;
    // bounded, so a broker outage of a day does not grow memory without limit.
    for (const event of this.monitor.update(metrics)) {
      if (this.pendingEvents >= MAX_PENDING_EVENTS) break;
      this.eventSeq += 1;
      this.pendingEvents += 1;
      const payload = JSON.stringify({ ts: now, seq: this.eventSeq, ...event });
      this.publish(this.topics.events, payload, { qos: 1 }, 'events', () => { this.pendingEvents -= 1; });
    }
    // Readings taken without a link are dropped, as a device without a buffer would; `seq` counts
    // messages sent, so a gap in it means loss in transit, never an offline period.
    if (!this.connection.connected) return;
    const { malformedRate, telemetryQos: qos } = this.ctx.config;
    if (malformedRate > 0 && this.ctx.random() < malformedRate) {
      // Uses no seq of its own, so the valid stream stays gapless.
      const reading = { ts: now, seq: this.telemetrySeq + 1, metrics };
      const { telemetry } = this.topics;
      const payload = malformedTelemetry(this.ctx.index + this.counts.malformed, reading, this.connection.maxPacketSize, telemetry);
      this.counts.malformed += 1;
      // QoS 0 always: a rejected QoS 1 message would be resent after every reconnect, forever.
      this.connection.publish(telemetry, payload, { qos: 0 });
      return;
    }
    this.telemetrySeq += 1;
    this.publish(this.topics.telemetry, JSON.stringify({ ts: now, seq: this.telemetrySeq, metrics }), { qos }, 'telemetry');
  }

  private scheduleFault(): void {
    const rate = this.ctx.config.faultRate;
    if (rate <= 0) return;
    this.later(exponentialDelayMs(this.ctx.random, rate), () => {
      this.drop();
      this.scheduleFault();
    });
  }

  private publish(topic: string, payload: string, options: IClientPublishOptions, kind: Counted, after?: () => void): void {
    this.connection.publish(topic, payload, options, (err) => {
      if (err) this.ctx.warn.warn(`sim-publish-failed:${kind}`, { device: this.id, err }, 'publish failed');
      else this.counts[kind] += 1;
      after?.();
    });
  }

  private later(ms: number, fn: () => void): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }
}
