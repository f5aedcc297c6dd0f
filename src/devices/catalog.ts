import type { DeviceStore } from './store.js';

export interface Page {
  /** `{"devices":[…],"next":…}`, ready to send. */
  body: string;
  count: number;
  next: string | null;
}

/** What a snapshot says of the service's upstreams: the broker, and the shared log when there is one. */
export interface UpstreamState {
  mqtt: 'up' | 'down';
  redis?: 'up' | 'down';
}

const OPEN = '{"devices":[';

interface Entry {
  readonly id: string;
  /**
   * `,{…}`: the view's JSON after a comma, so a list is these one after another. A string, not a
   * Buffer: small Buffers are slices of shared 8 KiB slabs, and replacing fragments at random
   * kept ~4.5 times their size alive in half-used slabs; strings are compacted by the GC.
   */
  fragment: string;
}

/**
 * Every device's public view, kept encoded as a JSON fragment and in id order, so that a device
 * list, a page or a snapshot is a sequence of ready buffers: no sort and no JSON.stringify of the
 * whole fleet per request, and a snapshot of 100,000 devices is an array of references to them
 * (fragments are replaced, never changed, so a snapshot partway out to a client stays intact). A
 * fragment is re-encoded when the store says its device changed (one device's worth of work, on
 * the ingest path that already encodes the event); the order is kept by binary-search insert and
 * remove.
 */
export class DeviceCatalog {
  private readonly byId = new Map<string, Entry>();
  private readonly order: Entry[] = [];
  private bytes = 0;
  /** Bumped on every change, so an encoding built from the catalog can tell it is current. */
  version = 0;

  constructor(private readonly store: Pick<DeviceStore, 'subscribe' | 'encode'>) {
    store.subscribe((id, change) => (change === 'forgotten' ? this.remove(id) : this.update(id)));
  }

  get size(): number {
    return this.order.length;
  }

  /** Characters of all fragments (each with its comma): about the size of a full snapshot. */
  get byteSize(): number {
    return this.bytes;
  }

  /** One device's view as JSON. */
  fragment(id: string): string | undefined {
    return this.byId.get(id)?.fragment.slice(1);
  }

  private update(id: string): void {
    const encoded = this.store.encode(id);
    if (encoded === undefined) {
      this.remove(id);
      return;
    }
    this.version += 1;
    const fragment = `,${encoded}`;
    const entry = this.byId.get(id);
    if (entry === undefined) {
      const added = { id, fragment };
      this.byId.set(id, added);
      this.order.splice(this.indexAfter(id, true), 0, added);
    } else {
      this.bytes -= entry.fragment.length;
      entry.fragment = fragment;
    }
    this.bytes += fragment.length;
  }

  private remove(id: string): void {
    const entry = this.byId.get(id);
    if (entry === undefined) return;
    this.version += 1;
    this.byId.delete(id);
    this.bytes -= entry.fragment.length;
    const at = this.indexAfter(id, true);
    if (this.order[at] === entry) this.order.splice(at, 1);
  }

  /** The index of the first entry above `id` (or, `inclusive`, not below it). */
  private indexAfter(id: string, inclusive = false): number {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.order[mid]!.id;
      if (at < id || (!inclusive && at === id)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** `{"devices":[` + the entries' fragments + `tail`, as strings to write one after another. */
  private list(entries: Iterable<Entry>, tail: string): string[] {
    const parts: string[] = [OPEN];
    for (const entry of entries) parts.push(parts.length === 1 ? entry.fragment.slice(1) : entry.fragment);
    parts.push(tail);
    return parts;
  }

  /**
   * The snapshot's data, `{"devices":[…],"mqtt":"up"}` (with the shared log also `"redis":"up"`),
   * for every device or only `ids`, as buffers in order.
   */
  snapshotData(upstream: UpstreamState, ids: ReadonlySet<string> | null = null): string[] {
    let entries: Iterable<Entry> = this.order;
    if (ids !== null) {
      const selected: Entry[] = [];
      for (const id of ids) {
        const entry = this.byId.get(id);
        if (entry) selected.push(entry);
      }
      entries = selected.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    }
    return this.list(entries, `],"mqtt":"${upstream.mqtt}"${upstream.redis ? `,"redis":"${upstream.redis}"` : ''}}`);
  }

  /** The ids `canSee` passes, for a snapshot of what one user may see. */
  visible(canSee: (id: string) => boolean): Set<string> {
    const ids = new Set<string>();
    for (const entry of this.order) if (canSee(entry.id)) ids.add(entry.id);
    return ids;
  }

  /** Up to `limit` devices with ids above `after` (from the start when undefined), in id order; only those `canSee` passes. */
  page(limit: number, after: string | undefined, canSee?: (id: string) => boolean): Page {
    const from = after === undefined ? 0 : this.indexAfter(after);
    let entries: Entry[];
    let more: boolean;
    if (!canSee) {
      entries = this.order.slice(from, from + limit);
      more = from + entries.length < this.order.length;
    } else {
      entries = [];
      let i = from;
      for (; i < this.order.length && entries.length < limit; i += 1) if (canSee(this.order[i]!.id)) entries.push(this.order[i]!);
      // A next page only if one more visible device exists: no empty last page.
      more = false;
      for (; i < this.order.length && !more; i += 1) more = canSee(this.order[i]!.id);
    }
    const next = more && entries.length > 0 ? entries[entries.length - 1]!.id : null;
    const tail = `],"next":${next === null ? 'null' : JSON.stringify(next)}}`;
    return { body: this.list(entries, tail).join(''), count: entries.length, next };
  }
}
