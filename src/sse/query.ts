import { HttpError } from '../http/errors.js';
import { DEVICE_ID } from '../devices/schema.js';
import type { Filter } from './client.js';
import { ALL_TYPES, TOPIC_TYPES, TYPE_BIT, type TopicType } from './event.js';

const MAX_FILTER_DEVICES = 1_000;
/** Our ids are ~30 characters; anything this long is not one of ours and not worth parsing. */
export const MAX_LAST_EVENT_ID = 256;

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
        throw badRequest('bad_device', `Device ids must match [A-Za-z0-9_-]{1,64}; got ${JSON.stringify(id.slice(0, 70))}.`);
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
      if (!(TOPIC_TYPES as readonly string[]).includes(type)) {
        throw badRequest('bad_types', `Unknown type ${JSON.stringify(type.slice(0, 40))}; allowed: ${TOPIC_TYPES.join(', ')}.`);
      }
      mask |= TYPE_BIT[type as TopicType];
    }
  }

  const lastEventId = lastEventIdHeader ?? query.get('lastEventId') ?? undefined;
  if (lastEventId !== undefined && lastEventId.length > MAX_LAST_EVENT_ID) {
    throw badRequest('bad_last_event_id', `Last-Event-ID is longer than ${MAX_LAST_EVENT_ID} characters.`);
  }
  // An empty Last-Event-ID means the browser has no position: start fresh.
  return { filter: { devices, mask }, lastEventId: lastEventId === '' ? undefined : lastEventId };
}
