import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Access, type Principal } from '../../src/access/access.js';
import { hashPassword, newToken } from '../../src/access/secrets.js';
import { LocalRevocations, SessionCodec } from '../../src/access/sessions.js';
import { saveUsers, type UsersFile } from '../../src/access/users.js';
import { createLogger } from '../../src/logger.js';

const SECRET = 'a-session-secret-of-at-least-32-characters';

async function setup(now: { t: number }) {
  const dir = await mkdtemp(join(tmpdir(), 'access-'));
  const path = join(dir, 'users.json');
  const token = newToken();
  const file: UsersFile = {
    version: 1,
    users: {
      alice: { role: 'operator', devices: ['pump-*'], password: await hashPassword('alice password 1'), tokens: [{ id: token.id, hash: token.hash, created: 'x' }] },
      root: { role: 'admin', devices: [], password: await hashPassword('root password 12'), tokens: [] },
    },
  };
  await saveUsers(path, file);
  const revocations = new LocalRevocations(() => now.t);
  const access = new Access({ usersFile: path, secret: SECRET, sessionTtlMs: 60_000, revocations, logger: createLogger('silent', 'test'), now: () => now.t });
  access.start();
  return { access, path, file, token: token.token };
}

describe('sessions', () => {
  it('accepts only its own unexpired, untampered tokens', async () => {
    const now = { t: Date.UTC(2026, 11, 2, 12) };
    const codec = new SessionCodec(SECRET, 60_000, () => now.t);
    const { token, claims } = await codec.issue('alice', 'pv-1');
    expect(await codec.check(token)).toEqual(claims);
    const [h, p, s] = token.split('.') as [string, string, string];
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'root' })).toString('base64url');
    expect(await codec.check(`${h}.${forged}.${s}`)).toBe('invalid');
    expect(await codec.check(`${h}.${p}.${s.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}`)).toBe('invalid');
    expect(await new SessionCodec('another-secret-of-at-least-32-characters', 60_000, () => now.t).check(token)).toBe('invalid');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
    expect(await codec.check(none)).toBe('invalid');
    expect(await codec.check('garbage')).toBe('invalid');
    now.t += 61_000;
    expect(await codec.check(token)).toBe('expired');
  });
});

describe('access', () => {
  it('signs in with the right password only, and judges each request on the current users file', async () => {
    const now = { t: Date.now() };
    const { access, path, file } = await setup(now);
    expect(await access.signIn('alice', 'wrong')).toEqual({ ok: false });
    const ok = await access.signIn('alice', 'alice password 1');
    if (!ok.ok) throw new Error('sign-in refused');
    const principal = (await access.fromSession(ok.token)) as Principal;
    expect(principal).toMatchObject({ user: 'alice', role: 'operator', via: 'session', devices: ['pump-*'] });
    expect([principal.canSee('pump-1'), principal.canSee('valve-1')]).toEqual([true, false]);
    expect(access.recheck(principal)).toBeUndefined();
    // The operator narrows alice's grants: open streams see it at their next check.
    file.users['alice']!.devices = ['pump-1'];
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    expect(access.recheck(principal)).toBe('grants_changed');
    delete file.users['alice'];
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    expect(await access.fromSession(ok.token)).toBe('unknown_user');
    access.stop();
  });

  it('ends a session on sign-out and at its expiry', async () => {
    const now = { t: Date.now() };
    const { access } = await setup(now);
    const a = await access.signIn('root', 'root password 12');
    const b = await access.signIn('root', 'root password 12');
    if (!a.ok || !b.ok) throw new Error('sign-in refused');
    await access.signOut(a.principal.session!);
    expect(await access.fromSession(a.token)).toBe('revoked');
    expect(access.recheck(a.principal)).toBe('revoked');
    expect((await access.fromSession(b.token)) as Principal).toMatchObject({ user: 'root' });
    now.t += 60_001;
    expect(access.recheck(b.principal)).toBe('expired');
    expect(await access.fromSession(b.token)).toBe('expired');
    access.stop();
  });

  it('lets an API token in with its user\'s grants, and not once it is revoked', async () => {
    const now = { t: Date.now() };
    const { access, path, file, token } = await setup(now);
    const principal = access.fromToken(token) as Principal;
    expect(principal).toMatchObject({ user: 'alice', via: 'token' });
    expect(access.fromToken(`${token}x`)).toBe('invalid');
    file.users['alice']!.tokens = [];
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    expect(access.fromToken(token)).toBe('invalid');
    expect(access.recheck(principal)).toBe('revoked');
    access.stop();
  });

  it('backs off a user name after three failures, doubling, and lets the right password in after the wait', async () => {
    const now = { t: Date.now() };
    const { access } = await setup(now);
    for (let i = 0; i < 3; i += 1) expect(await access.signIn('alice', 'nope')).toEqual({ ok: false });
    expect(await access.signIn('alice', 'nope')).toEqual({ ok: false, retryAfterMs: 1_000 });
    // Refused without checking, even with the right password, while the wait lasts.
    expect(await access.signIn('alice', 'alice password 1')).toEqual({ ok: false, retryAfterMs: 1_000 });
    now.t += 1_000;
    expect(await access.signIn('alice', 'nope')).toEqual({ ok: false, retryAfterMs: 2_000 });
    // Unknown names are tracked alike; another user is unaffected.
    for (let i = 0; i < 4; i += 1) await access.signIn('mallory', 'x');
    expect((await access.signIn('root', 'root password 12')).ok).toBe(true);
    now.t += 2_000;
    expect((await access.signIn('alice', 'alice password 1')).ok).toBe(true);
    access.stop();
  });

  it('checks one guess at a time per name: parallel guesses count once and the rest wait', async () => {
    const now = { t: Date.now() };
    const { access } = await setup(now);
    const all = await Promise.all(Array.from({ length: 10 }, () => access.signIn('alice', 'nope', '10.0.0.1')));
    expect(all.filter((r) => !r.ok && r.retryAfterMs === undefined)).toHaveLength(1);
    expect(all.filter((r) => !r.ok && r.retryAfterMs === 1_000)).toHaveLength(9);
    // One failure counted: two more are free, the fourth failure starts the wait.
    expect(await access.signIn('alice', 'nope', '10.0.0.1')).toEqual({ ok: false });
    expect(await access.signIn('alice', 'nope', '10.0.0.1')).toEqual({ ok: false });
    expect(await access.signIn('alice', 'nope', '10.0.0.1')).toEqual({ ok: false, retryAfterMs: 1_000 });
    access.stop();
  });

  it('backs off a name from one address sooner than from anywhere, so one stranger cannot lock a user out; failures fade', async () => {
    const now = { t: Date.now() };
    const { access } = await setup(now);
    for (let i = 0; i < 3; i += 1) await access.signIn('alice', 'nope', '10.0.0.66');
    expect(await access.signIn('alice', 'nope', '10.0.0.66')).toEqual({ ok: false, retryAfterMs: 1_000 });
    // alice herself, from her own address, is not held back by the stranger's guesses.
    expect((await access.signIn('alice', 'alice password 1', '10.0.0.7')).ok).toBe(true);
    // Guessing from many addresses: past 20 failures the name waits wherever the guess comes from.
    for (let i = 0; i < 21; i += 1) await access.signIn('root', 'nope', `10.1.0.${i}`);
    expect(await access.signIn('root', 'root password 12', '10.9.9.9')).toEqual({ ok: false, retryAfterMs: 1_000 });
    // A quiet quarter of an hour forgets them.
    now.t += 15 * 60_000 + 1;
    expect((await access.signIn('root', 'root password 12', '10.1.0.1')).ok).toBe(true);
    access.stop();
  });

  it('ends every session of a user whose password changed, and of a user removed and added again', async () => {
    const now = { t: Date.now() };
    const { access, path, file } = await setup(now);
    const signedIn = await access.signIn('alice', 'alice password 1');
    if (!signedIn.ok) throw new Error('sign-in refused');
    const stolen = signedIn.token;
    file.users['alice']!.password = await hashPassword('a new password 22');
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    expect(await access.fromSession(stolen)).toBe('revoked');
    expect(access.recheck(signedIn.principal)).toBe('revoked');
    const again = await access.signIn('alice', 'a new password 22');
    if (!again.ok) throw new Error('sign-in refused');
    expect((await access.fromSession(again.token)) as Principal).toMatchObject({ user: 'alice' });
    // Removed, then added again under the same name, even with the same password: a new hash (salt).
    delete file.users['alice'];
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    file.users['alice'] = { role: 'operator', devices: ['pump-*'], password: await hashPassword('a new password 22'), tokens: [] };
    await saveUsers(path, file);
    await (access as unknown as { reload(): Promise<void> }).reload();
    expect(await access.fromSession(again.token)).toBe('revoked');
    access.stop();
  });

  it('refuses to start on a users file that is missing or invalid', async () => {
    const logger = createLogger('silent', 'test');
    const base = { secret: SECRET, sessionTtlMs: 60_000, revocations: new LocalRevocations(), logger };
    expect(() => new Access({ ...base, usersFile: '/nonexistent/users.json' }).start()).toThrow(/USERS_FILE \/nonexistent\/users.json/);
  });
});
