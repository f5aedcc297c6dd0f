import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import { SSE_EVENTS } from './protocol.js';

// Label values come from these fixed sets only: never a device id, address or raw path.
const CONNECTION_OUTCOMES = ['opened', 'resumed', 'reset', 'busy', 'shutting_down', 'bad_request', 'unauthorized'] as const;
const DISCONNECT_REASONS = ['client', 'slow', 'deadline', 'shutdown', 'restart', 'signed_out', 'error'] as const;
const SIGNIN_OUTCOMES = ['ok', 'refused', 'throttled', 'bad_request'] as const;
const AUTH_REFUSALS = ['signed_out', 'invalid', 'expired', 'revoked', 'unknown_user', 'grants_changed', 'forbidden', 'cross_site'] as const;
const MQTT_KINDS = ['status', 'telemetry', 'events', 'acks', 'commands', 'other'] as const;
const THROTTLED_EVENT_KINDS = ['alert', 'status'] as const;
const APPEND_OUTCOMES = ['ok', 'retried', 'fenced'] as const;
const TRIM_REASONS = ['age', 'size'] as const;
const REJECT_REASONS = [
  'bad_topic',
  'too_large',
  'bad_json',
  'bad_shape',
  'duplicate',
  'device_limit',
  'admission',
] as const;
const COMMAND_OUTCOMES = [
  'acked',
  'failed',
  'timeout',
  'offline',
  'unknown_device',
  'bad_request',
  'unauthorized',
  'forbidden',
  'disabled',
  'unavailable',
] as const;
const HTTP_ROUTES = [
  '/events',
  '/api/devices',
  '/api/devices/:id',
  '/api/devices/:id/commands',
  '/api/devices/:id/history',
  '/api/history',
  '/api/session',
  '/healthz',
  '/readyz',
  '/metrics',
  'unmatched',
] as const;

export type ConnectionOutcome = (typeof CONNECTION_OUTCOMES)[number];
export type DisconnectReason = (typeof DISCONNECT_REASONS)[number];
export type SignInOutcome = (typeof SIGNIN_OUTCOMES)[number];
export type AuthRefusal = (typeof AUTH_REFUSALS)[number];
export type MqttKind = (typeof MQTT_KINDS)[number];
export type RejectReason = (typeof REJECT_REASONS)[number];
export type AppendOutcome = (typeof APPEND_OUTCOMES)[number];
export type TrimReason = (typeof TRIM_REASONS)[number];
export type CommandOutcome = (typeof COMMAND_OUTCOMES)[number];
export type HttpRoute = (typeof HTTP_ROUTES)[number];

export interface PointInTime {
  sseClients(): number;
  devicesKnown(): number;
  devicesOnline(): number;
  mqttConnected(): boolean;
  /** Whether the service runs on the shared log (REDIS_URL set). */
  sharedLog?(): boolean;
  /** With REDIS_URL: whether the shared log is reachable and tailed; the log's metrics read 0 without it. */
  redisConnected?(): boolean;
  /** Whether this replica holds the ingest lease (runs the MQTT ingest session). */
  ingestLeader?(): boolean;
  /** Entries this replica keeps of the shared log for resumes. */
  logEntries?(): number;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(registry = new Registry()) {
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  let source: PointInTime | undefined;

  const m = {
    registry,
    /** Wires the point-in-time gauges to their source, read on every scrape. */
    observe(s: PointInTime) {
      source = s;
    },
    sseClients: new Gauge({
      name: 'sse_clients',
      help: 'Open SSE streams',
      registers,
      collect() {
        this.set(source?.sseClients() ?? 0);
      },
    }),
    sseConnections: new Counter({
      name: 'sse_connections_total',
      help: 'SSE stream requests by outcome',
      labelNames: ['outcome'],
      registers,
    }),
    sseDisconnects: new Counter({
      name: 'sse_disconnects_total',
      help: 'SSE streams ended, by reason',
      labelNames: ['reason'],
      registers,
    }),
    eventsPublished: new Counter({
      name: 'sse_events_published_total',
      help: 'Events accepted into the hub, by SSE event name',
      labelNames: ['event'],
      registers,
    }),
    eventsDelivered: new Counter({
      name: 'sse_events_delivered_total',
      help: 'Events written to client streams (one per client), by SSE event name',
      labelNames: ['event'],
      registers,
    }),
    coalesceWindow: new Gauge({
      name: 'sse_coalesce_window_seconds',
      help: 'How long the newest batch waited for the write interval (1/SSE_WRITES_PER_S since the last write, at most SSE_COALESCE_MS); 0: written the same turn',
      registers,
    }),
    eventsConflated: new Counter({
      name: 'sse_events_conflated_total',
      help: 'Telemetry events replaced by a newer value for the same device while a client was behind',
      registers,
    }),
    replayed: new Counter({
      name: 'sse_replayed_events_total',
      help: 'Events replayed to resuming clients after Last-Event-ID',
      registers,
    }),
    resets: new Counter({
      name: 'sse_resets_total',
      help: 'Resumes that could not be served from the replay buffer (reset + snapshot sent)',
      registers,
    }),
    snapshotBuild: new Histogram({
      name: 'sse_snapshot_build_seconds',
      help: 'Time to build a stream opening snapshot from the encoded device list (a shared one is built at most once per position)',
      labelNames: ['kind'] as const,
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5],
      registers,
    }),
    fanoutDuration: new Histogram({
      name: 'sse_fanout_duration_seconds',
      help: 'Time to write one batch of events to every matching client',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    }),
    deliveryLatency: new Histogram({
      name: 'device_to_client_latency_seconds',
      help: 'From the device timestamp to the event being written to client sockets',
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    mqttConnected: new Gauge({
      name: 'mqtt_connected',
      help: '1 while connected and subscribed to the broker',
      registers,
      collect() {
        this.set(source?.mqttConnected() ? 1 : 0);
      },
    }),
    mqttReconnects: new Counter({
      name: 'mqtt_reconnects_total',
      help: 'Reconnect attempts to the broker',
      registers,
    }),
    mqttReceived: new Counter({
      name: 'mqtt_messages_received_total',
      help: 'MQTT messages received, by topic kind',
      labelNames: ['kind'],
      registers,
    }),
    mqttRejected: new Counter({
      name: 'mqtt_messages_rejected_total',
      help: 'MQTT messages dropped, by reason',
      labelNames: ['reason'],
      registers,
    }),
    telemetryThrottled: new Counter({
      name: 'telemetry_throttled_total',
      help: 'Telemetry messages over their device\'s rate limit: kept as its state, not streamed at once (newest streamed later)',
      registers,
    }),
    eventsThrottled: new Counter({
      name: 'events_throttled_total',
      help: 'Alerts and status changes over their device\'s DEVICE_MAX_EVENT_RATE: kept in its state, streamed conflated later (newest status; newest alert per type and severity)',
      labelNames: ['kind'],
      registers,
    }),
    devicesForgotten: new Counter({
      name: 'devices_forgotten_total',
      help: 'Devices dropped from the store: offline past DEVICE_FORGET_AFTER_S, or their retained status cleared',
      registers,
    }),
    devicesKnown: new Gauge({
      name: 'devices_known',
      help: 'Devices the service has heard of',
      registers,
      collect() {
        this.set(source?.devicesKnown() ?? 0);
      },
    }),
    devicesOnline: new Gauge({
      name: 'devices_online',
      help: 'Devices whose last status is online',
      registers,
      collect() {
        this.set(source?.devicesOnline() ?? 0);
      },
    }),
    commands: new Counter({
      name: 'commands_total',
      help: 'Commands requested, by outcome',
      labelNames: ['outcome'],
      registers,
    }),
    commandRoundtrip: new Histogram({
      name: 'command_roundtrip_seconds',
      help: 'From publishing a command to receiving its ack',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    httpRequests: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests, by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration until the response starts (SSE: until the stream opens)',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    sharedLog: new Gauge({
      name: 'shared_log_enabled',
      help: '1 when this replica runs on the shared log (REDIS_URL), 0 embedded: what the shared-log alerts apply to',
      registers,
      collect() {
        this.set(source?.sharedLog?.() ? 1 : 0);
      },
    }),
    redisConnected: new Gauge({
      name: 'redis_connected',
      help: '1 while the shared log (Redis) is reachable and this replica tails it; 0 without REDIS_URL',
      registers,
      collect() {
        this.set(source?.redisConnected?.() ? 1 : 0);
      },
    }),
    ingestLeader: new Gauge({
      name: 'ingest_leader',
      help: '1 while this replica holds the ingest lease and runs the MQTT ingest session',
      registers,
      collect() {
        this.set(source?.ingestLeader?.() ? 1 : 0);
      },
    }),
    ingestTakeovers: new Counter({
      name: 'ingest_takeovers_total',
      help: 'Times this replica took the ingest lease (its first start included)',
      registers,
    }),
    logAppends: new Counter({
      name: 'log_appends_total',
      help: 'Appends to the shared log, by outcome: ok, retried (after an error, appended once), fenced (refused: the lease was lost)',
      labelNames: ['outcome'],
      registers,
    }),
    logAppendDuration: new Histogram({
      name: 'log_append_duration_seconds',
      help: 'One append to the shared log (a batch of entries), from send to reply',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    logEntries: new Gauge({
      name: 'log_entries',
      help: 'Entries of the shared log this replica keeps for resumes',
      registers,
      collect() {
        this.set(source?.logEntries?.() ?? 0);
      },
    }),
    logTrimmed: new Counter({
      name: 'log_trimmed_total',
      help: 'Entries dropped from the shared log by its retention, by bound (age, size)',
      labelNames: ['reason'],
      registers,
    }),
    logEntriesRead: new Counter({
      name: 'log_entries_read_total',
      help: 'Shared-log entries this replica took, by how: reply (with its own append, not read back), tail (read from the log)',
      labelNames: ['via'],
      registers,
    }),
    logEpochChanges: new Counter({
      name: 'log_epoch_changes_total',
      help: 'Times this replica found the shared log lost and started over on a new epoch (every stream resets)',
      registers,
    }),
    redisTailWatchdog: new Counter({
      name: 'redis_tail_watchdog_total',
      help: 'Blocking log reads that did not return in time and were restarted on a new connection',
      registers,
    }),
    redisCommandTimeouts: new Counter({
      name: 'redis_command_timeouts_total',
      help: 'Redis commands (appends, lease, reads) without an answer in time; both connections were replaced',
      registers,
    }),
    signIns: new Counter({
      name: 'signin_attempts_total',
      help: 'Sign-in attempts, by outcome (throttled: refused unchecked during the user name\'s backoff)',
      labelNames: ['outcome'],
      registers,
    }),
    authRefusals: new Counter({
      name: 'auth_refusals_total',
      help: 'Requests and open streams refused for their credentials or grants, by reason',
      labelNames: ['reason'],
      registers,
    }),
  };

  // Every label set starts at 0, so rates and alerts work before the first occurrence.
  for (const event of SSE_EVENTS) {
    m.eventsPublished.inc({ event }, 0);
    m.eventsDelivered.inc({ event }, 0);
  }
  for (const outcome of CONNECTION_OUTCOMES) m.sseConnections.inc({ outcome }, 0);
  for (const reason of DISCONNECT_REASONS) m.sseDisconnects.inc({ reason }, 0);
  for (const kind of MQTT_KINDS) m.mqttReceived.inc({ kind }, 0);
  for (const reason of REJECT_REASONS) m.mqttRejected.inc({ reason }, 0);
  for (const kind of THROTTLED_EVENT_KINDS) m.eventsThrottled.inc({ kind }, 0);
  for (const outcome of COMMAND_OUTCOMES) m.commands.inc({ outcome }, 0);
  for (const outcome of APPEND_OUTCOMES) m.logAppends.inc({ outcome }, 0);
  for (const reason of TRIM_REASONS) m.logTrimmed.inc({ reason }, 0);
  for (const outcome of SIGNIN_OUTCOMES) m.signIns.inc({ outcome }, 0);
  for (const reason of AUTH_REFUSALS) m.authRefusals.inc({ reason }, 0);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
