import { EnvReader, type Env } from '../env.js';
import { DEFAULT_HOSTNAMES, SERVER_KEY_TYPES, parseHostnames, type ServerKeyType } from './certs.js';

export interface TlsConfig {
  /** server.crt, server.key, ca.crt: mounted read-only by nginx and mosquitto. */
  dir: string;
  /** ca.key, ca.crt: only the generator mounts it. */
  caDir: string;
  /** DEFAULT_HOSTNAMES plus TLS_HOSTNAMES. */
  hostnames: string[];
  /** TLS_KEY_TYPE; unset: ECDSA for a first certificate, the predecessor's type for a reissued one. */
  keyType?: ServerKeyType;
}

const ABSOLUTE = /^\//;

/** The certificate generator's settings (`node dist/tls/main.js`, compose's `certs` service). */
export function loadTlsConfig(env: Env): Readonly<TlsConfig> {
  const r = new EnvReader(env);
  const dir = r.string('TLS_DIR', '/tls/server', ABSOLUTE, 'an absolute path');
  const caDir = r.string('TLS_CA_DIR', '/tls/ca', ABSOLUTE, 'an absolute path');
  const extra = env['TLS_HOSTNAMES']?.trim() ?? '';
  const parsed = parseHostnames(extra);
  r.check(!('problem' in parsed), `TLS_HOSTNAMES=${JSON.stringify(extra)} is invalid: expected DNS names and IP addresses separated by commas (${'problem' in parsed ? parsed.problem : ''})`);
  r.check(dir !== caDir, `TLS_DIR and TLS_CA_DIR are both ${JSON.stringify(dir)}: the CA's key must not sit where the servers read their files`);
  const hostnames = [...DEFAULT_HOSTNAMES, ...('hostnames' in parsed ? parsed.hostnames : [])];
  const keyType = r.oneOf<ServerKeyType>('TLS_KEY_TYPE', undefined, SERVER_KEY_TYPES);
  return r.done({ dir, caDir, hostnames, ...(keyType !== undefined && { keyType }) });
}
