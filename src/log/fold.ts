import type { AlertView, DeviceState, Telemetry } from '../devices/store.js';

/** The part of a device's view every change may move: carried whole, so applying it twice is harmless. */
export interface DeviceHead {
  state: DeviceState;
  stateTs: number | null;
  lastSeen: number | null;
  telemetry: Telemetry | null;
}

/**
 * What an entry of the shared log does to its device's view, so that every replica's view is the
 * same function of the log: the device's head as it stood after the change, plus the alert the
 * change added to its alarms and recent alerts, if any; or the device was forgotten.
 */
export type Fold = { h: DeviceHead; a?: AlertView } | { forget: true };
