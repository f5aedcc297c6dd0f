// Certificates for nginx (HTTPS) and Mosquitto (MQTT over TLS) when none is provided: a small
// local CA and one server certificate it signs, kept in a state directory and reused on later
// starts. Clients trust the CA (ca.crt: `mosquitto_pub --cafile`, a browser's trust store), so a
// server certificate reissued later (a new name, near expiry) needs nothing new on their side.
//
// Keys are made by node:crypto and the certificates laid out by node-forge (no hand-written
// ASN.1); the server certificate, whose key forge cannot encode, is signed by node:crypto.
// Everything read back is checked with node:crypto's X509Certificate.
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';

/** The names every server certificate carries: loopback, and the compose services clients reach. */
export const DEFAULT_HOSTNAMES: readonly string[] = ['localhost', '127.0.0.1', '::1', 'nginx', 'mosquitto'];

const CA_DAYS = 3650;
const SERVER_DAYS = 365;
/** A server certificate with less left than this is reissued at the next start. */
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;
const CA_NAME = 'mqtt-sse-gateway local CA';

export interface TlsPaths {
  /** The CA's certificate: what clients trust. A copy sits next to the server's files. */
  caCert: string;
  /** The server's certificate (and chain), as nginx's ssl_certificate and mosquitto's certfile want it. */
  cert: string;
  key: string;
}

/** The server key's type: `ecdsa` (P-256) or `rsa` (2048 bits). */
export type ServerKeyType = 'ecdsa' | 'rsa';
export const SERVER_KEY_TYPES: readonly ServerKeyType[] = ['ecdsa', 'rsa'];

export interface TlsOptions {
  /** server.crt, server.key and a copy of ca.crt: what nginx and mosquitto read. */
  dir: string;
  /**
   * The server key's type. Unset: a first certificate is ECDSA and a reissued one keeps the type
   * of the one it replaces (an upgrade changes nothing devices see); set: a certificate of the
   * other type is reissued with this one.
   */
  keyType?: ServerKeyType;
  /** ca.key and ca.crt; default `dir`. Compose keeps the CA's key in a volume only the generator mounts. */
  caDir?: string;
  /** Names and addresses the server certificate must cover; default DEFAULT_HOSTNAMES. */
  hostnames?: readonly string[];
  /** For tests: the clock. */
  now?: Date;
}

export interface TlsResult extends TlsPaths {
  /** What this call wrote: nothing when everything was reused. */
  made: ('ca' | 'server')[];
  /** The server certificate was not issued by the local CA: it was provided, and used as it is. */
  provided: boolean;
}

const HOSTNAME = /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses a list of extra names (TLS_HOSTNAMES: comma or space separated DNS names and IP
 * addresses). Returns the problem in words instead of throwing, for the caller's error line.
 */
export function parseHostnames(value: string): { hostnames: string[] } | { problem: string } {
  const names = value.split(/[\s,]+/).filter(Boolean);
  const bad = names.filter((n) => isIP(n) === 0 && !HOSTNAME.test(n));
  if (bad.length > 0) return { problem: `not a DNS name or an IP address: ${bad.map((b) => JSON.stringify(b)).join(', ')}` };
  return { hostnames: names };
}

/** The names a certificate covers, as `DNS:x` and `IP:y` entries (IPv6 in node's expanded form). */
function sanEntries(cert: X509Certificate): Set<string> {
  return new Set((cert.subjectAltName ?? '').split(/,\s*/).filter(Boolean).map((e) => e.replace(/^IP Address:/, 'IP:')));
}

function wantedEntry(name: string): string {
  if (isIP(name) === 0) return `DNS:${name.toLowerCase()}`;
  // X509Certificate prints IPv6 addresses uncompressed, upper-case: 0:0:0:0:0:0:0:1 for ::1.
  return `IP:${isIP(name) === 6 ? expandIpv6(name) : name}`;
}

function expandIpv6(address: string): string {
  const [head = '', tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return groups.map((g) => parseInt(g, 16).toString(16).toUpperCase()).join(':');
}

function serial(): string {
  // Positive (high bit clear) and unique enough that two runs never issue the same one. The next
  // bit is set so that the first byte is never zero: forge would then write a non-minimal
  // INTEGER (leading zero bytes), which OpenSSL and node refuse to parse.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

interface KeyPair {
  pem: string;
  forgePrivate: forge.pki.rsa.PrivateKey;
  forgePublic: forge.pki.rsa.PublicKey;
}

function newKey(): KeyPair {
  // The CA's: RSA 2048, what every TLS client accepts; made natively, in milliseconds. It signs
  // only certificates, so its cost is one verification per handshake on the client.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return fromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
}

function fromPem(pem: string): KeyPair {
  const forgePrivate = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  return { pem, forgePrivate, forgePublic: forge.pki.setRsaPublicKey(forgePrivate.n, forgePrivate.e) };
}

function validity(cert: forge.pki.Certificate, now: Date, days: number): void {
  // An hour back, for clocks slightly behind this one.
  cert.validity.notBefore = new Date(now.getTime() - 3600 * 1000);
  cert.validity.notAfter = new Date(now.getTime() + days * 24 * 3600 * 1000);
}

function makeCa(now: Date): { cert: string; key: string } {
  const key = newKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.forgePublic;
  cert.serialNumber = serial();
  validity(cert, now, CA_DAYS);
  const name = [{ name: 'commonName', value: `${CA_NAME} ${randomBytes(4).toString('hex')}` }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key.forgePrivate, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: key.pem };
}

/** The TBSCertificate as forge lays it out for signing (in forge, not in its types). */
const getTBSCertificate = (forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate;
// A BIT STRING stays the bytes it holds (forge would otherwise read a key's bits as ASN.1): an
// option forge takes and its types do not name.
const parseDer = forge.asn1.fromDer as unknown as (bytes: forge.util.ByteStringBuffer, options: { decodeBitStrings: boolean }) => forge.asn1.Asn1;
/** A DER buffer as forge's ASN.1, and back. */
const fromDer = (der: Buffer): forge.asn1.Asn1 => parseDer(forge.util.createBuffer(der.toString('binary')), { decodeBitStrings: false });
const toDer = (node: forge.asn1.Asn1): Buffer => Buffer.from(forge.asn1.toDer(node).getBytes(), 'binary');

/**
 * The server's key is ECDSA P-256 by default: every TLS handshake signs with it, and P-256 signs
 * in a tenth of RSA 2048's time (0.02 against 0.31 ms on the benchmark's machine; in a reconnect
 * storm of 10,000 clients, about 1.7 s less of nginx's CPU). Browsers and current TLS libraries all
 * take it; RSA 2048 is there for device stacks built without ECDSA.
 */
function makeServer(caCertPem: string, caKey: KeyObject, hostnames: readonly string[], now: Date, keyType: ServerKeyType): { cert: string; key: string } {
  if (caKey.asymmetricKeyType !== 'rsa') throw new Error(`the local CA's key is ${caKey.asymmetricKeyType ?? 'of an unknown type'}, not RSA: remove ca.crt and ca.key to have a new CA made`);
  const ca = forge.pki.certificateFromPem(caCertPem);
  const { privateKey, publicKey } = keyType === 'ecdsa' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = fromDer(publicKey.export({ type: 'spki', format: 'der' }));
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey BIT STRING }: the key
  // identifier is the SHA-1 of the key's bits (RFC 5280 4.2.1.2), past the unused-bits octet.
  const keyBits = Buffer.from((spki.value as forge.asn1.Asn1[])[1]!.value as string, 'binary').subarray(1);
  const keyId = createHash('sha1').update(keyBits).digest().toString('binary');
  const cert = forge.pki.createCertificate();
  // forge encodes RSA keys only: the certificate is laid out with the CA's key in the key's place,
  // and the server's key (of either type, as node:crypto encodes it) takes it before the CA signs.
  cert.publicKey = ca.publicKey;
  cert.serialNumber = serial();
  validity(cert, now, SERVER_DAYS);
  cert.setSubject([{ name: 'commonName', value: hostnames[0] ?? 'localhost' }]);
  cert.setIssuer(ca.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    // An EC key signs (the handshake); an RSA key may also carry a TLS 1.2 client's key (RSA key transport).
    { name: 'keyUsage', digitalSignature: true, ...(keyType === 'rsa' && { keyEncipherment: true }), critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: hostnames.map((h) => (isIP(h) === 0 ? { type: 2, value: h } : { type: 7, ip: h })) },
    { name: 'subjectKeyIdentifier', value: forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.OCTETSTRING, false, keyId) },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.siginfo.algorithmOid = cert.signatureOid = forge.pki.oids.sha256WithRSAEncryption!;
  const tbs = getTBSCertificate(cert);
  // TBSCertificate ::= SEQUENCE { [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, … }
  (tbs.value as forge.asn1.Asn1[])[6] = spki;
  cert.tbsCertificate = tbs;
  cert.signature = sign('sha256', toDer(tbs), caKey).toString('binary');
  return { cert: forge.pki.certificateToPem(cert), key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/** Written whole or not at all (a start killed halfway leaves no half file), owner-only. */
async function writePrivate(path: string, contents: string): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, contents, { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, path);
}

function parseCert(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new Error(`${path} is not a PEM certificate (${(err as Error).message}); remove it to have a new one made`);
  }
}

function parseKey(pem: string, path: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new Error(`${path} is not a PEM private key (${(err as Error).message}); remove it to have a new one made`);
  }
}

/** The local CA: reused when both its files are there, made when neither is. */
async function ensureCa(caDir: string, now: Date, made: TlsResult['made']): Promise<{ cert: string; key: KeyObject; x509: X509Certificate }> {
  const certPath = join(caDir, 'ca.crt');
  const keyPath = join(caDir, 'ca.key');
  let cert = await readIfPresent(certPath);
  let key = await readIfPresent(keyPath);
  if (cert === undefined && key === undefined) {
    ({ cert, key } = makeCa(now));
    await writePrivate(keyPath, key);
    await writePrivate(certPath, cert);
    made.push('ca');
  } else if (cert === undefined || key === undefined) {
    throw new Error(`${caDir} holds ${cert === undefined ? 'ca.key but no ca.crt' : 'ca.crt but no ca.key'}; restore the missing file, or remove both to make a new CA (clients must then trust the new ca.crt)`);
  }
  const x509 = parseCert(cert, certPath);
  const keyObject = parseKey(key, keyPath);
  if (!x509.checkPrivateKey(keyObject)) throw new Error(`${keyPath} is not the key of ${certPath}`);
  if (!x509.ca) throw new Error(`${certPath} is not a CA certificate`);
  if (new Date(x509.validTo).getTime() < now.getTime()) throw new Error(`the local CA ${certPath} expired on ${x509.validTo}; remove ca.crt and ca.key to make a new one`);
  return { cert, key: keyObject, x509 };
}

/**
 * Makes what is missing and reuses the rest. The server certificate is reissued only when the
 * local CA issued it and it no longer fits (names missing, expiring within 30 days, a key other
 * than the one asked for or not its own, or issued by an earlier CA); one the CA did not issue was
 * provided by the operator and is used as it is.
 */
export async function ensureCertificates(options: TlsOptions): Promise<TlsResult> {
  const now = options.now ?? new Date();
  const hostnames = [...new Set(options.hostnames ?? DEFAULT_HOSTNAMES)];
  const caDir = options.caDir ?? options.dir;
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  await mkdir(caDir, { recursive: true, mode: 0o700 });
  const made: TlsResult['made'] = [];
  const ca = await ensureCa(caDir, now, made);
  const paths: TlsPaths = { caCert: join(options.dir, 'ca.crt'), cert: join(options.dir, 'server.crt'), key: join(options.dir, 'server.key') };

  const cert = await readIfPresent(paths.cert);
  const key = await readIfPresent(paths.key);
  let provided = false;
  let reissue = cert === undefined && key === undefined;
  // The key type of the certificate there is, if any.
  let current: ServerKeyType | undefined;
  if (!reissue) {
    if (cert === undefined || key === undefined) {
      throw new Error(`${options.dir} holds ${cert === undefined ? 'server.key but no server.crt' : 'server.crt but no server.key'}; provide both, or remove it to have a pair made`);
    }
    const x509 = parseCert(cert, paths.cert);
    const matched = x509.checkPrivateKey(parseKey(key, paths.key));
    const ours = x509.checkIssued(ca.x509) && x509.verify(ca.x509.publicKey);
    // A certificate this CA did not issue: from a real CA, or a previous local CA.
    provided = !ours && !x509.issuer.includes(CA_NAME);
    if (provided && !matched) throw new Error(`${paths.key} is not the key of ${paths.cert}`);
    current = x509.publicKey.asymmetricKeyType === 'ec' ? 'ecdsa' : 'rsa';
    if (!ours) {
      reissue = !provided;
    } else {
      const covered = sanEntries(x509);
      const expiring = new Date(x509.validTo).getTime() - now.getTime() < RENEW_BEFORE_MS;
      // A key that is not the certificate's: a start stopped between writing the two (ours to remake).
      const otherType = options.keyType !== undefined && options.keyType !== current;
      reissue = !matched || expiring || otherType || hostnames.some((h) => !covered.has(wantedEntry(h)));
    }
  }
  if (reissue) {
    // Unless asked otherwise, a reissued certificate keeps its predecessor's key type.
    const server = makeServer(ca.cert, ca.key, hostnames, now, options.keyType ?? current ?? 'ecdsa');
    await writePrivate(paths.key, server.key);
    await writePrivate(paths.cert, server.cert);
    made.push('server');
  }
  if (caDir !== options.dir && (await readIfPresent(paths.caCert)) !== ca.cert) await writePrivate(paths.caCert, ca.cert);
  return { ...paths, made, provided };
}
