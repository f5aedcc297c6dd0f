// Passwords and API tokens as they are stored: never the secret itself. Passwords are scrypt
// hashes with their parameters and salt in the string, so the cost can be raised later without
// invalidating the hashes already stored; API tokens are random (256 bits), so a SHA-256 of one
// is as good as a slow hash and lets a request find its token in one lookup.
import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * One of OWASP's recommended scrypt settings (N=2^15, r=8, p=3): 32 MiB and about 0.1 s of one
 * core per sign-in attempt here, which is what the sign-in backoff and nginx's limit_req ration.
 */
const SCRYPT = { N: 2 ** 15, r: 8, p: 3 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Enough memory for N·r·128 bytes with room; node's default cap (32 MiB) is exactly N=2^15's need. */
const MAX_MEM = 128 * 1024 * 1024;

const TOKEN_PREFIX = 'mss_';

function scrypt(password: string, salt: Buffer, options: ScryptOptions & { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password.normalize('NFC'), salt, KEY_BYTES, { ...options, maxmem: MAX_MEM }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** `scrypt$N=32768,r=8,p=3$<salt>$<key>`, base64url. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, SCRYPT);
  return `scrypt$N=${SCRYPT.N},r=${SCRYPT.r},p=${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

const HASH = /^scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/;

/** Whether `hash` is a password hash this module can check (the users file is validated with it). */
export function isPasswordHash(hash: string): boolean {
  const m = HASH.exec(hash);
  if (!m) return false;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // A power of two, and bounded so a hand-edited file cannot make every sign-in take minutes.
  return n >= 2 ** 10 && n <= 2 ** 20 && (n & (n - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16;
}

/** Checks a password against its stored hash in constant time (false for a malformed hash). */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const m = HASH.exec(hash);
  if (!m || !isPasswordHash(hash)) return false;
  const expected = Buffer.from(m[5]!, 'base64url');
  const key = await scrypt(password, Buffer.from(m[4]!, 'base64url'), { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/**
 * A hash of a password that matches nothing, checked when the user name is unknown so that an
 * unknown name and a wrong password take the same time.
 */
export const DECOY_HASH = `scrypt$N=${SCRYPT.N},r=${SCRYPT.r},p=${SCRYPT.p}$${'A'.repeat(22)}$${'A'.repeat(43)}`;

/** A new API token (shown once) and what is stored of it. */
export function newToken(): { token: string; id: string; hash: string } {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { token, id: tokenId(token), hash: tokenHash(token) };
}

/** `sha256$<hex>` of a token. */
export function tokenHash(token: string): string {
  return `sha256$${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** The short, public name of a token (its hash's first 8 hex digits): what `list` shows and `revoke` takes. */
export function tokenId(token: string): string {
  return tokenHash(token).slice('sha256$'.length, 'sha256$'.length + 8);
}

export function isTokenHash(hash: string): boolean {
  return /^sha256\$[0-9a-f]{64}$/.test(hash);
}

/** A generated password: 20 characters of base64url (120 bits). */
export function newPassword(): string {
  return randomBytes(15).toString('base64url');
}

/** The shortest session secret accepted (SESSION_SECRET, SESSION_SECRET_FILE, `users init`'s file). */
export const MIN_SESSION_SECRET = 32;

/** Whether a secret file's contents (trimmed) can sign sessions: one line of at least MIN_SESSION_SECRET characters. */
export function usableSessionSecret(text: string): boolean {
  return text.length >= MIN_SESSION_SECRET && !/[\r\n\0]/.test(text);
}
