import { execFile } from 'node:child_process';
import { X509Certificate, createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { connect, createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureCertificates } from '../../src/tls/certs.js';
import { loadTlsConfig } from '../../src/tls/config.js';
import { ConfigError } from '../../src/env.js';

const run = promisify(execFile);
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tls-test-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A TLS handshake on loopback with the generated files, the client trusting only ca.crt. */
async function handshake(files: { cert: string; key: string; caCert: string }, servername: string): Promise<string> {
  const server = createServer({ cert: await readFile(files.cert), key: await readFile(files.key) }, (s) => s.end('ok'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const socket: TLSSocket = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', servername, ca: await readFile(files.caCert) });
    const [data] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    return data.toString();
  } finally {
    server.close();
  }
}

describe('certificates made at first start', () => {
  it('makes a local CA and a server certificate for the loopback and compose names, owner-only, that a strict client accepts', async () => {
    const dir = await tempDir();
    const result = await ensureCertificates({ dir });
    expect(result.made).toEqual(['ca', 'server']);
    for (const name of ['ca.key', 'ca.crt', 'server.key', 'server.crt']) {
      expect(((await stat(join(dir, name))).mode & 0o777).toString(8), name).toBe('600');
    }
    const cert = new X509Certificate(await readFile(result.cert));
    const ca = new X509Certificate(await readFile(result.caCert));
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:nginx, DNS:mosquitto');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('::1')).toBe('::1');
    // The server's key is ECDSA P-256 (every handshake signs with it), the CA's RSA 2048; the
    // key's identifier is the SHA-1 of its bits, and the key only signs.
    expect(cert.publicKey.asymmetricKeyType).toBe('ec');
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ca.publicKey.asymmetricKeyType).toBe('rsa');
    const jwk = cert.publicKey.export({ format: 'jwk' });
    const bits = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    const { stdout: ext } = await run('openssl', ['x509', '-in', result.cert, '-noout', '-ext', 'keyUsage,subjectKeyIdentifier']);
    expect(ext).toMatch(/Key Usage: critical\s+Digital Signature\s*\n/);
    expect(ext.replace(/[\s:]/g, '')).toContain(createHash('sha1').update(bits).digest('hex').toUpperCase());
    // An independent verifier agrees, for TLS servers in particular.
    const { stdout } = await run('openssl', ['verify', '-x509_strict', '-CAfile', result.caCert, '-purpose', 'sslserver', result.cert]);
    expect(stdout.trim()).toBe(`${result.cert}: OK`);
    expect(await handshake(result, 'localhost')).toBe('ok');
    expect(await handshake(result, 'nginx')).toBe('ok');
    await expect(handshake(result, 'elsewhere.example')).rejects.toThrow(/altnames/i);
  });

  it('reuses both on the next start, byte for byte', async () => {
    const dir = await tempDir();
    await ensureCertificates({ dir });
    const before = await Promise.all(['ca.crt', 'server.crt', 'server.key'].map((n) => readFile(join(dir, n), 'utf8')));
    const again = await ensureCertificates({ dir });
    expect(again.made).toEqual([]);
    expect(again.provided).toBe(false);
    expect(await Promise.all(['ca.crt', 'server.crt', 'server.key'].map((n) => readFile(join(dir, n), 'utf8')))).toEqual(before);
  });

  it('reissues the server certificate from the same CA for a new name, and when it nears expiry', async () => {
    const dir = await tempDir();
    const first = await ensureCertificates({ dir });
    const ca = await readFile(first.caCert, 'utf8');
    const named = await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan', '192.0.2.7'] });
    expect(named.made).toEqual(['server']);
    expect(await readFile(named.caCert, 'utf8')).toBe(ca);
    expect(new X509Certificate(await readFile(named.cert)).subjectAltName).toBe('DNS:localhost, DNS:gateway.example.lan, IP Address:192.0.2.7');
    expect(await handshake(named, 'gateway.example.lan')).toBe('ok');
    // 340 days on: 25 days left of 365, under the 30-day margin.
    const later = new Date(Date.now() + 340 * 24 * 3600 * 1000);
    const renewed = await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan', '192.0.2.7'], now: later });
    expect(renewed.made).toEqual(['server']);
    expect(new Date(new X509Certificate(await readFile(renewed.cert)).validTo).getTime()).toBeGreaterThan(later.getTime() + 300 * 24 * 3600 * 1000);
    // 300 days on the renewed one has plenty left.
    expect((await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan', '192.0.2.7'], now: later })).made).toEqual([]);
  });

  it('keeps an RSA certificate of an earlier version, and its key type across a reissue, unless TLS_KEY_TYPE asks for another', async () => {
    const dir = await tempDir();
    const first = await ensureCertificates({ dir });
    const caPem = await readFile(first.caCert, 'utf8');
    // What an earlier version made: the same names, an RSA 2048 key, signed by this CA.
    const caCert = forge.pki.certificateFromPem(caPem);
    const caKey = forge.pki.privateKeyFromPem(await readFile(join(dir, 'ca.key'), 'utf8'));
    const keys = forge.pki.rsa.generateKeyPair(2048);
    const old = forge.pki.createCertificate();
    old.publicKey = keys.publicKey;
    old.serialNumber = '01';
    old.validity.notBefore = new Date(Date.now() - 3600_000);
    old.validity.notAfter = new Date(Date.now() + 300 * 24 * 3600_000);
    old.setSubject([{ name: 'commonName', value: 'localhost' }]);
    old.setIssuer(caCert.subject.attributes);
    old.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }, { type: 2, value: 'nginx' }, { type: 2, value: 'mosquitto' }] }]);
    old.sign(caKey, forge.md.sha256.create());
    const oldPem = forge.pki.certificateToPem(old);
    await writeFile(join(dir, 'server.crt'), oldPem);
    await writeFile(join(dir, 'server.key'), forge.pki.privateKeyToPem(keys.privateKey));
    const keyType = async (path: string) => new X509Certificate(await readFile(path)).publicKey.asymmetricKeyType;
    // An upgrade changes nothing devices see.
    const kept = await ensureCertificates({ dir });
    expect(kept.made).toEqual([]);
    expect(await readFile(kept.cert, 'utf8')).toBe(oldPem);
    // A new name reissues it, still RSA, with the key usage RSA key transport needs.
    const named = await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan'] });
    expect(named.made).toEqual(['server']);
    expect(await keyType(named.cert)).toBe('rsa');
    const { stdout: ext } = await run('openssl', ['x509', '-in', named.cert, '-noout', '-ext', 'keyUsage']);
    expect(ext).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment\s*\n/);
    const { stdout } = await run('openssl', ['verify', '-x509_strict', '-CAfile', named.caCert, '-purpose', 'sslserver', named.cert]);
    expect(stdout.trim()).toBe(`${named.cert}: OK`);
    expect(await handshake(named, 'gateway.example.lan')).toBe('ok');
    // Asked for: ECDSA, from the same CA; then kept as it is.
    const switched = await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan'], keyType: 'ecdsa' });
    expect(switched.made).toEqual(['server']);
    expect(await readFile(switched.caCert, 'utf8')).toBe(caPem);
    expect(await keyType(switched.cert)).toBe('ec');
    expect(await handshake(switched, 'localhost')).toBe('ok');
    expect((await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan'] })).made).toEqual([]);
    // And back, when asked.
    const rsa = await ensureCertificates({ dir, hostnames: ['localhost', 'gateway.example.lan'], keyType: 'rsa' });
    expect(rsa.made).toEqual(['server']);
    expect(await keyType(rsa.cert)).toBe('rsa');
  });

  it('remakes its own pair when the key is not the certificate\'s (a start stopped between writing the two)', async () => {
    const dir = await tempDir();
    const first = await ensureCertificates({ dir });
    const ca = await readFile(first.caCert, 'utf8');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(join(dir, 'server.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    const again = await ensureCertificates({ dir });
    expect(again.made).toEqual(['server']);
    expect(await readFile(again.caCert, 'utf8')).toBe(ca);
    expect(await handshake(again, 'localhost')).toBe('ok');
  });

  it('keeps the CA key out of the server directory when given its own, with a copy of ca.crt for clients', async () => {
    const dir = await tempDir();
    const caDir = await tempDir();
    const result = await ensureCertificates({ dir, caDir });
    expect(await readFile(result.caCert, 'utf8')).toBe(await readFile(join(caDir, 'ca.crt'), 'utf8'));
    await expect(stat(join(dir, 'ca.key'))).rejects.toThrow(/ENOENT/);
  });

  it('uses a provided certificate as it is, and refuses a key that is not its own', async () => {
    const dir = await tempDir();
    // A certificate from elsewhere (a real CA's, here a self-signed one with another issuer).
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', '/CN=gateway.example.com', '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.crt')], { cwd: dir });
    const mine = await readFile(join(dir, 'server.crt'), 'utf8');
    const result = await ensureCertificates({ dir });
    expect(result.provided).toBe(true);
    expect(result.made).toEqual(['ca']);
    expect(await readFile(join(dir, 'server.crt'), 'utf8')).toBe(mine);
    // Another key next to it: a clear refusal, nothing overwritten.
    const other = forge.pki.rsa.generateKeyPair(1024);
    await writeFile(join(dir, 'server.key'), forge.pki.privateKeyToPem(other.privateKey));
    await expect(ensureCertificates({ dir })).rejects.toThrow(/server\.key is not the key of .*server\.crt/);
    expect(await readFile(join(dir, 'server.crt'), 'utf8')).toBe(mine);
  });

  it('refuses half a pair instead of replacing it', async () => {
    const dir = await tempDir();
    await ensureCertificates({ dir });
    await rm(join(dir, 'ca.key'));
    await expect(ensureCertificates({ dir })).rejects.toThrow(/ca\.crt but no ca\.key/);
  });
});

describe('the generator\'s settings', () => {
  it('adds TLS_HOSTNAMES to the default names', () => {
    const config = loadTlsConfig({ TLS_HOSTNAMES: 'gateway.example.lan, 192.0.2.7 2001:db8::1' });
    expect(config.hostnames).toEqual(['localhost', '127.0.0.1', '::1', 'nginx', 'mosquitto', 'gateway.example.lan', '192.0.2.7', '2001:db8::1']);
    expect(config.dir).toBe('/tls/server');
    expect(config.caDir).toBe('/tls/ca');
  });

  it('takes TLS_KEY_TYPE when set, and leaves the type to the certificate when not', () => {
    expect(loadTlsConfig({}).keyType).toBeUndefined();
    expect(loadTlsConfig({ TLS_KEY_TYPE: '' }).keyType).toBeUndefined();
    expect(loadTlsConfig({ TLS_KEY_TYPE: 'rsa' }).keyType).toBe('rsa');
    expect(loadTlsConfig({ TLS_KEY_TYPE: 'ecdsa' }).keyType).toBe('ecdsa');
  });

  it('names each bad variable and value', () => {
    let problems: readonly string[] = [];
    try {
      loadTlsConfig({ TLS_HOSTNAMES: 'ok.example,bad_name!,-x', TLS_DIR: 'relative', TLS_CA_DIR: '/tls/ca', TLS_KEY_TYPE: 'dsa' });
    } catch (err) {
      problems = (err as ConfigError).problems;
    }
    expect(problems).toEqual([
      'TLS_DIR="relative" is invalid: expected an absolute path',
      'TLS_HOSTNAMES="ok.example,bad_name!,-x" is invalid: expected DNS names and IP addresses separated by commas (not a DNS name or an IP address: "bad_name!", "-x")',
      'TLS_KEY_TYPE="dsa" is invalid: expected one of ecdsa, rsa',
    ]);
  });
});
