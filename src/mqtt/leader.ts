import { createHash, randomBytes } from 'node:crypto';
import type { IPublishPacket, Packet } from 'mqtt';
import type { Config } from '../config.js';
import type { AlertView } from '../devices/alarms.js';
import type { DeviceCatalog } from '../devices/catalog.js';
import { DeviceStore } from '../devices/store.js';
import type { Logger } from '../logger.js';
import { RateLimitedLog } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { MAX_DEVICES } from '../protocol.js';
import { ALWAYS } from '../sse/event.js';
import type { Fold } from '../log/fold.js';
import type { NewEntry } from '../log/log.js';
import { FencedError, type RedisLog } from '../log/redis.js';
import { MqttBridge } from './bridge.js';
import { createIngest, type Ingest } from './ingest.js';

export interface LeaderDeps {
  config: Readonly<Config>;
  log: RedisLog;
  /** This replica's view (the fold of the log): what a new holder starts its device rules from. */
  view: DeviceStore;
  catalog: DeviceCatalog;
  /** The view as a checkpoint's JSON, said to be at `pos`. */
  checkpoint(pos: number): string;
  metrics: Metrics;
  logger: Logger;
}

/** How often the holder stores a checkpoint of the view (when it moved). */
const CHECKPOINT_EVERY_MS = 5_000;

/**
 * The MQTT ingest of a deployment with the shared log: one session for all replicas, held by the
 * replica that holds the ingest lease (a Redis key with an expiry, renewed a third of its life).
 *
 * Why one session and not every replica subscribed: the device rules (arrival order, duplicates,
 * admission, throttles) decide on a sequence of messages, and only one sequence can be the log's;
 * every replica appending what it heard would need the log to tell equal messages apart, which a
 * device's repeated status cannot be. One session under a fixed client id keeps the broker's
 * queue across failovers: the next holder connects under the same id, and the broker resends what
 * was not acknowledged (DUP set, packet ids kept), which the log recognises by (packet id, digest).
 *
 * A message is acknowledged only when the entries it made are in the log; appends carry the lease
 * token and are refused once another holding took over (fencing), so a replica that lost the
 * lease (a pause, a partition) can no longer write. Each holding has a token of its own, even on
 * the same replica: an append of an old holding still being retried must not land after the
 * broker resent its message to the new one.
 */
export class IngestLeader {
  private token = newToken();
  private leading = false;
  private heldUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private session: Session | undefined;
  private stopped = false;
  private renewing = false;

  constructor(private readonly deps: LeaderDeps) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** Whether the ingest session of this replica has the broker. */
  get sessionUp(): boolean {
    return this.session?.bridge.isReady ?? false;
  }

  start(): void {
    const every = Math.max(100, Math.floor(this.deps.config.redis!.leaseMs / 3));
    this.timer = setInterval(() => void this.renew(), every);
    this.timer.unref();
    void this.renew();
  }

  /** Gives the lease up (SIGTERM): the next replica takes over within one renewal, not a whole lease. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.stepDown('shutdown');
    await this.deps.log.release(this.token).catch(() => undefined);
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.stopped) return;
    this.renewing = true;
    const leaseMs = this.deps.config.redis!.leaseMs;
    try {
      if (!this.deps.log.isUp) throw new Error('the shared log is unreachable');
      const started = Date.now();
      const held = await this.deps.log.lease(this.token, leaseMs);
      if (held) {
        // Counted from before the request: the lease may have been extended any time after it.
        this.heldUntil = started + leaseMs;
        if (!this.leading) {
          // Held but not taken over yet: tried again at the next renewal, the lease kept meanwhile.
          await this.takeOver().catch((err: Error) => this.deps.logger.warn({ err: { message: err.message } }, 'holds the ingest lease but cannot take the session over yet'));
        }
      } else if (this.leading) await this.stepDown('lost');
    } catch {
      // Redis away: the session stays (its appends wait, so do its PUBACKs, and it resumes at
      // once if Redis is back in time), but the lease is ours only until it would expire there.
      if (this.leading && Date.now() >= this.heldUntil - Math.floor(leaseMs / 6)) await this.stepDown('expired');
    } finally {
      this.renewing = false;
    }
  }

  private async takeOver(): Promise<void> {
    const { log, logger, metrics } = this.deps;
    // The view must hold everything the last holder appended before its rules start from it.
    const head = await log.latest();
    if (!(await log.waitFor(head, 10_000))) throw new Error('the view did not catch up with the log');
    if (this.stopped) return;
    this.leading = true;
    metrics.ingestTakeovers.inc();
    this.session = new Session(this.deps, this.token, () => void this.stepDown('fenced'));
    logger.info({ head, devices: this.deps.view.size }, 'took the ingest lease: this replica runs the MQTT ingest session');
  }

  private async stepDown(why: 'lost' | 'expired' | 'fenced' | 'shutdown'): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    const session = this.session;
    this.session = undefined;
    if (why !== 'shutdown') {
      this.deps.logger.warn({ why }, 'gave up the ingest lease: another replica takes the MQTT ingest session');
      // The next holding, here or elsewhere, fences this one's appends still being retried.
      const old = this.token;
      this.token = newToken();
      void this.deps.log.release(old).catch(() => undefined);
    }
    await session?.close(why === 'shutdown');
  }
}

function newToken(): string {
  return randomBytes(12).toString('hex');
}

/** One holding of the lease: the device rules seeded from the view, the session, the checkpoints. */
class Session {
  readonly bridge: MqttBridge;
  private readonly rules: DeviceStore;
  private readonly ingest: Ingest;
  private readonly appender: FoldingAppender;
  private readonly checkpoints: NodeJS.Timeout;
  private checkpointed = -1;
  private closed = false;

  constructor(
    private readonly deps: LeaderDeps,
    private readonly token: string,
    private readonly fenced: () => void,
  ) {
    const { config, log, metrics, logger } = deps;
    const d = config.devices;
    this.rules = new DeviceStore(MAX_DEVICES, { forgetAfterMs: d.forgetAfterMs, admitRate: d.admitRate, admitBurst: d.admitBurst });
    for (const id of deps.view.ids()) {
      const view = deps.view.get(id);
      if (view) this.rules.restore(view);
    }
    this.appender = new FoldingAppender(this.rules, (entries) => this.append(entries, []));
    this.ingest = createIngest({
      topicPrefix: config.mqtt.topicPrefix,
      maxPayloadBytes: config.mqtt.maxPayloadBytes,
      store: this.rules,
      log: this.appender,
      metrics,
      warn: new RateLimitedLog(logger),
      logger,
      deviceRate: { rate: d.maxMsgRate, burst: d.msgBurst },
      eventRate: { rate: d.maxEventRate, burst: d.eventBurst },
      // Acks resolve commands on the replica that sent them (its own session); here they are signs of life.
      onAck: () => undefined,
      onCommand: () => undefined,
    });
    this.bridge = new MqttBridge({
      config: config.mqtt,
      clientId: config.redis!.ingestClientId,
      topics: 'device-data',
      logger,
      metrics,
      onMessage: (topic, payload, packet) => this.onMessage(topic, payload, packet),
      onReadyChange: (ready) =>
        this.appender.append({ name: 'upstream', device: null, bit: ALWAYS, data: { mqtt: ready ? 'up' : 'down', ts: Date.now() } }),
    });
    this.rules.start();
    this.bridge.start();
    this.checkpoints = setInterval(() => void this.checkpoint(), CHECKPOINT_EVERY_MS);
    this.checkpoints.unref();
    log.trim().catch(() => undefined);
  }

  /**
   * Messages reach the device rules one at a time, in arrival order, also when a redelivery's
   * check against the log has to wait; their appends (and so their PUBACKs) do not wait for one
   * another: the log takes them in order, in batches. A message with nothing before it to wait
   * for (nearly every one) is applied as it arrives, without a promise of its own.
   */
  private inOrder: Promise<unknown> = Promise.resolve();
  /** Messages waiting in `inOrder` (behind a redelivery's check) or being applied there. */
  private behind = 0;
  /** The promise of the last append handed to the log, to tell a new one (see append). */
  private lastAppend: Promise<void> | undefined;

  /** What the PUBACK waits for: the message's entries in the log; none for QoS 0, or when it made none. */
  private onMessage(topic: string, payload: Buffer, packet: Packet): Promise<void> | undefined {
    if (packet.cmd !== 'publish') return undefined;
    const key = packet.qos > 0 && packet.messageId !== undefined ? ingestKey(packet.messageId, topic, payload) : undefined;
    if (this.behind === 0 && !(key !== undefined && packet.dup)) {
      let appended: Promise<void> | undefined;
      try {
        appended = this.apply(topic, payload, packet, key);
      } catch (err) {
        appended = Promise.reject(err as Error);
        appended.catch(() => undefined);
      }
      return packet.qos === 0 ? undefined : appended;
    }
    this.behind += 1;
    const taken = this.inOrder.then(() => this.take(topic, payload, packet, key));
    this.inOrder = taken.then(
      () => (this.behind -= 1),
      () => (this.behind -= 1),
    );
    // A QoS 0 message has no PUBACK to wait for its append (which still goes in order).
    if (packet.qos === 0) return undefined;
    return taken.then((queued) => queued?.appended);
  }

  /** A message behind others, or a redelivery: checked against the log first; resolves to its append (wrapped, so that the next message does not wait for it). */
  private async take(topic: string, payload: Buffer, packet: IPublishPacket, key: string | undefined): Promise<{ appended: Promise<void> } | undefined> {
    // A redelivery (after a failover) of a message the last holder already put in the log.
    if (key !== undefined && packet.dup && (await this.deps.log.ingested(key))) return undefined;
    const appended = this.apply(topic, payload, packet, key);
    return appended && { appended };
  }

  /** Applies one message to the rules and queues its entries; returns their append (the PUBACK's wait), none if it made none. */
  private apply(topic: string, payload: Buffer, packet: IPublishPacket, key: string | undefined): Promise<void> | undefined {
    if (this.closed) throw new Error('not holding the lease');
    this.ingest(topic, payload, packet.retain);
    const entries = this.appender.take();
    if (entries.length === 0) return undefined;
    return this.append(entries, key === undefined ? [] : [key]);
  }

  /** Appends queued together share one promise (see RedisLog.enqueue): one handler for them all, which also keeps their rejection handled. */
  private append(entries: readonly NewEntry[], keys: readonly string[]): Promise<void> {
    const appended = this.deps.log.appendFenced(entries, this.token, keys);
    if (appended !== this.lastAppend) {
      this.lastAppend = appended;
      appended.catch((err: unknown) => {
        if (err instanceof FencedError) this.fenced();
      });
    }
    return appended;
  }

  /** The view (the fold of the log, at its head) as the checkpoint new replicas start from. */
  private async checkpoint(): Promise<void> {
    const { log, catalog } = this.deps;
    if (catalog.version === this.checkpointed || !log.isUp) return;
    const version = catalog.version;
    try {
      const pos = log.head;
      await log.checkpoint(pos, this.deps.checkpoint(pos));
      this.checkpointed = version;
      await log.trim();
    } catch (err) {
      this.deps.logger.debug({ err: { message: (err as Error).message } }, 'checkpoint not stored; next turn');
    }
  }

  async close(clean: boolean): Promise<void> {
    this.closed = true;
    clearInterval(this.checkpoints);
    this.ingest.stop();
    this.rules.stop();
    if (clean) await this.checkpoint();
    // Lost: drop the connection acknowledging nothing more; shutting down: a clean DISCONNECT.
    await this.bridge.close(!clean);
  }
}

/**
 * The log as ingest sees it while this replica holds the lease: every entry carries what it did
 * to its device's view (the device's head after it, and the alert it added), and a change the
 * stream does not show (a throttled reading, a sign of life, a forgotten device) becomes an entry
 * of its own, so every replica's fold ends where the rules did.
 */
class FoldingAppender {
  private pending: NewEntry[] = [];
  private readonly dirty = new Set<string>();
  /** The newest alert of each device already in the log, to tell a new one. */
  private readonly folded = new Map<string, AlertView>();
  private flushQueued = false;

  constructor(
    private readonly rules: DeviceStore,
    private readonly send: (entries: readonly NewEntry[]) => Promise<void>,
  ) {
    for (const id of rules.ids()) {
      const alert = rules.lastAlert(id);
      if (alert) this.folded.set(id, alert);
    }
    rules.subscribe((id, change) => {
      if (change === 'forgotten') {
        this.dirty.delete(id);
        this.folded.delete(id);
        this.pending.push({ name: undefined, device: id, bit: 0, data: null, deviceTs: undefined, fold: { forget: true } });
      } else this.dirty.add(id);
      this.later();
    });
  }

  append(entry: NewEntry): void {
    const fold = entry.device === null ? undefined : this.foldOf(entry.device);
    // Spelled out, not spread: entries of one shape keep the appender's and the log's code monomorphic.
    const { name, device, bit, data, deviceTs } = entry;
    this.pending.push({ name, device, bit, data, deviceTs, fold });
    this.later();
  }

  /** The entries made since the last call, with one for each device changed without an event. */
  take(): NewEntry[] {
    for (const id of this.dirty) {
      const fold = this.foldOf(id);
      if (fold) this.pending.push({ name: undefined, device: id, bit: 0, data: null, deviceTs: undefined, fold });
    }
    this.dirty.clear();
    const out = this.pending;
    this.pending = [];
    return out;
  }

  private foldOf(id: string): Fold | undefined {
    this.dirty.delete(id);
    const h = this.rules.head(id);
    if (!h) return undefined;
    const alert = this.rules.lastAlert(id);
    if (alert && alert !== this.folded.get(id)) {
      this.folded.set(id, alert);
      return { h, a: alert };
    }
    return { h };
  }

  /** Entries made outside a message (throttle flushes, forgetting, the session's state) go out at the end of the turn. */
  private later(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      const entries = this.take();
      if (entries.length > 0) this.send(entries).catch(() => undefined);
    });
  }
}

/** A message's identity within the session: its packet id and a digest of what it says. */
function ingestKey(messageId: number, topic: string, payload: Buffer): string {
  return `${messageId}:${createHash('sha1').update(topic).update('\0').update(payload).digest('base64url').slice(0, 16)}`;
}
