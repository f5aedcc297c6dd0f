import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { systemResolver } from '../../src/native/nginx.js';

describe('the native stack\'s nginx resolver', () => {
  const dir = mkdtemp(join(tmpdir(), 'resolv-'));
  afterAll(async () => rm(await dir, { recursive: true, force: true }));

  async function resolverOf(text: string): Promise<string> {
    const file = join(await dir, `resolv-${Math.random()}`);
    await writeFile(file, text);
    return systemResolver(file);
  }

  it('takes the first nameserver of resolv.conf, IPv6 in brackets as nginx wants it', async () => {
    expect(await resolverOf('search example.org\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n')).toBe('10.0.0.53');
    expect(await resolverOf('# comment\nnameserver fe80::1%eth0\nnameserver ::1 # local\n')).toBe('[::1]');
  });

  it('falls back to 127.0.0.1 when there is none, or no file', async () => {
    expect(await resolverOf('search example.org\n')).toBe('127.0.0.1');
    expect(systemResolver(join(tmpdir(), 'no-such-resolv.conf'))).toBe('127.0.0.1');
  });
});
