import { createHash, createPublicKey } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

/**
 * The flag that makes Chromium accept exactly this server certificate's key, signed by a CA it
 * does not know (the local CA): `--ignore-certificate-errors-spki-list` with the base64 SHA-256 of
 * the key's SubjectPublicKeyInfo. Narrower than `ignoreHTTPSErrors`, which accepts any
 * certificate: a wrong one (another key, another server) still fails.
 */
export async function trustFlag(certFile: string): Promise<string> {
  const spki = createPublicKey(await readFile(certFile)).export({ type: 'spki', format: 'der' });
  return `--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`;
}

/** Headless Debian Chromium, trusting `certFile`'s key when given; `extraArgs` e.g. --disable-http2. */
export async function launchChromium(certFile?: string, extraArgs: string[] = []): Promise<Browser> {
  try {
    await access(CHROMIUM);
  } catch {
    throw new Error(`${CHROMIUM} not found: install it with \`apt-get install -y chromium\` (npm test does it)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: [...ARGS, ...(certFile ? [await trustFlag(certFile)] : []), ...extraArgs] });
}
