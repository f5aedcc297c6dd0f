import type Koa from 'koa';
import { Commands } from './commands/commands.js';
import type { Config } from './config.js';
import { DeviceStore } from './devices/store.js';
import { MAX_DEVICES } from './protocol.js';
import { DeviceCatalog } from './devices/catalog.js';
import { createApp } from './http/app.js';
import { createRouter } from './http/routes.js';
import { RateLimitedLog, type Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { MqttBridge } from './mqtt/bridge.js';
import { createIngest } from './mqtt/ingest.js';
import { ALWAYS } from './sse/event.js';
import { Hub } from './sse/hub.js';
import type { EventLog } from './log/log.js';
import { MemoryLog } from './log/memory.js';
import { createStreamHandler } from './http/events.js';
import { createCommandHandler } from './http/commands.js';

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
  /** Connects to the broker and starts the heartbeat; the HTTP side is the caller's to listen. */
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
  // Embedded mode: the log is this process's memory, its epoch the instance id, its history the replay window.
  const log = new MemoryLog({ replaySize: config.sse.replaySize });
  const hub = new Hub({
    replaySize: config.sse.replaySize,
    clientBufferBytes: config.sse.clientBufferBytes,
    heartbeatMs: config.sse.heartbeatMs,
    coalesceMs: config.sse.coalesceMs,
    // A client whose socket has not drained for two heartbeats is gone or hopelessly slow.
    writeDeadlineMs: Math.max(2 * config.sse.heartbeatMs, 1_000),
    metrics,
    log,
  });
  let shuttingDown = false;

  const bridge: MqttBridge = new MqttBridge({
    config: config.mqtt,
    logger,
    metrics,
    onMessage: (topic, payload, packet) => ingest(topic, payload, packet.cmd === 'publish' && packet.retain),
    // Open streams learn in-band when live data stops and resumes.
    onReadyChange: (ready) =>
      log.append({ name: 'upstream', device: null, bit: ALWAYS, data: { mqtt: ready ? 'up' : 'down', ts: Date.now() } }),
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
  metrics.observe({
    sseClients: () => hub.clientCount,
    devicesKnown: () => store.size,
    devicesOnline: () => store.online,
    mqttConnected: () => bridge.isReady,
  });

  const router = createRouter({
    catalog,
    metrics,
    isReady: () => bridge.isReady && !shuttingDown,
    streamEvents: createStreamHandler({
      hub,
      catalog,
      metrics,
      logger,
      retryMs: config.sse.retryMs,
      maxClients: config.sse.maxClients,
      upstreamUp: () => bridge.isReady,
      shuttingDown: () => shuttingDown,
    }),
    sendCommand: createCommandHandler({
      token: config.commands.token,
      defaultTimeoutMs: config.commands.timeoutMs,
      commands,
      metrics,
      logger,
    }),
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
    start() {
      hub.start();
      store.start();
      bridge.start();
    },
    async shutdown() {
      shuttingDown = true;
      logger.info({ streams: hub.clientCount, drainMs: config.shutdownDrainMs }, 'shutting down: draining streams');
      await hub.drain(config.shutdownDrainMs);
      hub.stop();
      store.stop();
      ingest.stop();
      await bridge.close();
    },
  };
}
