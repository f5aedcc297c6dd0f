// Vitest's global setup: one local CA and server certificate for the test runs, made before any
// test file starts (kept in .stack/test-tls and reused, as the stack reuses .stack/tls). Every
// stack the tests start serves it (STACK_TLS_DIR), and every test process trusts its CA
// (NODE_EXTRA_CA_CERTS, which Node reads at start: the test files' processes are forked after
// this), so fetch, node:https and EventSource reach nginx over verified HTTPS exactly as a
// client that was given ca.crt does.
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/native/project.js';
import { ensureCertificates } from '../../src/tls/certs.js';

export default async function setup(): Promise<void> {
  const dir = join(PROJECT_ROOT, '.stack', 'test-tls');
  const tls = await ensureCertificates({ dir });
  process.env['STACK_TLS_DIR'] = dir;
  process.env['NODE_EXTRA_CA_CERTS'] = tls.caCert;
}
