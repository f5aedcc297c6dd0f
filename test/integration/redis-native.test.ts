import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis, REDIS_INSTALL_HINT } from '../../src/native/redis.js';
import { findBinary } from '../../src/native/mosquitto.js';
import { PROJECT_FILES } from '../../src/native/project.js';
import { redisCommand } from '../helpers/redis.js';
import { eventually } from '../helpers/wait.js';

let redis: Redis;

beforeAll(async () => {
  redis = await Redis.start();
});

afterAll(async () => {
  await redis?.stop();
});

describe('native redis-server', () => {
  it('is found, or the error says how to install it', async () => {
    await expect(findBinary('redis-server', REDIS_INSTALL_HINT)).resolves.toMatch(/redis-server$/);
    expect(REDIS_INSTALL_HINT).toContain('apt-get install -y redis-server');
  });

  it('answers PING on its own loopback port', async () => {
    expect(redis.port).toBeGreaterThan(0);
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    await expect(redisCommand(redis.port, ['PING'])).resolves.toBe('PONG');
  });

  it('runs with the settings the log relies on', async () => {
    const config = async (name: string) => redisCommand(redis.port, ['CONFIG', 'GET', name]);
    expect(await config('appendonly')).toEqual(['appendonly', 'yes']);
    expect(await config('appendfsync')).toEqual(['appendfsync', 'everysec']);
    expect(await config('maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
    expect(await config('save')).toEqual(['save', '']);
    expect(await config('bind')).toEqual(['bind', '127.0.0.1']);
    expect(await config('dir')).toEqual(['dir', redis.dir]);
  });

  it('reads them from the project\'s redis/redis.conf, the file docker compose mounts', async () => {
    const info = await redisCommand(redis.port, ['INFO', 'server']);
    expect(String(info)).toContain(`config_file:${PROJECT_FILES.redisConf}\r\n`);
    const conf = await readFile(PROJECT_FILES.redisConf, 'utf8');
    for (const line of ['appendonly yes', 'appendfsync everysec', 'maxmemory-policy noeviction', 'save ""']) {
      expect(conf.split('\n'), line).toContain(line);
    }
  });

  it('writes its append-only file under its own directory', async () => {
    await redisCommand(redis.port, ['SET', 'aof-probe', 'written']);
    const aof = await eventually(async () => {
      const files = await readdir(redis.aofDir).catch(() => [] as string[]);
      const incr = files.find((f) => f.endsWith('.incr.aof'));
      if (!incr) return undefined;
      const text = await readFile(join(redis.aofDir, incr), 'utf8');
      return text.includes('aof-probe') ? text : undefined;
    }, 'the SET in an .incr.aof file under the data directory', 5_000);
    expect(aof).toContain('written');
  });

  it('keeps its data across a restart, and loses it when the directory is wiped', async () => {
    await redisCommand(redis.port, ['SET', 'survivor', 'still-here']);
    const pid = redis.pid;
    await redis.restart();
    expect(redis.pid).not.toBe(pid);
    expect(redis.running).toBe(true);
    await expect(redisCommand(redis.port, ['GET', 'survivor'])).resolves.toBe('still-here');

    await redis.restart({ wipe: true });
    expect(redis.running).toBe(true);
    await expect(redisCommand(redis.port, ['PING'])).resolves.toBe('PONG');
    await expect(redisCommand(redis.port, ['GET', 'survivor'])).resolves.toBeNull();
    await expect(redisCommand(redis.port, ['DBSIZE'])).resolves.toBe(0);
  });
});
