// Sign-in sessions: a signed, expiring token (a JWT, HS256, made and checked by `jose`) carried
// in an HttpOnly, SameSite=Strict cookie. It names the user and a random session id; what the
// user may see is looked up in the users file at each request, so a changed grant applies at once.
// Sign-out revokes the session id until the token would have expired anyway.
import { randomBytes } from 'node:crypto';
import { SignJWT, errors, jwtVerify } from 'jose';

export const SESSION_COOKIE = 'mss_session';

export interface SessionClaims {
  user: string;
  sid: string;
  /** Which password the user signed in with (a digest of its stored hash): a new one ends the session. */
  pv: string;
  /** Epoch ms. */
  expiresAt: number;
}

export type SessionProblem = 'invalid' | 'expired';

const ISSUER = 'mqtt-sse-gateway';
const ALGORITHM = 'HS256';

export class SessionCodec {
  private readonly key: Uint8Array;

  constructor(secret: string, private readonly ttlMs: number, private readonly now: () => number = Date.now) {
    this.key = new TextEncoder().encode(secret);
  }

  async issue(user: string, pv: string): Promise<{ token: string; claims: SessionClaims }> {
    const issuedAt = Math.floor(this.now() / 1000);
    const expiresAt = (issuedAt + Math.floor(this.ttlMs / 1000)) * 1000;
    const sid = randomBytes(12).toString('base64url');
    const token = await new SignJWT({ sid, pv })
      .setProtectedHeader({ alg: ALGORITHM })
      .setSubject(user)
      .setIssuer(ISSUER)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt / 1000)
      .sign(this.key);
    return { token, claims: { user, sid, pv, expiresAt } };
  }

  /** The claims of a token this service signed and that has not expired; otherwise why not. */
  async check(token: string): Promise<SessionClaims | SessionProblem> {
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: [ALGORITHM],
        issuer: ISSUER,
        currentDate: new Date(this.now()),
        requiredClaims: ['sub', 'exp', 'iat'],
      });
      if (typeof payload.sid !== 'string' || typeof payload.sub !== 'string' || typeof payload.exp !== 'number' || typeof payload.pv !== 'string') return 'invalid';
      return { user: payload.sub, sid: payload.sid, pv: payload.pv, expiresAt: payload.exp * 1000 };
    } catch (err) {
      return err instanceof errors.JWTExpired ? 'expired' : 'invalid';
    }
  }
}

/** Where revoked session ids are kept until they would have expired: in this process, or shared (Redis). */
export interface Revocations {
  revoke(sid: string, expiresAt: number): Promise<void>;
  isRevoked(sid: string): boolean;
}

/** Where a deployment's replicas share revocations (the shared log's Redis). */
export interface SharedRevocationStore {
  revokeSession(sid: string, until: number): Promise<void>;
  revokedSessions(): Promise<[string, number][]>;
}

/**
 * Revocations every replica sees: written to the shared store, and read back from it every
 * second, so a sign-out on one replica ends the session's streams on all of them within a
 * heartbeat. A revocation made here counts here at once.
 */
export class SharedRevocations implements Revocations {
  private readonly local: LocalRevocations;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly store: SharedRevocationStore, now: () => number = Date.now) {
    this.local = new LocalRevocations(now);
  }

  /** Sign-outs Redis did not take yet (it was away): sent again at every poll until it does. */
  private readonly unsent = new Map<string, number>();

  start(everyMs = 1_000): void {
    const poll = () => {
      for (const [sid, until] of this.unsent) {
        this.store.revokeSession(sid, until).then(() => this.unsent.delete(sid), () => undefined);
      }
      void this.store.revokedSessions().then((list) => this.local.replace([...list, ...this.local.entries()]), () => undefined);
    };
    poll();
    this.timer = setInterval(poll, everyMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async revoke(sid: string, expiresAt: number): Promise<void> {
    await this.local.revoke(sid, expiresAt);
    try {
      await this.store.revokeSession(sid, expiresAt);
    } catch (err) {
      // Revoked here already; the other replicas learn it when Redis takes it.
      this.unsent.set(sid, expiresAt);
      throw err;
    }
  }

  isRevoked(sid: string): boolean {
    return this.local.isRevoked(sid);
  }
}

/** One process's revocations (the embedded mode). */
export class LocalRevocations implements Revocations {
  private readonly revoked = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  async revoke(sid: string, expiresAt: number): Promise<void> {
    this.revoked.set(sid, expiresAt);
    this.prune();
  }

  isRevoked(sid: string): boolean {
    return this.revoked.has(sid);
  }

  entries(): [string, number][] {
    return [...this.revoked];
  }

  /** Replaces the set with what a shared store says (the shared mode's poll). */
  replace(entries: Iterable<[string, number]>): void {
    this.revoked.clear();
    for (const [sid, until] of entries) this.revoked.set(sid, until);
    this.prune();
  }

  private prune(): void {
    const now = this.now();
    for (const [sid, until] of this.revoked) if (until <= now) this.revoked.delete(sid);
  }
}
