import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TlsPaths } from '../../src/tls/certs.js';

/** The test certificate (test/helpers/tls-setup.ts), which this process trusts: for an nginx started on its own. */
export function testTls(): TlsPaths {
  const dir = process.env['STACK_TLS_DIR'];
  if (!dir) throw new Error('STACK_TLS_DIR is not set: run the tests with vitest (vitest.config.ts sets up the certificates)');
  return { caCert: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
}

/** The test CA certificate, for clients given it explicitly (node:http2, raw TLS sockets). */
export function testCa(): Buffer {
  return readFileSync(testTls().caCert);
}
