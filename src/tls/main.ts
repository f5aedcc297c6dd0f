// Makes the certificates nginx and mosquitto serve when none was provided, then exits: compose's
// one-shot `certs` service, which both wait for. Reuses what an earlier start made.
import { ConfigError } from '../env.js';
import { createLogger } from '../logger.js';
import { ensureCertificates } from './certs.js';
import { loadTlsConfig } from './config.js';

const logger = createLogger('info', 'certs');

try {
  const config = loadTlsConfig(process.env);
  const result = await ensureCertificates(config);
  const what = result.provided
    ? 'a provided server certificate (not issued by the local CA): used as it is'
    : result.made.length === 0
      ? 'the local CA and the server certificate of an earlier start: reused'
      : `made: ${result.made.map((m) => (m === 'ca' ? 'a new local CA (clients must trust its ca.crt)' : 'a server certificate')).join(', ')}`;
  logger.info({ dir: config.dir, hostnames: config.hostnames, made: result.made }, what);
} catch (err) {
  if (err instanceof ConfigError) {
    for (const problem of err.problems) process.stderr.write(`${problem}\n`);
  } else {
    logger.error({ err }, `certificates: ${(err as Error).message}`);
  }
  process.exit(1);
}
