import { createClient } from '@redis/client';
import { connect } from 'node:net';

export type RespValue = string | number | null | RespValue[] | Error;

/**
 * One command over a fresh connection in raw RESP2, enough to probe a server before the project
 * has a Redis client: simple strings, errors, integers, bulk strings and flat arrays.
 */
export function redisCommand(port: number, args: readonly string[], host = '127.0.0.1', timeoutMs = 3_000): Promise<RespValue> {
  const request = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host });
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no RESP reply to ${args[0]} on ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const parsed = parse(buffer, 0);
      if (!parsed) return;
      clearTimeout(timer);
      socket.end();
      resolve(parsed.value);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function parse(buf: Buffer, at: number): { value: RespValue; next: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[at]!);
  const line = buf.toString('utf8', at + 1, eol);
  switch (type) {
    case '+':
      return { value: line, next: eol + 2 };
    case '-':
      return { value: new Error(line), next: eol + 2 };
    case ':':
      return { value: Number(line), next: eol + 2 };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, next: eol + 2 };
      if (buf.length < eol + 2 + length + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + length), next: eol + 2 + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next: eol + 2 };
      const items: RespValue[] = [];
      let next = eol + 2;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, next);
        if (!item) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/** Every entry of a deployment's shared log, straight from Redis: its position and fields. */
export async function logEntries(url: string, keyPrefix: string): Promise<{ pos: number; f: Record<string, string> }[]> {
  const client = createClient({ url });
  await client.connect();
  try {
    const raw = (await client.sendCommand(['XRANGE', `{${keyPrefix}}:log`, '-', '+'])) as [string, string[]][];
    return raw.map(([id, list]) => {
      const f: Record<string, string> = {};
      for (let i = 0; i < list.length; i += 2) f[list[i]!] = list[i + 1]!;
      return { pos: Number.parseInt(id, 10), f };
    });
  } finally {
    await client.close();
  }
}

/** How many times each message (`device#seq`) of one kind of log entry (`telemetry`, `alert`) is in the log. */
export async function loggedCounts(url: string, keyPrefix: string, event: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const { f } of await logEntries(url, keyPrefix)) {
    if (f.e !== event) continue;
    const data = JSON.parse(f.j!) as { device: string; seq: number };
    const key = `${data.device}#${data.seq}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
