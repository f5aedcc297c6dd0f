import type Koa from 'koa';
import { Commands } from './commands/commands.js';
import type { Config } from './config.js';
import { DeviceStore } from './devices/store.js';
import { parseMessage } from './devices/schema.js';
import { MAX_DEVICES } from './protocol.js';
import { DeviceCatalog } from './devices/catalog.js';
import { createApp } from './http/app.js';
import { createBulkHistoryHandler, createHistoryHandler, type HistoryDeps } from './http/history.js';
import { createRouter } from './http/routes.js';
import { RateLimitedLog, type Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { MqttBridge } from './mqtt/bridge.js';
import { createIngest } from './mqtt/ingest.js';
import { ALWAYS } from './sse/event.js';
import { Hub, writeInterval } from './sse/hub.js';
import type { EventLog } from './log/log.js';
import { MemoryLog } from './log/memory.js';
import { RedisLog, type Checkpoint } from './log/redis.js';
import { IngestLeader } from './mqtt/leader.js';
import { createStreamHandler } from './http/events.js';
import { createCommandHandler } from './http/commands.js';
import { Access, OpenAccess } from './access/access.js';
import { LocalRevocations, SharedRevocations } from './access/sessions.js';

export interface Service {
  app: Koa;
  /** Numbers and keeps every event; the hub fans out what it delivers. */
  log: EventLog;
  hub: Hub;
  store: DeviceStore;
  /** Every device's view, kept encoded for lists, pages and snapshots. */
  catalog: DeviceCatalog;
  bridge: MqttBridge;
  commands: Commands;
  metrics: Metrics;
  /** With REDIS_URL: the shared log and this replica's part in the ingest lease. */
  shared: { log: RedisLog; leader: IngestLeader } | undefined;
  /** Sign-in, grants and API tokens (AUTH=on, the default); with AUTH=off every request is let in. */
  access: Access | OpenAccess;
  /** Connects to the broker (and the shared log) and starts the heartbeat; the HTTP side is the caller's to listen. */
  start(): void;
  /** SIGTERM path: not ready, refuse new streams, close open ones over the drain window, leave MQTT. */
  shutdown(): Promise<void>;
  readonly shuttingDown: boolean;
}

/** Wires the parts: MQTT → ingest → device store + log → hub → SSE streams and the HTTP API. */
export function createService(config: Readonly<Config>, logger: Logger): Service {
  const metrics = createMetrics();
  const store = new DeviceStore(MAX_DEVICES, {
    forgetAfterMs: config.devices.forgetAfterMs,
    admitRate: config.devices.admitRate,
    admitBurst: config.devices.admitBurst,
  });
  const catalog = new DeviceCatalog(store);
  // Embedded mode: the log is this process's memory, its epoch the instance id, its history the
  // replay window, and `store` runs the device rules. Shared mode: the log is a Redis stream,
  // `store` is this replica's fold of it, and the rules run where the ingest lease is held.
  const redisLog = config.redis
    ? new RedisLog({
        url: config.redis.url,
        prefix: config.redis.keyPrefix,
        maxEntries: config.redis.maxEntries,
        retentionMs: config.redis.retentionMs,
        // The log gathers under load at the pace the hub writes, so a batch waits once.
        lingerMs: writeInterval(config.sse),
        logger,
        metrics,
      })
    : undefined;
  const log: EventLog = redisLog ?? new MemoryLog({ replaySize: config.sse.replaySize });
  /** The broker as the ingest session last said (shared mode: as the log says). */
  let sharedMqtt: 'up' | 'down' = 'down';
  const hub = new Hub({
    replaySize: config.sse.replaySize,
    clientBufferBytes: config.sse.clientBufferBytes,
    heartbeatMs: config.sse.heartbeatMs,
    coalesceMs: config.sse.coalesceMs,
    writesPerSecond: config.sse.writesPerSecond,
    // A client whose socket has not drained for two heartbeats is gone or hopelessly slow.
    writeDeadlineMs: Math.max(2 * config.sse.heartbeatMs, 1_000),
    metrics,
    log,
  });
  let shuttingDown = false;

  // Shared mode: this replica's own session takes only the acks of the commands it sends; the
  // devices' data comes through the log, from the ingest session of the lease holder.
  const bridge: MqttBridge = new MqttBridge({
    config: config.mqtt,
    logger,
    metrics,
    topics: redisLog ? 'acks' : 'all',
    onMessage: (topic, payload, packet) => {
      if (redisLog) return ackOnly(topic, payload);
      ingest(topic, payload, packet.cmd === 'publish' && packet.retain);
    },
    // Open streams learn in-band when live data stops and resumes.
    onReadyChange: (ready) => {
      if (!redisLog) log.append({ name: 'upstream', device: null, bit: ALWAYS, data: { mqtt: ready ? 'up' : 'down', ts: Date.now() } });
    },
  });
  const commands = new Commands({
    timeoutMs: config.commands.timeoutMs,
    topicPrefix: config.mqtt.topicPrefix,
    store,
    log,
    metrics,
    logger,
    publish: (topic, payload, options) => bridge.publish(topic, payload, options),
  });
  const ingest = createIngest({
    topicPrefix: config.mqtt.topicPrefix,
    maxPayloadBytes: config.mqtt.maxPayloadBytes,
    store,
    log,
    metrics,
    warn: new RateLimitedLog(logger),
    logger,
    deviceRate: { rate: config.devices.maxMsgRate, burst: config.devices.msgBurst },
    eventRate: { rate: config.devices.maxEventRate, burst: config.devices.eventBurst },
    onAck: (ack) => commands.onAck(ack),
    onCommand: (command) => commands.onCommand(command),
  });
  /** Shared mode: an ack settles the command this replica sent; the view learns of the device through the log. */
  const ackOnly = (topic: string, payload: Buffer): void => {
    const parsed = parseMessage(config.mqtt.topicPrefix, topic, payload, config.mqtt.maxPayloadBytes);
    if (parsed.ok && parsed.message.kind === 'acks') commands.onAck(parsed.message);
  };
  const checkpoint = (pos: number): string => `{"pos":${pos},${catalog.snapshotData({ mqtt: sharedMqtt }, null).join('').slice(1)}`;
  const leader = redisLog
    ? new IngestLeader({ config, log: redisLog, view: store, catalog, checkpoint, metrics, logger })
    : undefined;
  const upstreamData = () => ({ mqtt: sharedMqtt, redis: redisLog?.isUp ? 'up' : 'down', ts: Date.now() });
  const restart = (from: Checkpoint): void => {
    store.clear();
    for (const view of from.devices) store.restore(view);
    sharedMqtt = from.mqtt;
    hub.restart();
  };

  metrics.observe({
    sseClients: () => hub.clientCount,
    devicesKnown: () => store.size,
    devicesOnline: () => store.online,
    mqttConnected: () => bridge.isReady,
    sharedLog: () => redisLog !== undefined,
    redisConnected: () => redisLog?.isUp ?? false,
    ingestLeader: () => leader?.isLeader ?? false,
    logEntries: () => redisLog?.cached ?? 0,
  });
  const upstreamUp = (): boolean => (redisLog ? sharedMqtt === 'up' : bridge.isReady);

  const revocations = redisLog ? new SharedRevocations(redisLog) : new LocalRevocations();
  const access = config.access
    ? new Access({ usersFile: config.access.usersFile, secret: config.access.sessionSecret, sessionTtlMs: config.access.sessionTtlMs, revocations, logger })
    : new OpenAccess();
  // A users file that is missing or invalid stops the start here, naming it.
  if (access instanceof Access) access.start();
  else logger.warn('AUTH=off: sign-in is off and every request is let in as an admin (USERS_FILE, if set, is not read); unset AUTH and set USERS_FILE and SESSION_SECRET to require sign-in');
  if (revocations instanceof SharedRevocations && access instanceof Access) revocations.start();
  const streamEvents = createStreamHandler({
    hub,
    catalog,
    metrics,
    logger,
    retryMs: config.sse.retryMs,
    maxClients: config.sse.maxClients,
    upstreamUp,
    shuttingDown: () => shuttingDown,
    gate: access,
    ...(redisLog && { shared: redisLog }),
  });

  const historyDeps: HistoryDeps = { catalog, gate: access, metrics, retained: () => hub.retained() };
  const router = createRouter({
    gate: access,
    logger,
    catalog,
    metrics,
    isReady: () => bridge.isReady && (redisLog?.isUp ?? true) && !shuttingDown,
    streamEvents,
    sendCommand: createCommandHandler({
      gate: access,
      token: config.commands.token,
      defaultTimeoutMs: config.commands.timeoutMs,
      commands,
      metrics,
      logger,
    }),
    history: createHistoryHandler(historyDeps),
    bulkHistory: createBulkHistoryHandler(historyDeps),
  });
  const app = createApp({ logger, metrics, router });

  return {
    app,
    log,
    hub,
    store,
    catalog,
    bridge,
    commands,
    metrics,
    get shuttingDown() {
      return shuttingDown;
    },
    shared: redisLog && leader ? { log: redisLog, leader } : undefined,
    access,
    start() {
      hub.start();
      bridge.start();
      if (!redisLog || !leader) {
        store.start();
        return;
      }
      // Forgetting is decided by the rules (at the lease holder) and comes through the log.
      redisLog
        .start({
          checkpoint,
          fold: (device, fold) => store.fold(device, fold),
          upstream: (mqtt) => (sharedMqtt = mqtt),
          restart,
          status: (up) => {
            hub.announce('upstream', upstreamData());
            if (up) logger.info({ epoch: redisLog.epoch, head: redisLog.head }, 'shared log (redis) connected');
            else if (!shuttingDown) logger.warn('shared log (redis) unreachable: streams stay open, new data waits in the broker');
          },
        })
        .then(() => leader.start(), (err: Error) => logger.error({ err: { message: err.message } }, 'shared log failed to start'));
    },
    async shutdown() {
      shuttingDown = true;
      logger.info({ streams: hub.clientCount, drainMs: config.shutdownDrainMs }, 'shutting down: draining streams');
      await hub.drain(config.shutdownDrainMs);
      hub.stop();
      streamEvents.stop();
      if (access instanceof Access) access.stop();
      if (revocations instanceof SharedRevocations) revocations.stop();
      store.stop();
      ingest.stop();
      await leader?.stop();
      await bridge.close();
      await redisLog?.close();
    },
  };
}
