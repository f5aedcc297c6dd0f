// Messages between the orchestrator (run.ts) and its load processes (load.ts, publisher.ts).
import type { HistogramData } from './histogram.js';

export interface ConnectRequest {
  type: 'connect';
  host: string;
  port: number;
  path: string;
  /** The CA nginx's certificate is signed by (PEM): streams over HTTPS. */
  ca?: string;
  /** This process's clients are numbered first..first+count-1 across all load processes. */
  first: number;
  count: number;
  /** Every client whose number n has floor((n+1)·f) > floor(n·f) is a slow one (stops reading on `stall`). */
  slowFraction: number;
  /** Devices the streams will see (bench-0 .. bench-(devices-1)). */
  devices: number;
  /** Clients per loopback source address (127.0.0.2, 127.0.0.3, ...), under nginx's per-address limit. */
  perAddress: number;
  /**
   * Reconnect as EventSource does: after the stream's `retry:` (3 s until one arrives), with
   * its last id as Last-Event-ID, again and again while refused. Otherwise a cut stream stays cut.
   */
  reconnect?: boolean;
}

export type LoadRequest = ConnectRequest | { type: 'stall' } | { type: 'stats' } | { type: 'close' };

export interface LoadStats {
  clients: number;
  slowClients: number;
  opened: number;
  failed: number;
  failures: string[];
  /** Opened streams the server ended (a fast client: a bug; a slow one: eviction). */
  closedFast: number;
  closedSlow: number;
  /** Streams open right now (opened and not ended). */
  open: number;
  /** Reconnects that opened a stream again (reconnect mode), and attempts that did not. */
  reopened: number;
  retriesFailed: number;
  fast: { received: number; duplicates: number; minPerClient: number; latency: HistogramData };
  slow: { received: number; duplicates: number };
}

export type LoadReply =
  | { type: 'connected'; opened: number; failed: number; failures: string[]; ms: number }
  | { type: 'stats'; stats: LoadStats }
  | { type: 'stalled'; count: number }
  | { type: 'closed' };

export interface PublisherStart {
  type: 'start';
  url: string;
  /** Each device's password on the project broker; its username and client id are its id. */
  passwords: Record<string, string>;
  devices: number;
  qos: 0 | 1;
}

export interface PublishRequest {
  type: 'publish';
  /** Messages per second over all devices, round-robin. */
  rate: number;
  seconds: number;
  /** 1: counted by the clients; 0: warm-up. */
  window: 0 | 1;
}

export type PublisherRequest = PublisherStart | PublishRequest | { type: 'stop' };

export type PublisherReply =
  | { type: 'ready'; ms: number }
  | { type: 'published'; count: number; ms: number }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

export const DEVICE_PREFIX = 'bench-';
