// The users file: who may sign in, what each may see and command. The operator owns it (mounted
// in compose, its path in USERS_FILE) and changes it with `npm run users`; the service reads it.
// JSON, one object per user name, only hashes of secrets:
//
//   { "version": 1, "users": { "alice": { "role": "operator", "devices": ["pump-*"],
//       "password": "scrypt$N=32768,r=8,p=3$…$…", "tokens": [{ "id": "1a2b3c4d", "hash": "sha256$…", "created": "…" }] } } }
import { randomBytes } from 'node:crypto';
import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { isPasswordHash, isTokenHash } from './secrets.js';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface ApiToken {
  id: string;
  hash: string;
  /** ISO time it was made. */
  created: string;
}

export interface User {
  role: Role;
  /** Device-id patterns this user may see (`*` any run of characters); an admin sees every device. */
  devices: string[];
  password: string;
  tokens: ApiToken[];
}

export interface UsersFile {
  version: 1;
  users: Record<string, User>;
}

/** Letters, digits and `_ . -`, starting with a letter or digit: safe in logs, cookies and a shell. */
const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Device-id characters (as the topics allow them) plus `*`. */
const PATTERN = /^[A-Za-z0-9_.:*-]{1,128}$/;
const MAX_PATTERNS = 256;
const MAX_TOKENS = 32;

export class UsersFileError extends Error {}

/**
 * The demo accounts `npm run stack` and compose start with: an admin, an operator of every device,
 * a viewer of the first few simulated ones (sim-001 … sim-009). Passwords are the run's own.
 */
export const DEMO_ACCOUNTS: readonly { name: string; role: Role; devices: readonly string[] }[] = [
  { name: 'admin', role: 'admin', devices: [] },
  { name: 'operator', role: 'operator', devices: ['*'] },
  { name: 'viewer', role: 'viewer', devices: ['sim-00*'] },
];

export function validUserName(name: string): boolean {
  return USER_NAME.test(name);
}

export function validPattern(pattern: string): boolean {
  return PATTERN.test(pattern);
}

/** Parses and checks a users file's text; every problem is named with the user and field. */
export function parseUsers(text: string, source = 'users file'): UsersFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsersFileError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  const file = raw as Partial<UsersFile> | null;
  if (typeof file !== 'object' || file === null || Array.isArray(file)) throw new UsersFileError(`${source}: expected an object with "version" and "users"`);
  if (file.version !== 1) problems.push(`"version" must be 1`);
  const users = file.users;
  if (typeof users !== 'object' || users === null || Array.isArray(users)) throw new UsersFileError(`${source}: "users" must be an object of user name → user`);
  const out: Record<string, User> = {};
  for (const [name, u] of Object.entries(users as Record<string, unknown>)) {
    const at = `user ${JSON.stringify(name)}`;
    if (!validUserName(name)) problems.push(`${at}: a name is 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit`);
    const user = u as Partial<User> | null;
    if (typeof user !== 'object' || user === null) {
      problems.push(`${at}: expected an object`);
      continue;
    }
    if (!ROLES.includes(user.role as Role)) problems.push(`${at}: "role" must be one of ${ROLES.join(', ')}`);
    const devices = Array.isArray(user.devices) ? user.devices : [];
    if (!Array.isArray(user.devices) || devices.length > MAX_PATTERNS || !devices.every((p) => typeof p === 'string' && validPattern(p))) {
      problems.push(`${at}: "devices" must be a list of at most ${MAX_PATTERNS} device-id patterns (letters, digits, _ . : - and *)`);
    }
    if (typeof user.password !== 'string' || !isPasswordHash(user.password)) problems.push(`${at}: "password" must be a scrypt hash made by \`npm run users\``);
    const tokens = Array.isArray(user.tokens) ? user.tokens : user.tokens === undefined ? [] : null;
    if (tokens === null || tokens.length > MAX_TOKENS || !tokens.every((t) => typeof t?.id === 'string' && /^[0-9a-f]{8}$/.test(t.id) && typeof t.hash === 'string' && isTokenHash(t.hash) && typeof t.created === 'string')) {
      problems.push(`${at}: "tokens" must be a list of at most ${MAX_TOKENS} tokens made by \`npm run users -- token\``);
    }
    out[name] = { role: user.role as Role, devices: [...devices], password: String(user.password), tokens: (tokens ?? []).map((t) => ({ id: t.id, hash: t.hash, created: t.created })) };
  }
  if (problems.length > 0) throw new UsersFileError(`${source} is invalid:\n  ${problems.join('\n  ')}`);
  return { version: 1, users: out };
}

export async function loadUsers(path: string): Promise<UsersFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { version: 1, users: {} };
    throw new UsersFileError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return parseUsers(text, path);
}

/**
 * Writes the file whole and then renames it over the old one: a reader never sees half a file.
 * Owner-only. The temporary file has a random name and must be new (`wx`), so nothing planted
 * at a guessable name is renamed into place.
 */
export async function saveUsers(path: string, file: UsersFile): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}

/** A lock held while the file is read, changed and written back: only one change at a time. */
const LOCK_STALE_MS = 60_000;
const LOCK_WAIT_MS = 10_000;

/**
 * Runs `change` holding `<path>.lock` (made with `wx`), so two `npm run users` (or `docker compose
 * run --rm users`) at once cannot lose one another's change. A lock older than a minute is a
 * crashed run's and is taken over.
 */
export async function withUsersLock<T>(path: string, change: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await writeFile(lock, `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new UsersFileError(`cannot lock ${path}: ${(err as Error).message}`);
      const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > LOCK_STALE_MS) {
        await unlink(lock).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) throw new UsersFileError(`${path} is being changed by another run (${lock}); try again`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await change();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

/** Whether a device id matches one pattern: `*` is any run of characters (none included), the rest literal. */
export function matchesPattern(pattern: string, id: string): boolean {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === id;
  const first = parts[0]!;
  const last = parts.at(-1)!;
  if (!id.startsWith(first) || id.length < first.length + last.length || !id.endsWith(last)) return false;
  let at = first.length;
  const end = id.length - last.length;
  for (const middle of parts.slice(1, -1)) {
    const found = id.indexOf(middle, at);
    if (found < 0 || found + middle.length > end) return false;
    at = found + middle.length;
  }
  return true;
}

/** Answers remembered per grant: the fan-out asks once per event per stream, about few ids. */
const MEMO_SIZE = 10_000;

/** What one user may see: every device (admin), or those matching any of the patterns. */
export function grants(user: Pick<User, 'role' | 'devices'>): (id: string) => boolean {
  if (user.role === 'admin') return () => true;
  const patterns = [...user.devices];
  const memo = new Map<string, boolean>();
  return (id) => {
    let seen = memo.get(id);
    if (seen === undefined) {
      seen = patterns.some((p) => matchesPattern(p, id));
      if (memo.size >= MEMO_SIZE) memo.clear();
      memo.set(id, seen);
    }
    return seen;
  };
}
