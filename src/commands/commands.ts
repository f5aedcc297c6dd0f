import { randomUUID } from 'node:crypto';
import type { AckMessage, CommandMessage } from '../devices/schema.js';
import type { DeviceStore } from '../devices/store.js';
import type { Logger } from '../logger.js';
import type { CommandOutcome, Metrics } from '../metrics.js';
import { MAX_COMMAND_BYTES } from '../protocol.js';
import { TYPE_BIT } from '../sse/event.js';
import type { EventLog } from '../log/log.js';
import { commandExpirySeconds } from './expiry.js';

export interface CommandDeps {
  /** The wait when a request names none (COMMAND_TIMEOUT_MS), also for other replicas' commands. */
  timeoutMs: number;
  topicPrefix: string;
  store: DeviceStore;
  /** Where `command` events go; the hub fans out what it delivers. */
  log: Pick<EventLog, 'append'>;
  metrics: Metrics;
  logger: Logger;
  /** Resolves once the broker has the message (its PUBACK), rejects when it cannot be sent. */
  publish(topic: string, payload: string, options: { qos: 1; properties: Record<string, unknown> }): Promise<void>;
  now?: () => number;
}

/** A validated command, as the HTTP side hands it over. */
export interface CommandRequest {
  name: string;
  params: Record<string, unknown>;
  timeoutMs: number;
}

/** How a command ended; the HTTP side turns each into a status. */
export type Outcome =
  | { kind: 'acked' | 'failed'; id: string; roundtripMs: number; ts: number; result?: Record<string, unknown>; error?: string }
  /** No ack within timeoutMs; the broker can no longer deliver it (its expiry has passed). */
  | { kind: 'timeout'; id: string; timeoutMs: number }
  /**
   * The device is offline: before anything was sent (no `id`), or it went offline while the
   * command waited (`id`; the broker keeps it queued for `expirySeconds` at most).
   */
  | { kind: 'offline'; id?: string; expirySeconds?: number }
  | { kind: 'unknown_device' }
  /**
   * The payload as published would be `bytes` long, past MAX_COMMAND_BYTES (what a device must
   * accept): JSON.stringify writes some numbers longer than they came (`1e20` as 21 digits).
   */
  | { kind: 'too_large'; bytes: number }
  /** MAX_PENDING commands already wait. */
  | { kind: 'busy' }
  /**
   * Not sent (`unconfirmed: false`), or sent without the broker's PUBACK within timeoutMs: then
   * the MQTT client resends it once the broker is back, and the device may still get it.
   */
  | { kind: 'broker_unavailable'; unconfirmed: boolean };

/** Commands waiting for an ack at once; more is `busy`, not unbounded memory. */
const MAX_PENDING = 1_000;

type Settled = AckMessage | 'timeout' | 'offline';

interface Pending {
  device: string;
  settle(result: Settled): void;
}

/** A command another replica sent, followed here so this replica's streams see it too. */
interface Observed {
  device: string;
  name: string;
  seenAt: number;
  /** The ack arrived; kept until the deadline so a redelivered command is not shown again. */
  done: boolean;
  timer: NodeJS.Timeout;
}

/** Commands of other replicas followed at once; past it the oldest is forgotten. */
const MAX_OBSERVED = 10_000;

type CommandStatus = 'sent' | 'acked' | 'failed' | 'timeout' | 'offline';

/**
 * The command round trip, without HTTP: publish to the device, wait for its ack (matched by
 * command id, and only from that device), tell every open stream how it went, and say how it
 * ended. A device that goes offline while its command waits ends the wait at once.
 */
export class Commands {
  private readonly pending = new Map<string, Pending>();
  /**
   * Ids of the commands still waiting per device (ours pending, other replicas' observed), so a
   * status change finds them without a scan.
   */
  private readonly byDevice = new Map<string, Set<string>>();
  private readonly observed = new Map<string, Observed>();
  private readonly now: () => number;

  constructor(private readonly deps: CommandDeps) {
    this.now = deps.now ?? Date.now;
    deps.store.subscribe((device) => {
      const waiting = this.byDevice.get(device);
      if (!waiting) return;
      // Forgotten, or offline (its own status or the broker's last will): nobody will ack.
      const state = deps.store.get(device)?.state;
      if (state !== undefined && state !== 'offline') return;
      for (const id of [...waiting]) {
        const pending = this.pending.get(id);
        if (pending) pending.settle('offline');
        else this.observedOffline(id);
      }
    });
  }

  async send(device: string, request: CommandRequest): Promise<Outcome> {
    const { store, metrics, topicPrefix } = this.deps;
    const id = randomUUID();
    const ts = this.now();
    const { name, params, timeoutMs } = request;
    // Sized as it goes out: a device refuses more, and would never ack.
    const payload = JSON.stringify({ id, name, params, ts, timeoutMs });
    const bytes = Buffer.byteLength(payload, 'utf8');
    if (bytes > MAX_COMMAND_BYTES) return this.count({ kind: 'too_large', bytes }, 'bad_request');
    const view = store.get(device);
    if (!view) return this.count({ kind: 'unknown_device' }, 'unknown_device');
    if (view.state === 'offline') return this.count({ kind: 'offline' }, 'offline');
    if (this.pending.size >= MAX_PENDING) return this.count({ kind: 'busy' }, 'unavailable');

    const expirySeconds = commandExpirySeconds(timeoutMs);
    const settled = this.wait(id, device);
    const published = this.deps.publish(`${topicPrefix}/${device}/commands`, payload, {
      qos: 1,
      properties: {
        responseTopic: `${topicPrefix}/${device}/acks`,
        correlationData: Buffer.from(id, 'utf8'),
        // Past the HTTP wait nobody waits for the outcome: a device that was away must not
        // run it later (a reboot after the 504). See expiry.ts for why this is short enough.
        messageExpiryInterval: expirySeconds,
      },
    });
    // A broker that went silent (the connection not yet known dead) would hold the request
    // until the MQTT keepalive noticed; the caller's timeout bounds the wait for the PUBACK too.
    let giveUp: NodeJS.Timeout | undefined;
    const confirmation = await Promise.race([
      published.then(() => 'confirmed' as const, () => 'failed' as const),
      new Promise<'unconfirmed'>((resolve) => (giveUp = setTimeout(() => resolve('unconfirmed'), timeoutMs))),
    ]);
    clearTimeout(giveUp);
    if (confirmation !== 'confirmed') {
      this.pending.get(id)?.settle('timeout');
      return this.count({ kind: 'broker_unavailable', unconfirmed: confirmation === 'unconfirmed' }, 'unavailable');
    }
    // The wait starts now that the broker has the message: its expiry counts from no later.
    const sentAt = this.now();
    this.tell(device, id, name, 'sent', { ts });
    const timer = setTimeout(() => this.pending.get(id)?.settle('timeout'), timeoutMs);
    const result = await settled;
    clearTimeout(timer);
    const at = this.now();
    const durationMs = at - ts;

    if (result === 'timeout') {
      this.tell(device, id, name, 'timeout', { ts: at, durationMs });
      return this.count({ kind: 'timeout', id, timeoutMs }, 'timeout');
    }
    if (result === 'offline') {
      this.tell(device, id, name, 'offline', { ts: at, durationMs });
      this.deps.logger.debug({ id, device, waitedMs: at - sentAt }, 'device went offline while its command waited');
      return this.count({ kind: 'offline', id, expirySeconds }, 'offline');
    }
    metrics.commandRoundtrip.observe(durationMs / 1000);
    const fields = this.ackFields(result);
    this.tell(device, id, name, result.ok ? 'acked' : 'failed', { durationMs, ...fields });
    return this.count({ kind: result.ok ? 'acked' : 'failed', id, roundtripMs: durationMs, ...fields }, result.ok ? 'acked' : 'failed');
  }

  private count<T extends Outcome>(outcome: T, label: CommandOutcome): T {
    this.deps.metrics.commands.inc({ outcome: label });
    return outcome;
  }

  /** Registers the command so that its ack or its device's going offline ends the wait. */
  private wait(id: string, device: string): Promise<Settled> {
    return new Promise((resolve) => {
      this.index(device, id);
      this.pending.set(id, {
        device,
        settle: (result) => {
          this.pending.delete(id);
          this.unindex(device, id);
          resolve(result);
        },
      });
    });
  }

  private index(device: string, id: string): void {
    const ids = this.byDevice.get(device);
    if (ids) ids.add(id);
    else this.byDevice.set(device, new Set([id]));
  }

  private unindex(device: string, id: string): void {
    const ids = this.byDevice.get(device);
    if (!ids) return;
    ids.delete(id);
    if (ids.size === 0) this.byDevice.delete(device);
  }

  /** Another replica's command whose device went offline: its streams here hear it at once too. */
  private observedOffline(id: string): void {
    const entry = this.observed.get(id);
    if (!entry || entry.done) return;
    entry.done = true;
    this.unindex(entry.device, id);
    const at = this.now();
    this.tell(entry.device, id, entry.name, 'offline', { ts: at, durationMs: at - entry.seenAt });
  }

  /** An ack from the broker; one that is late, foreign or from the wrong device is ignored. */
  onAck(ack: AckMessage): void {
    const pending = this.pending.get(ack.id);
    if (pending && pending.device === ack.device) {
      pending.settle(ack);
      return;
    }
    const observed = this.observed.get(ack.id);
    if (observed && observed.device === ack.device && !observed.done) {
      // Another replica's command: its streams hear it from that replica, ours from here. The
      // metrics stay with the replica that sent it, so a sum over replicas counts it once.
      observed.done = true;
      this.unindex(observed.device, ack.id);
      const durationMs = this.now() - observed.seenAt;
      this.tell(ack.device, ack.id, observed.name, ack.ok ? 'acked' : 'failed', { durationMs, ...this.ackFields(ack) });
      return;
    }
    this.deps.logger.debug({ id: ack.id, device: ack.device }, 'ack for no pending command');
  }

  /**
   * A command another replica published (we subscribe without our own): shown as sent, then
   * acked, failed or timed out, as on the replica that took the request. One that is already
   * past its timeout (queued while we were away) or seen before is ignored.
   */
  onCommand(command: CommandMessage): void {
    if (this.pending.has(command.id) || this.observed.has(command.id)) return;
    const timeoutMs = command.timeoutMs ?? this.deps.timeoutMs;
    const now = this.now();
    const left = command.ts + timeoutMs - now;
    if (left <= 0) return;
    if (this.observed.size >= MAX_OBSERVED) {
      const [oldest, entry] = this.observed.entries().next().value as [string, Observed];
      clearTimeout(entry.timer);
      this.observed.delete(oldest);
      this.unindex(entry.device, oldest);
    }
    const { device, id, name } = command;
    const timer = setTimeout(() => {
      const entry = this.observed.get(id);
      this.observed.delete(id);
      this.unindex(device, id);
      if (!entry || entry.done) return;
      const at = this.now();
      this.tell(device, id, name, 'timeout', { ts: at, durationMs: at - entry.seenAt });
    }, left);
    timer.unref();
    this.observed.set(id, { device, name, seenAt: now, done: false, timer });
    this.index(device, id);
    this.tell(device, id, name, 'sent', { ts: command.ts });
  }

  /** A `command` event to every stream that wants this device's commands. */
  private tell(device: string, id: string, name: string, status: CommandStatus, fields: Record<string, unknown>): void {
    this.deps.log.append({ name: 'command', device, bit: TYPE_BIT.command, data: { device, id, name, status, ...fields } });
  }

  /** What an ack says, for the outcome and the `command` event alike. */
  private ackFields(ack: AckMessage): { ts: number; result?: Record<string, unknown>; error?: string } {
    return {
      ts: ack.ts ?? this.now(),
      ...(ack.result !== undefined && { result: ack.result }),
      ...(ack.error !== undefined && { error: ack.error }),
    };
  }
}
