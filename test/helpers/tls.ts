import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
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

/**
 * Makes fetch (and so EventSource) in this process also trust `caPem`, a CA made after the process
 * started (NODE_EXTRA_CA_CERTS is read only at start): compose's, copied out of its volume.
 * undici's Agent with these CAs, as the dispatcher Node's own fetch uses.
 */
export async function trustForFetch(caPem: string): Promise<void> {
  const { Agent, setGlobalDispatcher } = await import('undici');
  setGlobalDispatcher(new Agent({ connect: { ca: [...rootCertificates, testCa().toString('utf8'), caPem] } }));
}
