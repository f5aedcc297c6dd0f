import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, type CliIo } from '../../src/access/cli.js';
import { DECOY_HASH, hashPassword, tokenHash, verifyPassword } from '../../src/access/secrets.js';
import { grants, matchesPattern, parseUsers } from '../../src/access/users.js';

describe('passwords and tokens as stored', () => {
  it('checks a password against its scrypt hash, and nothing against a malformed or decoy hash', async () => {
    const hash = await hashPassword('correct horse battery');
    expect(hash).toMatch(/^scrypt\$N=32768,r=8,p=3\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(await verifyPassword('correct horse battery', hash)).toBe(true);
    expect(await verifyPassword('correct horse batterY', hash)).toBe(false);
    // The key's first character: all six of its bits count (the last one's lowest two are padding,
    // which a base64url decoder ignores, so changing only those changes nothing).
    const tampered = hash.replace(/\$([A-Za-z0-9_-])([A-Za-z0-9_-]{42})$/, (_m, c: string, rest: string) => `$${c === 'A' ? 'Q' : 'A'}${rest}`);
    expect(tampered).not.toBe(hash);
    expect(await verifyPassword('correct horse battery', tampered)).toBe(false);
    expect(await verifyPassword('anything', DECOY_HASH)).toBe(false);
    expect(await verifyPassword('x', 'scrypt$N=3,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).toBe(false);
    expect(await hashPassword('same')).not.toBe(await hashPassword('same'));
  });
});

describe('grants', () => {
  it('matches device-id patterns with * as any run of characters', () => {
    const cases: [string, string, boolean][] = [
      ['pump-*', 'pump-1', true], ['pump-*', 'pump-', true], ['pump-*', 'xpump-1', false],
      ['*-7', 'valve-7', true], ['*-7', 'valve-77', false], ['a*b*c', 'abc', true], ['a*b*c', 'a-b-b-c', true],
      ['a*b*c', 'acb', false], ['a*a', 'a', false], ['exact', 'exact', true], ['exact', 'exact2', false], ['*', 'anything', true],
    ];
    for (const [pattern, id, expected] of cases) expect(matchesPattern(pattern, id), `${pattern} ~ ${id}`).toBe(expected);
  });

  it('lets an admin see every device and others only what a pattern grants', () => {
    expect(grants({ role: 'admin', devices: [] })('any')).toBe(true);
    const viewer = grants({ role: 'viewer', devices: ['pump-*', 'valve-7'] });
    expect(['pump-1', 'valve-7', 'valve-8', 'other'].map(viewer)).toEqual([true, true, false, false]);
    expect(grants({ role: 'operator', devices: [] })('pump-1')).toBe(false);
  });
});

describe('the users file', () => {
  it('refuses a file that is not what `npm run users` writes, naming the user and field', async () => {
    const good = await hashPassword('a long enough password');
    expect(() => parseUsers('{')).toThrow(/not valid JSON/);
    expect(() => parseUsers('{"version":1,"users":[]}')).toThrow(/"users" must be an object/);
    const bad = JSON.stringify({
      version: 1,
      users: {
        'bad name!': { role: 'viewer', devices: [], password: good },
        bob: { role: 'root', devices: ['pump-*'], password: good },
        carol: { role: 'viewer', devices: ['pump/#'], password: good },
        dave: { role: 'viewer', devices: [], password: 'plaintext' },
        erin: { role: 'viewer', devices: [], password: good, tokens: [{ id: 'x', hash: 'y', created: 'z' }] },
      },
    });
    const message = (() => {
      try {
        parseUsers(bad, 'users.json');
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    })();
    expect(message).toContain('users.json is invalid');
    expect(message).toContain('user "bad name!": a name is');
    expect(message).toContain('user "bob": "role" must be one of viewer, operator, admin');
    expect(message).toContain('user "carol": "devices" must be');
    expect(message).toContain('user "dave": "password" must be a scrypt hash');
    expect(message).toContain('user "erin": "tokens" must be');
  });
});

function cli(env: NodeJS.ProcessEnv, stdin = '') {
  const lines: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), stdin: async () => stdin, env, now: () => new Date('2026-12-02T12:00:00Z') };
  return { lines, run: (...argv: string[]) => runCli(argv, io) };
}

describe('npm run users', () => {
  it('adds, changes, lists and removes users, keeping only hashes in an owner-only file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'users-'));
    const file = join(dir, 'users.json');
    const env = { USERS_FILE: file };
    const a = cli(env);
    expect(await a.run('add', 'alice', '--role', 'operator', '--devices', 'pump-*, valve-7')).toBe(0);
    const shown = /password for alice \(shown once\): (\S+)$/.exec(a.lines.at(-1)!)?.[1];
    expect(shown).toMatch(/^[A-Za-z0-9_-]{20}$/);
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain(shown!);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = parseUsers(text).users['alice']!;
    expect(stored).toMatchObject({ role: 'operator', devices: ['pump-*', 'valve-7'], tokens: [] });
    expect(await verifyPassword(shown!, stored.password)).toBe(true);

    const b = cli(env, 'chosen password 123\n');
    expect(await b.run('add', 'bob', '--role', 'viewer', '--password-stdin')).toBe(0);
    expect(b.lines.join('\n')).toContain('sees no device until granted some');
    expect(b.lines.join('\n')).not.toContain('chosen password');
    expect(await verifyPassword('chosen password 123', parseUsers(await readFile(file, 'utf8')).users['bob']!.password)).toBe(true);
    expect(await cli(env, 'short\n').run('passwd', 'bob', '--password-stdin')).toBe(2);

    const c = cli(env);
    expect(await c.run('grant', 'bob', '--devices', 'pump-1')).toBe(0);
    expect(await c.run('token', 'alice')).toBe(0);
    const token = /: (mss_[A-Za-z0-9_-]{43})$/.exec(c.lines.at(-1)!)?.[1];
    expect(token).toBeDefined();
    const afterToken = await readFile(file, 'utf8');
    expect(afterToken).not.toContain(token!);
    const stored2 = parseUsers(afterToken).users['alice']!.tokens;
    expect(stored2).toEqual([{ id: stored2[0]!.id, hash: tokenHash(token!), created: '2026-12-02T12:00:00.000Z' }]);
    expect(await c.run('list')).toBe(0);
    expect(c.lines.slice(-2)).toEqual([`alice\toperator\tpump-*,valve-7\ttokens ${stored2[0]!.id}`, 'bob\tviewer\tpump-1']);
    expect(await c.run('revoke', 'alice', stored2[0]!.id)).toBe(0);
    expect(await c.run('remove', 'bob')).toBe(0);
    expect(Object.keys(parseUsers(await readFile(file, 'utf8')).users)).toEqual(['alice']);
  });

  it('refuses bad use with a message and exit code 2, changing nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'users-'));
    const file = join(dir, 'users.json');
    const env = { USERS_FILE: file };
    await cli(env).run('add', 'alice', '--role', 'admin');
    const before = await readFile(file, 'utf8');
    const cases: [string[], RegExp][] = [
      [['add', 'alice', '--role', 'viewer'], /user "alice" exists/],
      [['add', 'bad name', '--role', 'viewer'], /a user name is/],
      [['add', 'carol', '--role', 'root'], /--role "root": expected one of viewer, operator, admin/],
      [['add', 'carol'], /add needs --role/],
      [['add', 'carol', '--role', 'viewer', '--devices', 'pump/#'], /"pump\/#" is not a device-id pattern/],
      [['passwd', 'nobody'], /no user "nobody"/],
      [['revoke', 'alice', 'deadbeef'], /alice has no token "deadbeef"/],
      [['grant', 'alice'], /grant needs --role and\/or --devices/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['list', '--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [argv, message] of cases) {
      const c = cli(env);
      expect(await c.run(...argv), argv.join(' ')).toBe(2);
      expect(c.lines.join('\n')).toMatch(message);
    }
    expect(await readFile(file, 'utf8')).toBe(before);
    const none = cli({});
    expect(await none.run('list')).toBe(2);
    expect(none.lines[0]).toBe('users: no users file: set USERS_FILE or pass --file <path>');
    await writeFile(file, '{"version":2,"users":{}}');
    const broken = cli(env);
    expect(await broken.run('list')).toBe(2);
    expect(broken.lines[0]).toContain('"version" must be 1');
  });

  it('init makes the demo users and a session secret at a first start, and keeps both at every later one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'users-'));
    const file = join(dir, 'users.json');
    const secretFile = join(dir, 'session-secret');
    const env = {
      USERS_FILE: file, SESSION_SECRET_FILE: secretFile,
      DEMO_ADMIN_PASSWORD: 'admin password 123', DEMO_OPERATOR_PASSWORD: 'operator password 123', DEMO_VIEWER_PASSWORD: '',
    };
    const first = cli(env);
    expect(await first.run('init')).toBe(0);
    expect(first.lines).toEqual([
      `created ${file}: admin (admin), operator (operator, devices *)`,
      `created session secret ${secretFile}`,
    ]);
    expect(first.lines.join('\n')).not.toContain('password 123');
    const users = parseUsers(await readFile(file, 'utf8')).users;
    expect(Object.keys(users)).toEqual(['admin', 'operator']);
    expect(await verifyPassword('operator password 123', users['operator']!.password)).toBe(true);
    const secret = await readFile(secretFile, 'utf8');
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);

    // The operator's changes and the secret survive the next start, whatever the environment says now.
    await cli(env).run('remove', 'operator');
    const again = cli({ ...env, DEMO_VIEWER_PASSWORD: 'viewer password 123' });
    expect(await again.run('init')).toBe(0);
    expect(again.lines).toEqual([`users file ${file} exists (1 users): left as it is`, `session secret ${secretFile} exists: left as it is`]);
    expect(Object.keys(parseUsers(await readFile(file, 'utf8')).users)).toEqual(['admin']);
    expect(await readFile(secretFile, 'utf8')).toBe(secret);

    // The public demo defaults are called out, at the first start and at every later one; a
    // DEMO_* that no longer is the user's password is explained.
    const demoFile = join(dir, 'demo.json');
    const demo = cli({ USERS_FILE: demoFile, DEMO_ADMIN_PASSWORD: 'demo-admin-password' });
    expect(await demo.run('init')).toBe(0);
    expect(demo.lines[0]).toMatch(/^WARNING: admin has the demo password written in docker-compose.yml/);
    const later = cli({ USERS_FILE: demoFile, DEMO_ADMIN_PASSWORD: 'demo-admin-password' });
    expect(await later.run('init')).toBe(0);
    expect(later.lines[1]).toMatch(/^WARNING: admin still has the demo password/);
    const changed = cli({ USERS_FILE: demoFile, DEMO_ADMIN_PASSWORD: 'my own password 1' });
    expect(await changed.run('init')).toBe(0);
    expect(changed.lines[1]).toMatch(/^note: DEMO_ADMIN_PASSWORD is not admin's password: the DEMO_\* passwords are used only when the users file is made/);

    const fresh = join(dir, 'other.json');
    const refused: [Record<string, string>, RegExp][] = [
      [{ USERS_FILE: fresh }, /init creates the demo users from DEMO_ADMIN_PASSWORD, DEMO_OPERATOR_PASSWORD, DEMO_VIEWER_PASSWORD: none is set/],
      [{ USERS_FILE: fresh, DEMO_ADMIN_PASSWORD: 'short' }, /DEMO_ADMIN_PASSWORD: a password has at least 12 characters/],
      [{ USERS_FILE: fresh, DEMO_ADMIN_PASSWORD: 'admin password 123', SESSION_SECRET_FILE: 'relative' }, /the session secret file is an absolute path/],
    ];
    for (const [e, message] of refused) {
      const c = cli(e);
      expect(await c.run('init')).toBe(2);
      expect(c.lines[0]).toMatch(message);
    }
    await writeFile(join(dir, 'short-secret'), 'tiny\n');
    const short = cli({ USERS_FILE: file, SESSION_SECRET_FILE: join(dir, 'short-secret') });
    expect(await short.run('init')).toBe(2);
    expect(short.lines[1]).toMatch(/short-secret: expected one line of at least 32 characters; remove it/);
  });
});

