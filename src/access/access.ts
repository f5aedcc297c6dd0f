// Who is asking: a signed-in user (session cookie), a machine client (API token), or, with
// AUTH=off, everyone as admin. The users file is read at start and again whenever it changes;
// each request is judged on its current content.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Logger } from '../logger.js';
import { DECOY_HASH, tokenHash, verifyPassword } from './secrets.js';
import { SessionCodec, type Revocations, type SessionClaims, type SessionProblem } from './sessions.js';
import { grants, loadUsers, parseUsers, type Role, type User, type UsersFile } from './users.js';

export interface Principal {
  user: string;
  role: Role;
  /** Whether this principal may see (and, per role, command) a device. */
  canSee(device: string): boolean;
  /** The device patterns it was granted, for the session endpoint ("*" for an admin). */
  devices: readonly string[];
  via: 'session' | 'token' | 'open';
  /** A session's id and end. */
  session?: SessionClaims;
  /** The stored hash of the API token it came with. */
  tokenHash?: string;
  /** The grants it was judged on: a stream whose user's grants changed since is closed. */
  readonly grantKey: string;
}

/** Why a request is not let in (the `reason` of a 401, and a metric label). */
export type Refusal = 'signed_out' | 'invalid' | 'expired' | 'revoked' | 'unknown_user' | 'grants_changed';

export type SignIn =
  | { ok: true; token: string; principal: Principal }
  | { ok: false; retryAfterMs?: number };

/** A digest of a user's stored password hash: sessions carry it, so a new password ends them. */
export function passwordVersion(user: Pick<User, 'password'>): string {
  return createHash('sha256').update(user.password).digest('base64url').slice(0, 16);
}

interface Failures {
  count: number;
  until: number;
  last: number;
}

export interface AccessOptions {
  usersFile: string;
  secret: string;
  sessionTtlMs: number;
  revocations: Revocations;
  logger: Logger;
  now?: () => number;
}

/**
 * Failed attempts before the backoff starts: for one name from one address, and for one name from
 * anywhere (looser, so that guessing from many addresses is slowed too, while one stranger alone
 * cannot lock a user out). Then the wait doubles from the first step to the ceiling; failures are
 * forgotten after a quiet spell.
 */
const FREE_ATTEMPTS = 3;
const FREE_ATTEMPTS_PER_NAME = 20;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 5 * 60_000;
const FAILURES_FORGOTTEN_MS = 15 * 60_000;
/** Attempts are remembered for this many names and addresses at most (names may be made up by anyone). */
const MAX_TRACKED = 10_000;
/** Password checks (scrypt, ~0.1 s of a libuv thread each) run at once at most; more wait outside. */
const MAX_CHECKS = 2;
const RELOAD_EVERY_MS = 2_000;

const OPEN: Principal = { user: 'anonymous', role: 'admin', canSee: () => true, devices: ['*'], via: 'open', grantKey: 'open' };

function grantKeyOf(user: Pick<User, 'role' | 'devices'>): string {
  return `${user.role}:${user.devices.join(',')}`;
}

/** AUTH=off: one principal, everyone an admin. */
export class OpenAccess {
  readonly enabled = false;
  principalFor(): Principal {
    return OPEN;
  }
}

export class Access {
  readonly enabled = true;
  private file: UsersFile = { version: 1, users: {} };
  private fileStamp = '';
  private readonly byToken = new Map<string, string>();
  private readonly failures = new Map<string, Failures>();
  /** Names whose password is being checked now: one check at a time per name. */
  private readonly checking = new Set<string>();
  private checks = 0;
  private readonly codec: SessionCodec;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly options: AccessOptions) {
    this.now = options.now ?? Date.now;
    this.codec = new SessionCodec(options.secret, options.sessionTtlMs, this.now);
  }

  /** Reads the users file (missing or invalid: an error, at start), then watches it for changes. */
  start(): void {
    const path = this.options.usersFile;
    let text: string;
    try {
      const s = statSync(path);
      text = readFileSync(path, 'utf8');
      this.fileStamp = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      throw new Error(`USERS_FILE ${path}: ${(err as Error).message}`);
    }
    this.use(parseUsers(text, path));
    this.timer = setInterval(() => void this.reload(), RELOAD_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  get userCount(): number {
    return Object.keys(this.file.users).length;
  }

  private async reload(): Promise<void> {
    let stamp: string;
    try {
      const s = await stat(this.options.usersFile);
      stamp = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch {
      return;
    }
    if (stamp === this.fileStamp) return;
    try {
      this.use(await loadUsers(this.options.usersFile));
      this.fileStamp = stamp;
      this.options.logger.info({ users: this.userCount }, 'users file changed: reloaded');
    } catch (err) {
      // Keep the last good file: a half-edited one must not lock everyone out or let anyone in.
      this.options.logger.error({ err: { message: (err as Error).message } }, 'users file unreadable or invalid; keeping the previous one');
      this.fileStamp = stamp;
    }
  }

  private use(file: UsersFile): void {
    this.file = file;
    this.byToken.clear();
    for (const [name, user] of Object.entries(file.users)) for (const t of user.tokens) this.byToken.set(t.hash, name);
  }

  private principal(name: string, via: Principal['via'], session?: SessionClaims, token?: string): Principal | undefined {
    const user = this.file.users[name];
    if (!user) return undefined;
    const canSee = grants(user);
    return {
      user: name,
      role: user.role,
      canSee,
      devices: user.role === 'admin' ? ['*'] : [...user.devices],
      via,
      grantKey: grantKeyOf(user),
      ...(session && { session }),
      ...(token && { tokenHash: token }),
    };
  }

  /**
   * Checks a name and password from a client address. Past FREE_ATTEMPTS failures for the name from
   * that address (or FREE_ATTEMPTS_PER_NAME from anywhere) the next attempt waits (doubling, at most
   * 5 min) before it is even checked; an unknown name costs the same as a wrong password. One check
   * runs at a time per name (parallel guesses would otherwise all pass before the first failure
   * counts), and at most MAX_CHECKS in all.
   */
  async signIn(name: string, password: string, address = ''): Promise<SignIn> {
    const now = this.now();
    const keys = [`${name}\u0000${address}`, name];
    const waits = keys.map((key) => this.waiting(key, now));
    const wait = Math.max(...waits);
    if (wait > 0) return { ok: false, retryAfterMs: wait };
    if (this.checking.has(name) || this.checks >= MAX_CHECKS) return { ok: false, retryAfterMs: BACKOFF_FIRST_MS };
    this.checking.add(name);
    this.checks += 1;
    let ok: boolean;
    const user = this.file.users[name];
    try {
      ok = await verifyPassword(password, user?.password ?? DECOY_HASH);
    } finally {
      this.checking.delete(name);
      this.checks -= 1;
    }
    if (!ok || !user) {
      const after = this.now();
      const next = Math.max(this.fail(keys[0]!, FREE_ATTEMPTS, after), this.fail(keys[1]!, FREE_ATTEMPTS_PER_NAME, after));
      return next > 0 ? { ok: false, retryAfterMs: next } : { ok: false };
    }
    for (const key of keys) this.failures.delete(key);
    const { token, claims } = await this.codec.issue(name, passwordVersion(user));
    return { ok: true, token, principal: this.principal(name, 'session', claims)! };
  }

  /** How long `key` must still wait (0: it may try now); forgets failures after a quiet spell. */
  private waiting(key: string, now: number): number {
    const failed = this.failures.get(key);
    if (!failed) return 0;
    if (now - failed.last > FAILURES_FORGOTTEN_MS) {
      this.failures.delete(key);
      return 0;
    }
    return Math.max(0, failed.until - now);
  }

  /** Counts a failure for `key`; returns the wait it now has. */
  private fail(key: string, free: number, now: number): number {
    const failed = this.failures.get(key);
    const count = (failed && now - failed.last <= FAILURES_FORGOTTEN_MS ? failed.count : 0) + 1;
    const wait = count > free ? Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (count - free - 1)) : 0;
    if (!failed && this.failures.size >= MAX_TRACKED) this.failures.delete(this.failures.keys().next().value!);
    this.failures.set(key, { count, until: now + wait, last: now });
    return wait;
  }

  /** The principal of a session cookie, or why there is none. */
  async fromSession(token: string | undefined): Promise<Principal | Refusal> {
    if (!token) return 'signed_out';
    const claims = await this.codec.check(token);
    if (claims === 'invalid' || claims === 'expired') return claims satisfies SessionProblem;
    if (this.options.revocations.isRevoked(claims.sid)) return 'revoked';
    const user = this.file.users[claims.user];
    if (!user) return 'unknown_user';
    // Signed in with a password the user no longer has (changed, or the user removed and added again).
    if (claims.pv !== passwordVersion(user)) return 'revoked';
    return this.principal(claims.user, 'session', claims) ?? 'unknown_user';
  }

  /** The principal of an API token, or why there is none. */
  fromToken(token: string): Principal | Refusal {
    const hash = tokenHash(token);
    const name = this.byToken.get(hash);
    if (name === undefined) return 'invalid';
    return this.principal(name, 'token', undefined, hash) ?? 'unknown_user';
  }

  async signOut(session: SessionClaims): Promise<void> {
    await this.options.revocations.revoke(session.sid, session.expiresAt);
  }

  /** Whether an open stream's principal still stands: its session live, its user there, its grants the same. */
  recheck(principal: Principal): Refusal | undefined {
    if (principal.via === 'open') return undefined;
    const s = principal.session;
    if (s) {
      if (s.expiresAt <= this.now()) return 'expired';
      if (this.options.revocations.isRevoked(s.sid)) return 'revoked';
    }
    const user = this.file.users[principal.user];
    if (!user) return 'unknown_user';
    if (s && s.pv !== passwordVersion(user)) return 'revoked';
    if (principal.tokenHash && !user.tokens.some((t) => t.hash === principal.tokenHash)) return 'revoked';
    return grantKeyOf(user) === principal.grantKey ? undefined : 'grants_changed';
  }
}
