import type { SseEventName, StreamType } from '../protocol.js';

/** One bit per `types=` value, so a filter is one mask. */
export const TYPE_BIT: Readonly<Record<StreamType, number>> = { telemetry: 1, status: 2, event: 4, command: 8 };
/** Events every stream gets whatever its filter (`upstream`). */
export const ALWAYS = 0;
export const ALL_TYPES = 1 | 2 | 4 | 8;

/** One event as the hub keeps it: encoded once, the same bytes for every subscriber. */
export interface HubEvent {
  readonly seq: number;
  readonly name: SseEventName;
  /** The device it concerns, or null for service-wide events (`upstream`). */
  readonly device: string | null;
  /** Its TYPE_BIT, or ALWAYS. */
  readonly bit: number;
  readonly frame: Buffer;
  /** The device's own timestamp, for the device → client latency histogram. */
  readonly deviceTs: number | undefined;
  /** When the shared log took it (Redis's clock, ms): what its retention by age goes by. */
  readonly loggedAt?: number | undefined;
}
