import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { MIN_SESSION_SECRET, usableSessionSecret } from './access/secrets.js';
import { EnvReader, type Env } from './env.js';
import { COMMAND_TIMEOUT_DEFAULT_MS, COMMAND_TIMEOUT_MAX_MS, COMMAND_TIMEOUT_MIN_MS, DEFAULT_TOPIC_PREFIX, TOPIC_PREFIX } from './protocol.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  port: number;
  host: string;
  /** Pending connections the kernel keeps for each listener (capped by net.core.somaxconn). */
  listenBacklog: number;
  /** SOCKET_PATH: a Unix domain socket for nginx on the same host, beside the TCP port. */
  socket:
    | {
        path: string;
        /** The group that may connect (nginx's workers'); default: the process's own. */
        group: number | undefined;
      }
    | undefined;
  /** The longest a client may take to send a whole request (head and body) on the service's port. */
  httpRequestTimeoutMs: number;
  mqtt: {
    url: string;
    username: string | undefined;
    password: string | undefined;
    clientId: string;
    topicPrefix: string;
    maxPayloadBytes: number;
  };
  sse: {
    heartbeatMs: number;
    retryMs: number;
    replaySize: number;
    maxClients: number;
    clientBufferBytes: number;
    coalesceMs: number;
    writesPerSecond: number;
  };
  commands: {
    token: string | undefined;
    timeoutMs: number;
  };
  devices: {
    /** Forget a device unheard of for this long, whatever its state; 0 = never. */
    forgetAfterMs: number;
    /** New device ids admitted per second from live messages; 0 = no cap. */
    admitRate: number;
    admitBurst: number;
    /** Telemetry events per second per device on the stream; 0 = no limit. */
    maxMsgRate: number;
    msgBurst: number;
    /** Alerts + status changes per second per device on the stream; 0 = no limit. */
    maxEventRate: number;
    eventBurst: number;
  };
  /** With REDIS_URL: the log, event ids, replay and device state live in Redis, shared by replicas. */
  redis:
    | {
        url: string;
        /** Every key is `{<prefix>}:…` (one hash tag: one Cluster slot). */
        keyPrefix: string;
        /** Entries older than this leave the log (and the resume window). */
        retentionMs: number;
        /** The most entries the log keeps. */
        maxEntries: number;
        /** The one MQTT session all replicas share, held by the lease holder. */
        ingestClientId: string;
        /** How long the ingest lease lasts unless renewed: the longest ingest pauses when its holder dies. */
        leaseMs: number;
      }
    | undefined;
  /** AUTH=off: no sign-in, every request is let in (warned at every start). */
  authOff: boolean;
  /** Sign-in (AUTH=on, the default): the users file with device grants and API tokens, the cookie secret. */
  access:
    | {
        usersFile: string;
        sessionSecret: string;
        sessionTtlMs: number;
      }
    | undefined;
  shutdownDrainMs: number;
  logLevel: LogLevel;
}

// MQTT client ids: printable, no spaces; brokers accept 23+ characters in practice.
const CLIENT_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const HOST = /^[A-Za-z0-9.:_%-]{1,255}$/;

/** Reads and validates the environment once; throws ConfigError naming every bad variable. */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const r = new EnvReader(env);
  // Capped below the 60 s idle timeout that many proxies and load balancers default to.
  const heartbeatMs = r.int('SSE_HEARTBEAT_MS', 15_000, 50, 55_000);
  const config: Config = {
    port: r.int('PORT', 3000, 0, 65_535),
    host: r.string('HOST', '0.0.0.0', HOST, 'a host name or IP address'),
    // A reconnect storm (every stream cut at once) arrives in one burst: Node's default of 511
    // refuses the rest of it at once on a Unix socket (TCP would retry the SYN).
    listenBacklog: r.int('LISTEN_BACKLOG', 4_096, 1, 65_535),
    socket: undefined,
    // nginx's client_header_timeout and client_body_timeout are 60 s each; a whole API request
    // (16 KiB at most) has half of that. Streams are not cut: this bounds receiving the request only.
    httpRequestTimeoutMs: r.int('HTTP_REQUEST_TIMEOUT_MS', 30_000, 500, 300_000),
    mqtt: {
      url: r.url('MQTT_URL', 'mqtt://localhost:1883', ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ws:', 'wss:']),
      username: r.string('MQTT_USERNAME', undefined, /^[^\r\n\0]{1,256}$/, 'up to 256 characters without line breaks'),
      password: r.secret('MQTT_PASSWORD'),
      // Fixed per instance so the broker keeps this instance's QoS 1 session across restarts.
      clientId: r.string('MQTT_CLIENT_ID', `mqtt-sse-gateway-${sanitize(hostname())}`, CLIENT_ID,
        'letters, digits and _ . : - (1 to 128 characters)'),
      topicPrefix: r.string('MQTT_TOPIC_PREFIX', DEFAULT_TOPIC_PREFIX, TOPIC_PREFIX,
        'topic levels of letters, digits, _ and - separated by / (no wildcards, no leading or trailing /)'),
      maxPayloadBytes: r.int('MQTT_MAX_PAYLOAD_BYTES', 65_536, 64, 16 * 1024 * 1024),
    },
    sse: {
      heartbeatMs,
      retryMs: r.int('SSE_RETRY_MS', 3_000, 100, 600_000),
      replaySize: r.int('SSE_REPLAY_SIZE', 10_000, 0, 10_000_000),
      maxClients: r.int('SSE_MAX_CLIENTS', 20_000, 1, 1_000_000),
      clientBufferBytes: r.int('SSE_CLIENT_BUFFER_BYTES', 1_048_576, 4_096, 1024 * 1024 * 1024),
      coalesceMs: r.int('SSE_COALESCE_MS', 10, 0, 1_000),
      writesPerSecond: r.int('SSE_WRITES_PER_S', 150, 1, 100_000),
    },
    commands: {
      token: r.secret('COMMAND_TOKEN', 16),
      // The most a request may ask for too; nginx waits 130 s on /api/ for it.
      timeoutMs: r.int('COMMAND_TIMEOUT_MS', COMMAND_TIMEOUT_DEFAULT_MS, COMMAND_TIMEOUT_MIN_MS, COMMAND_TIMEOUT_MAX_MS),
    },
    devices: {
      forgetAfterMs: r.int('DEVICE_FORGET_AFTER_S', 7 * 24 * 3600, 0, 365 * 24 * 3600) * 1000,
      admitRate: r.number('DEVICE_ADMIT_RATE', 100, 0, 100_000),
      admitBurst: r.int('DEVICE_ADMIT_BURST', 1_000, 1, 1_000_000),
      maxMsgRate: r.number('DEVICE_MAX_MSG_RATE', 50, 0, 100_000),
      msgBurst: r.int('DEVICE_MSG_BURST', 200, 1, 1_000_000),
      maxEventRate: r.number('DEVICE_MAX_EVENT_RATE', 20, 0, 100_000),
      eventBurst: r.int('DEVICE_EVENT_BURST', 100, 1, 1_000_000),
    },
    redis: undefined,
    authOff: false,
    access: undefined,
    shutdownDrainMs: r.int('SHUTDOWN_DRAIN_MS', 10_000, 0, 600_000),
    logLevel: r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
  };
  // sun_path holds 107 bytes and a terminating NUL.
  const socketPath = r.string('SOCKET_PATH', '', /^\/[^\0]{0,106}$/, 'an absolute path of at most 107 characters');
  // Checked either way; without a socket it has nothing to apply to (compose sets it for the
  // socket, and an empty APP_SOCKET_PATH turns only the socket off).
  const group = r.int('SOCKET_GROUP', -1, 0, 4_294_967_294);
  if (socketPath !== '') {
    r.check(Buffer.byteLength(socketPath) <= 107, `SOCKET_PATH is ${Buffer.byteLength(socketPath)} bytes long: a Unix socket path holds at most 107`);
    config.socket = { path: socketPath, group: group === -1 ? undefined : group };
  }
  const redisUrl = r.url('REDIS_URL', undefined, ['redis:', 'rediss:']);
  if (redisUrl !== undefined) {
    config.redis = {
      url: redisUrl,
      keyPrefix: r.string('REDIS_KEY_PREFIX', 'mqtt-sse', /^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits and _ . : - (1 to 64 characters)'),
      retentionMs: r.int('LOG_RETENTION_S', 900, 10, 7 * 24 * 3600) * 1000,
      maxEntries: r.int('LOG_MAX_ENTRIES', 100_000, 1_000, 10_000_000),
      ingestClientId: r.string('MQTT_INGEST_CLIENT_ID', 'mqtt-sse-gateway-ingest', CLIENT_ID, 'letters, digits and _ . : - (1 to 128 characters)'),
      leaseMs: r.int('INGEST_LEASE_MS', 3_000, 1_000, 60_000),
    };
    r.check(config.redis.ingestClientId !== config.mqtt.clientId, 'MQTT_INGEST_CLIENT_ID must differ from MQTT_CLIENT_ID (one is shared by the replicas, the other is each replica\'s own)');
  }
  // Sign-in is on unless turned off by name: a deployment that forgot USERS_FILE fails to start
  // instead of serving every device to anyone who reaches it.
  const auth = r.oneOf('AUTH', 'on', ['on', 'off']);
  const usersFile = r.string('USERS_FILE', '', ABSOLUTE_PATH, 'an absolute path');
  config.authOff = auth === 'off';
  if (auth === 'on') {
    r.check(usersFile !== '', 'USERS_FILE must be set: sign-in is on (AUTH=on, the default) and needs the users file (`npm run users`); '
      + 'AUTH=off lets every request in instead');
    const sessionSecret = sessionSecretFrom(r, env);
    if (usersFile !== '' && sessionSecret !== undefined) {
      config.access = {
        usersFile,
        sessionSecret,
        sessionTtlMs: r.int('SESSION_TTL_S', 8 * 3600, 60, 30 * 24 * 3600) * 1000,
      };
    }
  }
  return r.done(config);
}

const ABSOLUTE_PATH = /^\/[^\0]{0,4095}$/;

/** SESSION_SECRET, else the contents of SESSION_SECRET_FILE (one line, trimmed); a problem if neither. */
function sessionSecretFrom(r: EnvReader, env: Env): string | undefined {
  const direct = r.secret('SESSION_SECRET', MIN_SESSION_SECRET);
  if (direct !== undefined) return direct;
  if ((env['SESSION_SECRET'] ?? '') !== '') return undefined; // invalid: reported by r.secret
  const file = r.string('SESSION_SECRET_FILE', '', ABSOLUTE_PATH, 'an absolute path');
  if (file === '') {
    r.check(false, `SESSION_SECRET (at least ${MIN_SESSION_SECRET} random characters) or SESSION_SECRET_FILE must be set when sign-in is on: it signs the session cookies`);
    return undefined;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    r.check(false, `SESSION_SECRET_FILE ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    return undefined;
  }
  const usable = usableSessionSecret(text);
  r.check(usable, `SESSION_SECRET_FILE ${file}: expected one line of at least ${MIN_SESSION_SECRET} characters`);
  return usable ? text : undefined;
}

function sanitize(name: string): string {
  return name.replace(/[^A-Za-z0-9_.:-]/g, '-').slice(0, 100) || 'local';
}
