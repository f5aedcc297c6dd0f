import { HttpError } from './errors.js';
import { DEVICE_ID, DEVICE_ID_RULE, MAX_FILTER_DEVICES, MAX_LAST_EVENT_ID, STREAM_TYPES, type StreamType } from '../protocol.js';
import type { Filter } from '../sse/client.js';
import { ALL_TYPES, TYPE_BIT } from '../sse/event.js';

export interface StreamRequest {
  filter: Filter;
  lastEventId: string | undefined;
}

function badRequest(code: string, message: string): HttpError {
  return new HttpError(400, code, message);
}

/**
 * Parses `device=`, `devices=`, `types=` and `lastEventId` (plus the Last-Event-ID header).
 * Other parameters are ignored, as proxies and front ends add cache busters (`_=1700000000`) that
 * must not turn a working stream into a 400 the browser retries forever.
 */
export function parseStreamRequest(query: URLSearchParams, lastEventIdHeader: string | undefined): StreamRequest {
  const ids = [
    ...query.getAll('device'),
    ...query.getAll('devices').flatMap((list) => list.split(',')),
  ].map((id) => id.trim());
  let devices: Set<string> | null = null;
  if (ids.length > 0) {
    devices = new Set();
    for (const id of ids) {
      if (!DEVICE_ID.test(id)) {
        throw badRequest('bad_device', `Device ids must match ${DEVICE_ID_RULE}; got ${JSON.stringify(id.slice(0, 70))}.`);
      }
      devices.add(id);
    }
    if (devices.size > MAX_FILTER_DEVICES) {
      throw badRequest('bad_device', `At most ${MAX_FILTER_DEVICES} devices per stream.`);
    }
  }

  let mask = ALL_TYPES;
  const typeLists = query.getAll('types');
  if (typeLists.length > 0) {
    mask = 0;
    for (const type of typeLists.flatMap((list) => list.split(',')).map((t) => t.trim())) {
      if (!(STREAM_TYPES as readonly string[]).includes(type)) {
        throw badRequest('bad_types', `Unknown type ${JSON.stringify(type.slice(0, 40))}; allowed: ${STREAM_TYPES.join(', ')}.`);
      }
      mask |= TYPE_BIT[type as StreamType];
    }
  }

  const lastEventId = lastEventIdHeader ?? query.get('lastEventId') ?? undefined;
  if (lastEventId !== undefined && lastEventId.length > MAX_LAST_EVENT_ID) {
    throw badRequest('bad_last_event_id', `Last-Event-ID is longer than ${MAX_LAST_EVENT_ID} characters.`);
  }
  // An empty Last-Event-ID means the browser has no position: start fresh.
  return { filter: { devices, mask }, lastEventId: lastEventId === '' ? undefined : lastEventId };
}
