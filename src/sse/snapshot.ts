import type { Histogram } from 'prom-client';
import type { UpstreamState } from '../devices/catalog.js';
import type { Bytes } from './chunk.js';
import type { Filter } from './client.js';
import type { Hub } from './hub.js';

/** What snapshots are made of: the encoded device list (devices/catalog.ts) and the upstream state. */
export interface SnapshotSource {
  /** Changes whenever a snapshot's content would. */
  readonly version: number;
  upstream(): UpstreamState;
  /** `{"devices":[…],"mqtt":…}` for every device, or only `devices`, as buffers to send in order (one line of JSON). */
  data(upstream: UpstreamState, devices: ReadonlySet<string> | null): Bytes[];
}

export interface Opening {
  /** The hub position the snapshot was taken at: its id, and what a reset says. */
  seq: number;
  /** The snapshot frame, then the events after `seq` that the filter passes, in order: segments of buffers, the first shared. */
  parts: (readonly Bytes[])[];
  /** Everything up to this seq is in `parts`: the client's starting point for live events. */
  after: number;
}

interface Shared {
  epoch: string;
  seq: number;
  version: number;
  /** The upstream state it says, as a comparable key. */
  upstream: string;
  builtAt: number;
  frame: Bytes[];
}

/** The longest a shared snapshot is reused while the state moves on (the events since then are replayed). */
const MAX_SHARE_MS = 1_000;

/**
 * Snapshots taken at a consistent point: the store has applied every event up to the hub's head
 * and none after it (ingest applies and publishes in one step), so a snapshot built now is the
 * state at position P = head, and its id is P's. A client that opens while a recent one exists
 * shares it (one buffer, referenced by every opening) and gets the replay-window events after P
 * that its filter passes: no gap and no overlap with the live events after that. A new one is
 * taken when the old one left the replay window, or is older than ten times its own build time
 * (so rebuilding costs at most a tenth of the time; a small fleet is rebuilt on every change).
 * Snapshots filtered by device are built from those devices' fragments, at the head.
 */
export class Snapshots {
  private shared: Shared | undefined;
  private buildMs = 0;

  constructor(
    private readonly hub: Hub,
    private readonly source: SnapshotSource,
    private readonly buildTime?: Histogram<'kind'>,
    private readonly now: () => number = () => performance.now(),
  ) {}

  open(filter: Filter): Opening {
    const upstream = this.source.upstream();
    const key = `${upstream.mqtt}/${upstream.redis ?? ''}`;
    if (filter.devices !== null) {
      const seq = this.hub.head;
      const started = this.now();
      const frame = this.frame(seq, this.source.data(upstream, filter.devices));
      this.buildTime?.observe({ kind: 'filtered' }, (this.now() - started) / 1000);
      return { seq, parts: [frame], after: seq };
    }
    let shared = this.reusable(key);
    if (shared === undefined) {
      const seq = this.hub.head;
      const started = this.now();
      const frame = this.frame(seq, this.source.data(upstream, null));
      const builtAt = this.now();
      this.buildMs = builtAt - started;
      this.buildTime?.observe({ kind: 'shared' }, this.buildMs / 1000);
      shared = { epoch: this.hub.instanceId, seq, version: this.source.version, upstream: key, builtAt, frame };
      this.shared = shared;
    }
    const events = this.hub.eventsAfter(shared.seq, filter) ?? [];
    return { seq: shared.seq, parts: [shared.frame, events.map((e) => e.frame)], after: this.hub.head };
  }

  private reusable(upstream: string): Shared | undefined {
    const shared = this.shared;
    if (shared === undefined || shared.upstream !== upstream || shared.epoch !== this.hub.instanceId || !this.hub.covers(shared.seq)) return undefined;
    if (shared.version === this.source.version) return shared;
    const maxAge = Math.min(MAX_SHARE_MS, 10 * this.buildMs);
    return this.now() - shared.builtAt < maxAge ? shared : undefined;
  }

  /** Head, data and end of the `snapshot` frame, the data not copied (it is one line of JSON). */
  private frame(seq: number, data: Bytes[]): Bytes[] {
    data.unshift(Buffer.from(`event: snapshot\nid: ${this.hub.idOf(seq)}\ndata: `, 'utf8'));
    data.push(Buffer.from('\n\n', 'utf8'));
    return data;
  }
}
