// Sign-in, grants and API tokens on the real service and a real Mosquitto: every path filters by
// what the user may see, and hostile requests (forged cookies, other users' ids, viewers
// commanding, cross-site posts, password guessing) get nothing.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { hashPassword, newToken } from '../../src/access/secrets.js';
import { saveUsers, type UsersFile } from '../../src/access/users.js';
import { telemetry } from '../helpers/mqtt.js';
import { withBrokerAndService, type TestService } from '../helpers/stage.js';
import { eventually } from '../helpers/wait.js';

const stage = withBrokerAndService();
const SECRET = 'integration-test-session-secret-0123456789';
let usersFile: string;
let operatorToken: string;

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'access-it-'));
  usersFile = join(dir, 'users.json');
  const token = newToken();
  operatorToken = token.token;
  const file: UsersFile = {
    version: 1,
    users: {
      viewer: { role: 'viewer', devices: ['pump-*'], password: await hashPassword('viewer password 1'), tokens: [] },
      operator: { role: 'operator', devices: ['pump-*'], password: await hashPassword('operator password'), tokens: [{ id: token.id, hash: token.hash, created: 'now' }] },
      admin: { role: 'admin', devices: [], password: await hashPassword('admin password 12'), tokens: [] },
    },
  };
  await saveUsers(usersFile, file);
});

async function service(): Promise<TestService> {
  const svc = await stage.service('access', { USERS_FILE: usersFile, SESSION_SECRET: SECRET });
  const ts = Date.now();
  for (const id of ['pump-1', 'pump-2', 'valve-1']) {
    await stage.publisher.publishAsync(`${svc.prefix}/${id}/status`, JSON.stringify({ state: 'online', ts }), { qos: 1, retain: false });
  }
  await eventually(() => svc.service.store.size === 3, 'three devices known');
  return svc;
}

async function signIn(url: string, user: string, password: string): Promise<{ status: number; cookie: string; setCookie: string; body: any }> {
  const res = await fetch(`${url}/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user, password }) });
  const setCookie = res.headers.get('set-cookie') ?? '';
  return { status: res.status, cookie: setCookie.split(';')[0]!, setCookie, body: await res.json() };
}

const ids = (body: unknown) => (body as { devices: { id: string }[] }).devices.map((d) => d.id);

describe('sign-in and what each user may see', () => {
  it('lets nobody in without credentials, and says why', async () => {
    const svc = await service();
    for (const path of ['/events', '/api/devices', '/api/devices/pump-1', '/api/session']) {
      const res = await fetch(`${svc.url}${path}`, { headers: { Accept: 'text/event-stream' } });
      expect(res.status, path).toBe(401);
      expect(await res.json()).toMatchObject({ error: 'signed_out' });
    }
    // Forged and tampered cookies, a token that is not one.
    const { cookie } = await signIn(svc.url, 'viewer', 'viewer password 1');
    const [name, jwt] = cookie.split('=') as [string, string];
    const [h, p, s] = jwt.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: 'admin' })).toString('base64url')}.${s}`;
    for (const header of [{ Cookie: `${name}=${forged}` } as Record<string, string>, { Cookie: `${name}=garbage` }, { Authorization: 'Bearer mss_not-a-token' }, { Authorization: 'Basic YWRtaW46YWRtaW4=' }]) {
      const res = await fetch(`${svc.url}/api/devices`, { headers: header });
      expect(res.status, JSON.stringify(header)).toBe(401);
      expect(((await res.json()) as { error: string }).error).toBe('invalid');
    }
  });

  it('signs in with an HttpOnly, SameSite=Strict session cookie and shows each user only its devices', async () => {
    const svc = await service();
    const wrong = await signIn(svc.url, 'viewer', 'nope');
    expect([wrong.status, wrong.body.error, wrong.setCookie]).toEqual([401, 'bad_credentials', '']);
    const viewer = await signIn(svc.url, 'viewer', 'viewer password 1');
    expect(viewer.status).toBe(200);
    expect(viewer.setCookie).toMatch(/^mss_session=[^;]+; path=\/; expires=[^;]+; samesite=strict; httponly$/i);
    expect(viewer.body).toMatchObject({ user: 'viewer', role: 'viewer', devices: ['pump-*'], via: 'session' });
    const headers = { Cookie: viewer.cookie };
    expect((await (await fetch(`${svc.url}/api/session`, { headers })).json()) as any).toMatchObject({ user: 'viewer', auth: true });
    expect(ids((await (await fetch(`${svc.url}/api/devices`, { headers })).json()) as any)).toEqual(['pump-1', 'pump-2']);
    // Ungranted is "not found", exactly as a device never seen: its existence is not revealed.
    const hidden = await fetch(`${svc.url}/api/devices/valve-1`, { headers });
    const never = await fetch(`${svc.url}/api/devices/valve-9`, { headers });
    expect([hidden.status, ((await hidden.json()) as { error: string }).error]).toEqual([404, 'unknown_device']);
    expect([never.status, ((await never.json()) as { error: string }).error]).toEqual([404, 'unknown_device']);
    expect((await fetch(`${svc.url}/api/devices/pump-1`, { headers })).status).toBe(200);
    const admin = await signIn(svc.url, 'admin', 'admin password 12');
    expect(ids((await (await fetch(`${svc.url}/api/devices`, { headers: { Cookie: admin.cookie } })).json()) as any)).toEqual(['pump-1', 'pump-2', 'valve-1']);
  });

  it('marks the session cookie Secure exactly when X-Forwarded-Proto says the browser came over HTTPS (nginx sets it)', async () => {
    const svc = await service();
    const withProto = async (proto: string | undefined) => {
      const res = await fetch(`${svc.url}/api/session`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(proto === undefined ? {} : { 'X-Forwarded-Proto': proto }) },
        body: JSON.stringify({ user: 'viewer', password: 'viewer password 1' }),
      });
      await res.arrayBuffer();
      return [res.status, /; secure(;|$)/i.test(res.headers.get('set-cookie') ?? '')];
    };
    expect(await withProto('https')).toEqual([200, true]);
    expect(await withProto('https, http')).toEqual([200, true]);
    expect(await withProto(undefined)).toEqual([200, false]);
    expect(await withProto('http')).toEqual([200, false]);
    // Anything else is not HTTPS, and no reason to fail the sign-in.
    expect(await withProto('gopher')).toEqual([200, false]);
  });

  it('filters the snapshot, the live events and a resume from another user\'s id by the grants', async () => {
    const svc = await service();
    const viewer = await signIn(svc.url, 'viewer', 'viewer password 1');
    const admin = await signIn(svc.url, 'admin', 'admin password 12');
    const adminStream = stage.collect(`${svc.url}/events`, { Cookie: admin.cookie });
    const viewerStream = stage.collect(`${svc.url}/events`, { Cookie: viewer.cookie });
    const asked = stage.collect(`${svc.url}/events?device=valve-1`, { Cookie: viewer.cookie });
    for (const c of [adminStream, viewerStream, asked]) await c.waitFor((e) => e.type === 'snapshot', 'snapshot');
    expect(viewerStream.of('snapshot')[0]!.data.devices.map((d: { id: string }) => d.id)).toEqual(['pump-1', 'pump-2']);
    expect(asked.of('snapshot')[0]!.data.devices).toEqual([]);
    const firstAdminId = adminStream.events.at(-1)!.id;
    for (let seq = 1; seq <= 3; seq += 1) {
      await stage.publisher.publishAsync(`${svc.prefix}/valve-1/telemetry`, telemetry(seq), { qos: 1 });
      await stage.publisher.publishAsync(`${svc.prefix}/pump-1/telemetry`, telemetry(seq), { qos: 1 });
    }
    await adminStream.waitForCount('telemetry', 6);
    await viewerStream.waitForCount('telemetry', 3);
    expect(viewerStream.of('telemetry').map((e) => e.data.device)).toEqual(['pump-1', 'pump-1', 'pump-1']);
    // The viewer presents the admin's id: the replay holds only what the viewer may see.
    const resumed = stage.collect(`${svc.url}/events`, { Cookie: viewer.cookie, 'Last-Event-ID': firstAdminId });
    await resumed.waitForCount('telemetry', 3);
    await new Promise((r) => setTimeout(r, 200));
    expect(resumed.of('reset')).toEqual([]);
    expect(resumed.of('telemetry').map((e) => e.data.device)).toEqual(['pump-1', 'pump-1', 'pump-1']);
    expect(asked.of('telemetry')).toEqual([]);
  });

  it('lets only operators command granted devices, refuses cross-site posts, and takes an API token', async () => {
    const svc = await service();
    const viewer = await signIn(svc.url, 'viewer', 'viewer password 1');
    const operator = await signIn(svc.url, 'operator', 'operator password');
    const post = (id: string, headers: Record<string, string>) => fetch(`${svc.url}/api/devices/${id}/commands`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify({ name: 'reboot', timeoutMs: 2_500 }),
    });
    const byViewer = await post('pump-1', { Cookie: viewer.cookie });
    expect([byViewer.status, ((await byViewer.json()) as { error: string }).error]).toEqual([403, 'forbidden']);
    const ungranted = await post('valve-1', { Cookie: operator.cookie });
    expect([ungranted.status, ((await ungranted.json()) as { error: string }).error]).toEqual([404, 'unknown_device']);
    const crossSite = await post('pump-1', { Cookie: operator.cookie, 'Sec-Fetch-Site': 'cross-site', Origin: 'https://evil.example' });
    expect([crossSite.status, ((await crossSite.json()) as { error: string }).error]).toEqual([403, 'cross_site']);
    const foreignOrigin = await post('pump-1', { Cookie: operator.cookie, Origin: 'https://evil.example' });
    expect(foreignOrigin.status).toBe(403);
    // Let through (the device never answers here: the round trip ends in a 504, past authorisation).
    const sameSite = await post('pump-1', { Cookie: operator.cookie, 'Sec-Fetch-Site': 'same-origin' });
    expect(sameSite.status).toBe(504);
    const byToken = await post('pump-2', { Authorization: `Bearer ${operatorToken}` });
    expect(byToken.status).toBe(504);
    const stream = stage.collect(`${svc.url}/events`, { Authorization: `Bearer ${operatorToken}` });
    const snapshot = await stream.waitFor((e) => e.type === 'snapshot', 'a snapshot for the token');
    expect(snapshot.data.devices.map((d: { id: string }) => d.id)).toEqual(['pump-1', 'pump-2']);
  }, 20_000);

  it('ends the open streams of a session when it signs out, and refuses the cookie after', async () => {
    const svc = await service();
    const viewer = await signIn(svc.url, 'viewer', 'viewer password 1');
    const other = await signIn(svc.url, 'viewer', 'viewer password 1');
    const mine = stage.collect(`${svc.url}/events`, { Cookie: viewer.cookie });
    const theirs = stage.collect(`${svc.url}/events`, { Cookie: other.cookie });
    for (const c of [mine, theirs]) await c.waitFor((e) => e.type === 'snapshot', 'snapshot');
    const out = await fetch(`${svc.url}/api/session`, { method: 'DELETE', headers: { Cookie: viewer.cookie } });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toMatch(/^mss_session=; path=\/; expires=Thu, 01 Jan 1970/i);
    // Closed within the recheck (1 s): EventSource reconnects, gets 401 and gives up (readyState 2).
    await eventually(() => mine.source.readyState === 2, 'the signed-out stream ended for good', 5_000);
    const after = await fetch(`${svc.url}/api/session`, { headers: { Cookie: viewer.cookie } });
    expect([after.status, ((await after.json()) as { error: string }).error]).toEqual([401, 'revoked']);
    expect(theirs.source.readyState, 'another session of the same user is untouched').toBe(1);
  });

  it('answers a device\'s history only to those who may see it: an ungranted device is a 404, like one never seen', async () => {
    const svc = await service();
    const ts = Date.now() - 5_000;
    for (let seq = 1; seq <= 30; seq += 1) {
      await stage.publisher.publishAsync(`${svc.prefix}/pump-1/telemetry`, telemetry(seq, { bar: seq }, ts + seq * 10), { qos: 1 });
      await stage.publisher.publishAsync(`${svc.prefix}/valve-1/telemetry`, telemetry(seq, { open: seq % 2 }, ts + seq * 10), { qos: 1 });
    }
    await eventually(() => svc.service.store.get('valve-1')?.telemetry?.seq === 30, 'every reading taken');
    const viewer = { Cookie: (await signIn(svc.url, 'viewer', 'viewer password 1')).cookie };
    const granted = await fetch(`${svc.url}/api/devices/pump-1/history?points=10`, { headers: viewer });
    expect(granted.status).toBe(200);
    const history = (await granted.json()) as { metrics: Record<string, { t: number[]; v: number[] }>; downsampled: boolean; until: string };
    expect(history.downsampled).toBe(true);
    expect(history.metrics['bar']!.v.length).toBeLessThanOrEqual(10);
    expect(Math.max(...history.metrics['bar']!.v)).toBe(30);
    expect(history.until).toMatch(/^[0-9a-z]+-\d+$/);
    for (const path of ['/api/devices/valve-1/history', '/api/devices/valve-9/history']) {
      const refused = await fetch(`${svc.url}${path}`, { headers: viewer });
      expect([refused.status, ((await refused.json()) as { error: string }).error], path).toEqual([404, 'unknown_device']);
    }
    const admin = { Cookie: (await signIn(svc.url, 'admin', 'admin password 12')).cookie };
    const all = (await (await fetch(`${svc.url}/api/devices/valve-1/history`, { headers: admin })).json()) as { metrics: Record<string, { v: number[] }> };
    expect(all.metrics['open']!.v).toHaveLength(30);
    const anonymous = await fetch(`${svc.url}/api/devices/pump-1/history`);
    expect(anonymous.status).toBe(401);
    const bad = await fetch(`${svc.url}/api/devices/pump-1/history?points=0`, { headers: viewer });
    expect([bad.status, ((await bad.json()) as { error: string }).error]).toEqual([400, 'bad_query']);

    // The bulk form: what each may see of the devices asked for, the rest left out unnamed.
    type Bulk = { until: string; devices: { device: string; until: string; metrics: Record<string, { v: number[] }> }[] };
    const bulk = async (headers: Record<string, string>, query: string) => {
      const res = await fetch(`${svc.url}/api/history?${query}`, { headers });
      return { status: res.status, body: (await res.json()) as Bulk & { error?: string } };
    };
    const mine = await bulk(viewer, 'devices=valve-1,pump-1,valve-9&points=10');
    expect(mine.status).toBe(200);
    expect(mine.body.devices.map((h) => h.device)).toEqual(['pump-1']);
    expect(mine.body.devices[0]!.metrics['bar']!.v.length).toBeLessThanOrEqual(10);
    expect(mine.body.until).toMatch(/^[0-9a-z]+-\d+$/);
    expect(mine.body.devices[0]!.until).toBe(mine.body.until);
    const everything = await bulk(admin, 'devices=valve-1,pump-1,valve-9');
    expect(everything.body.devices.map((h) => h.device)).toEqual(['valve-1', 'pump-1']);
    expect(everything.body.devices[0]!.metrics['open']!.v).toHaveLength(30);
    expect((await bulk(viewer, 'devices=valve-1')).body.devices).toEqual([]);
    expect((await fetch(`${svc.url}/api/history?devices=pump-1`)).status).toBe(401);
    for (const query of ['', 'devices=pump-1&points=x', `devices=${Array.from({ length: 101 }, (_, i) => `d${i}`).join(',')}`, 'devices=pump 1']) {
      const refused = await bulk(viewer, query);
      expect([refused.status, refused.body.error], query).toEqual([400, 'bad_query']);
    }
    const counted = await (await fetch(`${svc.url}/metrics`)).text();
    expect(counted).toMatch(/http_requests_total\{method="GET",route="\/api\/history",status="400"\} 4/);
  });

  it('backs off a user name after repeated wrong passwords: 429 with Retry-After, counted', async () => {
    const svc = await service();
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i += 1) {
      const res = await fetch(`${svc.url}/api/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: `guess-${i}` }) });
      statuses.push(res.status);
      retryAfter = res.headers.get('retry-after') ?? retryAfter;
      await res.body?.cancel();
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${svc.url}/metrics`)).text();
    expect(metrics).toMatch(/^signin_attempts_total\{outcome="refused"\} 3$/m);
    expect(metrics).toMatch(/^signin_attempts_total\{outcome="throttled"\} 2$/m);
  });
});
