// Who is asking: a signed-in user (session cookie), a machine client (API token), or, with
// AUTH=off, everyone as admin. The users file is read at start and again whenever it changes;
// each request is judged on its current content.
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

export interface AccessOptions {
  usersFile: string;
  secret: string;
  sessionTtlMs: number;
  revocations: Revocations;
  logger: Logger;
  now?: () => number;
}

/** Failed attempts before the per-user backoff starts, its first step and its ceiling. */
const FREE_ATTEMPTS = 3;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 5 * 60_000;
/** Attempts are remembered for this many user names at most (names may be made up by anyone). */
const MAX_TRACKED = 10_000;
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
  private readonly failures = new Map<string, { count: number; until: number }>();
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
   * Checks a name and password. A user past FREE_ATTEMPTS failures waits (doubling, at most 5 min)
   * before the next attempt is even checked; an unknown name costs the same as a wrong password.
   */
  async signIn(name: string, password: string): Promise<SignIn> {
    const now = this.now();
    const failed = this.failures.get(name);
    if (failed && failed.until > now) return { ok: false, retryAfterMs: failed.until - now };
    const user = this.file.users[name];
    const ok = await verifyPassword(password, user?.password ?? DECOY_HASH);
    if (!ok || !user) {
      const count = (failed?.count ?? 0) + 1;
      const wait = count > FREE_ATTEMPTS ? Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (count - FREE_ATTEMPTS - 1)) : 0;
      if (!failed && this.failures.size >= MAX_TRACKED) this.failures.delete(this.failures.keys().next().value!);
      this.failures.set(name, { count, until: now + wait });
      return wait > 0 ? { ok: false, retryAfterMs: wait } : { ok: false };
    }
    this.failures.delete(name);
    const { token, claims } = await this.codec.issue(name);
    return { ok: true, token, principal: this.principal(name, 'session', claims)! };
  }

  /** The principal of a session cookie, or why there is none. */
  async fromSession(token: string | undefined): Promise<Principal | Refusal> {
    if (!token) return 'signed_out';
    const claims = await this.codec.check(token);
    if (claims === 'invalid' || claims === 'expired') return claims satisfies SessionProblem;
    if (this.options.revocations.isRevoked(claims.sid)) return 'revoked';
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
    if (principal.tokenHash && !user.tokens.some((t) => t.hash === principal.tokenHash)) return 'revoked';
    return grantKeyOf(user) === principal.grantKey ? undefined : 'grants_changed';
  }
}
