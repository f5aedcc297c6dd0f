// The shared log's append script on a real redis-server: what every replica relies on without
// looking (dense positions, the stored fields, the fence, a retried batch appended once).
import { createClient } from '@redis/client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { APPEND, INIT } from '../../src/log/redis-scripts.js';
import { Redis } from '../../src/native/redis.js';

let redis: Redis;
let client: ReturnType<typeof createClient>;

const p = '{scripts}';
const KEYS = [`${p}:meta`, `${p}:log`, `${p}:lease`, `${p}:writer:w1`, `${p}:ingested`, `${p}:ingested-order`];

beforeAll(async () => {
  redis = await Redis.start();
  client = createClient({ url: redis.url });
  await client.connect();
});

afterAll(async () => {
  await client?.quit().catch(() => undefined);
  await redis?.stop();
});

beforeEach(async () => {
  await client.sendCommand(['FLUSHALL']);
  await client.sendCommand(['EVAL', INIT, '3', KEYS[0]!, KEYS[1]!, `${p}:state`, 'ep01', '{}']);
});

type Fields = [name: string, device: string, bit: string, json: string, ts: string, fold: string];

function append(batch: number, entries: Fields[], token = '', keys = ''): Promise<unknown> {
  return client.sendCommand(['EVAL', APPEND, String(KEYS.length), ...KEYS, 'ep01', token, String(batch), '100000', '900000', keys, String(entries.length), '', ...entries.flat()]);
}

const telemetry = (seq: number): Fields => ['telemetry', 'pump-1', '1', `{"seq":${seq}}`, '1700000000000', `{"h":{"state":"online"}}`];

async function stored(): Promise<[string, string[]][]> {
  return (await client.sendCommand(['XRANGE', KEYS[1]!, '-', '+'])) as [string, string[]][];
}

describe('the append script', () => {
  it('numbers entries densely and stores only the fields an entry has, with the time it was logged', async () => {
    const reply = (await append(1, [telemetry(1), ['', 'pump-1', '', '', '', '{"forget":true}'], ['upstream', '', '0', '{"mqtt":"up"}', '', '']])) as unknown[];
    expect(reply.slice(0, 4)).toEqual([1, 3, 0, '']);
    const entries = await stored();
    expect(entries.map((e) => e[0])).toEqual(['1-0', '2-0', '3-0']);
    const ms = String(reply[4]);
    expect(entries[0]![1]).toEqual(['m', ms, 'e', 'telemetry', 'd', 'pump-1', 'b', '1', 'j', '{"seq":1}', 't', '1700000000000', 'f', '{"h":{"state":"online"}}']);
    expect(entries[1]![1]).toEqual(['m', ms, 'd', 'pump-1', 'f', '{"forget":true}']);
    expect(entries[2]![1]).toEqual(['m', ms, 'e', 'upstream', 'b', '0', 'j', '{"mqtt":"up"}']);
    expect(await client.sendCommand(['HGET', KEYS[0]!, 'n'])).toBe('3');
  });

  it('appends a retried batch once, and never lets an older batch number through again', async () => {
    await append(1, [telemetry(1)]);
    expect(((await append(1, [telemetry(1)])) as unknown[])[3], 'the same batch again').toBe('retry');
    expect(((await append(2, [telemetry(2), telemetry(3)])) as unknown[]).slice(0, 2)).toEqual([2, 3]);
    expect(((await append(1, [telemetry(1)])) as unknown[])[3], 'an older batch').toBe('retry');
    expect(((await append(2, [telemetry(2), telemetry(3)])) as unknown[])[3], 'the newest batch is still known').toBe('retry');
    expect((await stored()).map((e) => e[0])).toEqual(['1-0', '2-0', '3-0']);
    expect(Number(await client.sendCommand(['PTTL', KEYS[3]!]))).toBeGreaterThan(3_500_000);
  });

  it('refuses a fenced append without the lease, and an append to another epoch', async () => {
    await client.sendCommand(['SET', KEYS[2]!, 'holder-a', 'PX', '60000']);
    await expect(append(1, [telemetry(1)], 'holder-b')).rejects.toThrow(/^FENCED/);
    await expect(append(1, [telemetry(1)], 'holder-a')).resolves.toBeDefined();
    await expect(client.sendCommand(['EVAL', APPEND, String(KEYS.length), ...KEYS, 'ep02', '', '2', '100000', '900000', '', '1', '', ...telemetry(2)])).rejects.toThrow(/^EPOCH ep01/);
    expect((await stored()).length).toBe(1);
  });

  it('refuses an append to a meta without a head before recording its batch, so its retry still appends', async () => {
    await client.sendCommand(['HDEL', KEYS[0]!, 'n']);
    await expect(append(1, [telemetry(1)])).rejects.toThrow(/^NOLOG/);
    await client.sendCommand(['HSET', KEYS[0]!, 'n', '0']);
    expect(((await append(1, [telemetry(1)])) as unknown[]).slice(0, 2)).toEqual([1, 1]);
  });

  it('remembers the ingest keys it appended', async () => {
    await append(1, [telemetry(1)], '', 'k1 k2');
    expect(await client.sendCommand(['HGET', KEYS[4]!, 'k1'])).toBe('1');
    expect(await client.sendCommand(['LRANGE', KEYS[5]!, '0', '-1'])).toEqual(['k2', 'k1']);
  });
});
