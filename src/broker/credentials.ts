// The file that hands a fleet's device passwords to the simulator: made where they are
// generated (`npm run stack`, compose's `devices` step), owner-only, never committed.
//   {"version":1,"devices":{"sim-001":"<password>", ...}}
import { readFileSync, statSync } from 'node:fs';
import { chmod, rename, writeFile } from 'node:fs/promises';
import { DEVICE_ID } from '../protocol.js';

export interface CredentialsFile {
  version: 1;
  devices: Record<string, string>;
}

const MAX_BYTES = 16 * 1024 * 1024;

/** The file is unreadable or malformed; the message is the reason, without the path. */
export class CredentialsError extends Error {}

export async function writeCredentials(path: string, passwords: ReadonlyMap<string, string>): Promise<void> {
  const file: CredentialsFile = { version: 1, devices: Object.fromEntries(passwords) };
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(file, null, 1)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600); // the mode of writeFile is masked by the umask, never widened
  await rename(tmp, path);
}

/** Reads and checks the file; returns the passwords by device id, or throws a one-line reason. */
export function readCredentials(path: string): Map<string, string> {
  let mode: number;
  let size: number;
  try {
    ({ mode, size } = statSync(path));
  } catch (err) {
    throw new CredentialsError(`cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if ((mode & 0o077) !== 0) throw new CredentialsError(`it is readable by others (mode ${(mode & 0o777).toString(8)}): it holds passwords, chmod 600 it`);
  if (size > MAX_BYTES) throw new CredentialsError(`it is larger than ${MAX_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CredentialsError(`it is not JSON (${(err as Error).message})`);
  }
  const devices = (parsed as Partial<CredentialsFile> | null)?.devices;
  if ((parsed as Partial<CredentialsFile> | null)?.version !== 1 || typeof devices !== 'object' || devices === null || Array.isArray(devices)) {
    throw new CredentialsError('expected {"version":1,"devices":{"<device id>":"<password>",…}}');
  }
  const out = new Map<string, string>();
  for (const [id, password] of Object.entries(devices)) {
    if (!DEVICE_ID.test(id)) throw new CredentialsError(`${JSON.stringify(id)} is not a device id`);
    if (typeof password !== 'string' || password === '' || password.length > 256 || /[\r\n\0]/.test(password)) {
      throw new CredentialsError(`the password of ${id} is not 1 to 256 characters without line breaks`);
    }
    out.set(id, password);
  }
  return out;
}
