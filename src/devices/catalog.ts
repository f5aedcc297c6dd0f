import type { DeviceStore } from './store.js';

/** Largest page of GET /api/devices, and the page size when no `limit` is given. */
export const PAGE_MAX = 1_000;

export interface Page {
  /** `{"devices":[…],"next":…}`, ready to send. */
  body: Buffer;
  count: number;
  next: string | null;
}

const COMMA = Buffer.from(',');

/**
 * Every device's public view, kept encoded as a JSON fragment and in id order, so that a device
 * list, a page or a snapshot is a concatenation of ready bytes: no sort and no JSON.stringify of
 * the whole fleet per request. A fragment is re-encoded when the store says its device changed
 * (one device's worth of work, on the ingest path that already encodes the event); the order is
 * kept by binary-search insert and remove.
 */
export class DeviceCatalog {
  private readonly fragments = new Map<string, Buffer>();
  private readonly order: string[] = [];
  private bytes = 0;
  /** Bumped on every change, so an encoding built from the catalog can tell it is current. */
  version = 0;

  constructor(private readonly store: Pick<DeviceStore, 'subscribe' | 'get'>) {
    store.subscribe((id, change) => (change === 'forgotten' ? this.remove(id) : this.update(id)));
  }

  get size(): number {
    return this.order.length;
  }

  /** Bytes of all fragments: about the size of a full snapshot. */
  get byteSize(): number {
    return this.bytes;
  }

  fragment(id: string): Buffer | undefined {
    return this.fragments.get(id);
  }

  private update(id: string): void {
    const view = this.store.get(id);
    if (view === undefined) {
      this.remove(id);
      return;
    }
    this.version += 1;
    const encoded = Buffer.from(JSON.stringify(view), 'utf8');
    const previous = this.fragments.get(id);
    if (previous === undefined) this.order.splice(this.indexAfter(id, true), 0, id);
    else this.bytes -= previous.length;
    this.fragments.set(id, encoded);
    this.bytes += encoded.length;
  }

  private remove(id: string): void {
    const previous = this.fragments.get(id);
    if (previous === undefined) return;
    this.version += 1;
    this.fragments.delete(id);
    this.bytes -= previous.length;
    const at = this.indexAfter(id, true);
    if (this.order[at] === id) this.order.splice(at, 1);
  }

  /** The index of the first id above `id` (or, `inclusive`, not below it). */
  private indexAfter(id: string, inclusive = false): number {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.order[mid]!;
      if (at < id || (!inclusive && at === id)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** `[f1,f2,…]` for the given ids in id order (all devices when `ids` is null); unknown ids are left out. */
  private array(ids: readonly string[]): Buffer[] {
    const parts: Buffer[] = [];
    for (const id of ids) {
      const fragment = this.fragments.get(id);
      if (fragment === undefined) continue;
      if (parts.length > 0) parts.push(COMMA);
      parts.push(fragment);
    }
    return parts;
  }

  /** The snapshot's data, `{"devices":[…],"mqtt":"up"}`, for every device or only `ids`. */
  snapshotData(mqtt: 'up' | 'down', ids: ReadonlySet<string> | null = null): Buffer {
    const selected = ids === null ? this.order : [...ids].filter((id) => this.fragments.has(id)).sort();
    return Buffer.concat([Buffer.from('{"devices":['), ...this.array(selected), Buffer.from(`],"mqtt":"${mqtt}"}`)]);
  }

  /** Up to `limit` devices with ids above `after` (from the start when undefined), in id order. */
  page(limit: number, after: string | undefined): Page {
    const from = after === undefined ? 0 : this.indexAfter(after);
    const ids = this.order.slice(from, from + limit);
    const next = from + ids.length < this.order.length && ids.length > 0 ? ids[ids.length - 1]! : null;
    const tail = `],"next":${next === null ? 'null' : JSON.stringify(next)}}`;
    return { body: Buffer.concat([Buffer.from('{"devices":['), ...this.array(ids), Buffer.from(tail)]), count: ids.length, next };
  }
}
