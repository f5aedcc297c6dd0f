import type { Context } from 'koa';
import type { Access, OpenAccess, Principal, Refusal } from '../access/access.js';
import { SESSION_COOKIE } from '../access/sessions.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { readJsonObject } from './body.js';
import { HttpError } from './errors.js';
import type { Handler } from './router.js';

export type Gate = Access | OpenAccess;

const MESSAGES: Record<Refusal, string> = {
  signed_out: 'Sign in first.',
  invalid: 'The credentials are not valid; sign in again.',
  expired: 'The session has expired; sign in again.',
  revoked: 'The session was ended (signed out, or the password changed); sign in again.',
  unknown_user: 'This user no longer exists.',
  grants_changed: 'What this user may see has changed; open the stream again.',
};

const BEARER = /^Bearer ([A-Za-z0-9_-]{1,200})$/;

/**
 * Who sent the request: an API token (`Authorization: Bearer`) or the session cookie; with
 * AUTH off, everyone. Otherwise a 401 whose error code says why, which a page shows.
 */
export async function authenticate(ctx: Context, gate: Gate, metrics: Metrics): Promise<Principal> {
  if (!gate.enabled) return gate.principalFor();
  const header = ctx.get('Authorization');
  const result = header ? (BEARER.test(header) ? gate.fromToken(BEARER.exec(header)![1]!) : 'invalid') : await gate.fromSession(ctx.cookies.get(SESSION_COOKIE));
  if (typeof result !== 'string') return result;
  metrics.authRefusals.inc({ reason: result });
  throw new HttpError(401, result, MESSAGES[result], { 'WWW-Authenticate': 'Bearer realm="mqtt-sse-gateway"', 'Cache-Control': 'no-store' });
}

/**
 * A request a browser sent from another site is refused when it would act with the user's
 * cookie. SameSite=Strict already keeps the cookie off such requests; this is the second lock
 * (Fetch Metadata, else Origin against Host), for browsers and paths where the first one fails.
 * Requests with neither header do not come from a browser page.
 */
/** A Host header's name without its port ("[::1]:8443" → "[::1]", "a.example:80" → "a.example"). */
function hostnameOf(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.indexOf(':');
  return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
}

export function refuseCrossSite(ctx: Context, metrics: Metrics): void {
  const site = ctx.get('Sec-Fetch-Site');
  const origin = ctx.get('Origin');
  let foreign = false;
  if (site) foreign = site !== 'same-origin' && site !== 'none';
  else if (origin) {
    try {
      // The site, not the port: nginx passes Host without one.
      foreign = new URL(origin).hostname !== hostnameOf(ctx.get('Host'));
    } catch {
      foreign = true;
    }
  }
  if (!foreign) return;
  metrics.authRefusals.inc({ reason: 'cross_site' });
  throw new HttpError(403, 'cross_site', 'Requests from other sites are refused.');
}

/** Writes the session cookie: HttpOnly, SameSite=Strict, Secure when the browser came over HTTPS. */
function setSessionCookie(ctx: Context, token: string | null, expiresAt?: number): void {
  ctx.cookies.set(SESSION_COOKIE, token, {
    httpOnly: true,
    sameSite: 'strict',
    // Behind nginx, ctx.secure follows X-Forwarded-Proto (the app is built with proxy: true).
    secure: ctx.secure,
    path: '/',
    overwrite: true,
    ...(expiresAt !== undefined && { expires: new Date(expiresAt) }),
  });
}

function describe(p: Principal): Record<string, unknown> {
  return { user: p.user, role: p.role, devices: p.devices, via: p.via, expiresAt: p.session?.expiresAt ?? null };
}

export interface SessionRouteDeps {
  gate: Gate;
  metrics: Metrics;
  logger: Logger;
}

/** `/api/session`: GET who is signed in (401 with the reason when nobody), POST sign in, DELETE sign out. */
export function sessionRoutes(deps: SessionRouteDeps): Partial<Record<'GET' | 'POST' | 'DELETE', Handler>> {
  const { gate, metrics, logger } = deps;
  return {
    GET: async (ctx) => {
      const principal = await authenticate(ctx, gate, metrics);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { ...describe(principal), auth: gate.enabled };
    },
    POST: async (ctx) => {
      refuseCrossSite(ctx, metrics);
      if (!gate.enabled) throw new HttpError(404, 'auth_off', 'Sign-in is off on this service (AUTH off): every request is let in.');
      const body = await readJsonObject(ctx, 4_096).catch((err: unknown) => {
        metrics.signIns.inc({ outcome: 'bad_request' });
        throw err;
      });
      const { user, password } = body;
      if (typeof user !== 'string' || typeof password !== 'string' || user.length === 0 || user.length > 64 || password.length > 1_024) {
        metrics.signIns.inc({ outcome: 'bad_request' });
        throw new HttpError(400, 'bad_body', 'Send {"user": "<name>", "password": "<password>"}.');
      }
      const result = await gate.signIn(user, password, ctx.ip);
      if (!result.ok) {
        const throttled = result.retryAfterMs !== undefined;
        metrics.signIns.inc({ outcome: throttled ? 'throttled' : 'refused' });
        // The name as typed (it may be anyone's), never the password.
        logger.warn({ user: user.replace(/[^\x20-\x7e]/g, '?'), ip: ctx.ip, throttled }, 'sign-in refused');
        if (throttled) {
          const seconds = Math.ceil(result.retryAfterMs! / 1000);
          throw new HttpError(429, 'too_many_attempts', `Too many failed attempts for this user; try again in ${seconds} s.`, { 'Retry-After': String(seconds) });
        }
        throw new HttpError(401, 'bad_credentials', 'Wrong user name or password.');
      }
      metrics.signIns.inc({ outcome: 'ok' });
      logger.info({ user, ip: ctx.ip }, 'signed in');
      setSessionCookie(ctx, result.token, result.principal.session!.expiresAt);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = describe(result.principal);
    },
    DELETE: async (ctx) => {
      refuseCrossSite(ctx, metrics);
      if (gate.enabled) {
        const outcome = await gate.fromSession(ctx.cookies.get(SESSION_COOKIE));
        if (typeof outcome !== 'string' && outcome.session) {
          // Revoked here at once; shared with the other replicas when Redis answers.
          await gate.signOut(outcome.session).catch((err: Error) => logger.warn({ err: { message: err.message } }, 'sign-out not shared with the other replicas'));
          logger.info({ user: outcome.user }, 'signed out');
        }
      }
      setSessionCookie(ctx, null);
      ctx.status = 204;
    },
  };
}
