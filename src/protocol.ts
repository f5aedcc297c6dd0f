// The vocabulary the service, the simulator, the dashboard and the tests share: identifiers,
// topic and event names, error codes and limits. One definition each, here; the dashboard loads
// a copy that `npm run build` emits to web/protocol.js (a unit test keeps it in step).
// No imports: this file must compile on its own for the browser.

/** Device ids, as topic levels and in URLs. */
export const DEVICE_ID_MAX_CHARS = 64;
export const DEVICE_ID_RULE = `[A-Za-z0-9_-]{1,${DEVICE_ID_MAX_CHARS}}`;
export const DEVICE_ID = new RegExp(`^${DEVICE_ID_RULE}$`);

/** The first topic levels: `<prefix>/<device id>/<kind>`. */
export const DEFAULT_TOPIC_PREFIX = 'devices';
/** A topic level sequence without wildcards, empty levels or leading/trailing slashes. */
export const TOPIC_PREFIX = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/;
/** The last topic level: what the message is. `commands` go service → device, the rest device → service. */
export const TOPIC_KINDS = ['status', 'telemetry', 'events', 'acks', 'commands'] as const;
export type TopicKind = (typeof TOPIC_KINDS)[number];

/**
 * SSE event names, as `event:` lines and metric labels: the events that carry something to show.
 * POSITION_EVENT is not among them: like the keepalive comment it is the stream's own
 * bookkeeping, sent per client (heartbeats, skipped events), not an event published to clients.
 */
export const SSE_EVENTS = ['snapshot', 'telemetry', 'status', 'alert', 'command', 'upstream', 'reset', 'busy'] as const;
export type SseEventName = (typeof SSE_EVENTS)[number];
/**
 * An event that only moves a client's last event id (`data: {}`): sent as the heartbeat, and
 * after events the client's filter skipped, so a quiet stream resumes from where it is.
 */
export const POSITION_EVENT = 'position';
/** What a stream can select with `types=`; `event` is the devices' events topic, sent as `alert`. */
export const STREAM_TYPES = ['telemetry', 'status', 'event', 'command'] as const;
export type StreamType = (typeof STREAM_TYPES)[number];

/** Command names: what a device will run. The service refuses what a device would refuse. */
export const COMMAND_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
export const COMMAND_NAME_RULE = 'a letter, then letters, digits, _ or - (1 to 64 characters)';
/**
 * Bounds of a command's wait for its ack, by default (COMMAND_TIMEOUT_MS) or per request. The
 * command's MQTT expiry must end within the wait, and brokers count expiry in whole seconds
 * (at least 1, and up to 1 s more in Mosquitto): no shorter wait can keep that promise.
 */
export const COMMAND_TIMEOUT_MIN_MS = 2_500;
export const COMMAND_TIMEOUT_MAX_MS = 120_000;
/** The default wait, when neither the request nor COMMAND_TIMEOUT_MS says. */
export const COMMAND_TIMEOUT_DEFAULT_MS = 5_000;
/** Largest JSON body the API accepts (nginx enforces the same). */
export const MAX_BODY_BYTES = 16 * 1024;
/**
 * Largest command payload a device must accept, and the service may publish: the API body with
 * the id, ts and timeoutMs the service adds, and room for numbers that JSON.stringify writes out
 * longer than they were sent (`1e20`). Under the project broker's max_packet_size (128 KiB).
 */
export const MAX_COMMAND_BYTES = 64 * 1024;

/** Alert severities, least to most severe. */
export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** Limits of what devices send. */
export const MAX_METRICS = 64;
export const METRIC_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Alert types and other short words. */
export const WORD = /^[A-Za-z0-9_.-]{1,64}$/;
export const MAX_MESSAGE_CHARS = 1024;
export const MAX_NESTING = 16;
/** Devices the service keeps state for; messages from more are refused (`device_limit`). */
export const MAX_DEVICES = 100_000;
/** Recent alerts kept per device and carried in its view (`alerts`, oldest first). */
export const ALERT_HISTORY = 10;
/** Active alarms (one per alert type) kept per device; past it the least severe, oldest gives way. */
export const MAX_ACTIVE_ALARMS = 8;
/**
 * Characters of an alert's message kept in a device's alarms and recent alerts (longer ones are cut
 * to end in "..."); the live `alert` event carries all MAX_MESSAGE_CHARS. Bounds what 100,000
 * devices' stored alerts can cost: about 6 KiB per device at worst instead of 22 KiB.
 */
export const ALERT_VIEW_MESSAGE_CHARS = 200;

/** Limits of a stream request. */
export const MAX_FILTER_DEVICES = 1_000;
export const MAX_LAST_EVENT_ID = 256;

/** Largest page of GET /api/devices (`limit`), and the page size when no `limit` is given. */
export const MAX_DEVICE_PAGE = 1_000;

/** The `error` codes of JSON error bodies, `{"error":"<code>","message":"<sentence>"}`. */
export const ERROR_CODES = [
  'bad_request',
  'bad_device',
  'bad_types',
  'bad_last_event_id',
  'bad_query',
  'bad_json',
  'bad_body',
  'unauthorized',
  'not_found',
  'unknown_device',
  'method_not_allowed',
  'device_offline',
  'request_timeout',
  'payload_too_large',
  'uri_too_long',
  'unsupported_media_type',
  'headers_too_large',
  'rate_limited',
  'internal',
  'commands_disabled',
  'busy',
  'broker_unavailable',
  'shutting_down',
  'not_ready',
  'unavailable',
  'timeout',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
