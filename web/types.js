// @ts-check
// Shapes of what the server sends (README.md, "The contract in short").
// Types only: nothing here runs.

/** @typedef {'online' | 'offline' | 'unknown'} DeviceState */
/** @typedef {'info' | 'warning' | 'critical'} Severity */
/** @typedef {'up' | 'down'} MqttState */

/** @typedef {{ ts: number, seq: number, metrics: Record<string, number> }} Telemetry */

/**
 * @typedef {object} Device
 * @property {string} id
 * @property {DeviceState} state
 * @property {number | null} stateTs
 * @property {number | null} lastSeen
 * @property {Telemetry | null} telemetry
 * @property {AlertView[]} [alarms]  active alarms, most severe first, then newest first
 * @property {AlertView[]} [alerts]  recent alerts, oldest first, at most ALERT_HISTORY
 */

/**
 * An alert as the service keeps it for a device (in snapshots and GET /api/devices/:id).
 * @typedef {object} AlertView
 * @property {string} type
 * @property {Severity} severity
 * @property {string} message  untrusted device text: only ever rendered with textContent
 * @property {number} ts       the device's clock
 * @property {number} seq
 * @property {number} at       when the service received it, epoch ms
 */

/** @typedef {{ devices: Device[], mqtt: MqttState, redis?: MqttState }} SnapshotEvent */
/** @typedef {{ device: string, ts: number, seq: number, metrics: Record<string, number> }} TelemetryEvent */
/** @typedef {{ device: string, state: 'online' | 'offline', ts: number }} StatusEvent */

/**
 * @typedef {object} AlertEvent
 * @property {string} device
 * @property {number} ts
 * @property {number} seq
 * @property {string} type
 * @property {Severity} severity
 * @property {string} message  untrusted device text: only ever rendered with textContent
 * @property {number} [at]     when the service received it, epoch ms
 */

/**
 * @typedef {object} CommandEvent
 * @property {string} device
 * @property {string} id
 * @property {string} name
 * @property {'sent' | 'acked' | 'failed' | 'timeout' | 'offline'} status  `offline`: the device went offline while the command waited for its ack
 * @property {number} ts
 * @property {Record<string, unknown>} [result]
 * @property {string} [error]
 * @property {number} [durationMs]
 */

/** @typedef {{ mqtt: MqttState, redis?: MqttState, ts: number }} UpstreamEvent */
/** @typedef {{ reason: string }} ResetEvent */
/** @typedef {{ retryMs: number, reason: string }} BusyEvent */

/**
 * What a card shows about the latest command, whoever sent it.
 * `pending` is our own request in flight; `error` comes from HTTP answers, `offline` from either
 * (the device was offline, or went offline before acknowledging).
 * @typedef {'pending' | 'sent' | 'acked' | 'failed' | 'timeout' | 'offline' | 'error'} CommandStatus
 */

/**
 * @typedef {object} CommandView
 * @property {string | null} id      command id when known, to order SSE and HTTP news about it
 * @property {string} name
 * @property {CommandStatus} status
 * @property {string} text
 * @property {number} at             performance.now() when it was set, for expiry
 */

export {};
