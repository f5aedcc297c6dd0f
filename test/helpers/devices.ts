import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynsecAdmin } from '../../src/broker/control.js';
import { writeCredentials } from '../../src/broker/credentials.js';
import { newDevicePassword, provisionDevices } from '../../src/broker/identities.js';
import type { Mosquitto } from '../../src/native/mosquitto.js';
import { deviceIds } from '../../src/simulator/config.js';

/** What a device connects with on the project broker: username and client id are its id. */
export interface DeviceLogin {
  username: string;
  password: string;
  clientId: string;
}

export async function withAdmin<T>(broker: Mosquitto, fn: (admin: DynsecAdmin) => Promise<T>): Promise<T> {
  if (!broker.users) throw new Error('not a project broker (Mosquitto.startProject): it has no admin login');
  const admin = await DynsecAdmin.connect({ url: broker.url, ...broker.users.admin });
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}

/** Adds each device to the project broker (or gives it a new password) and returns its login. */
export async function deviceLogins(broker: Mosquitto, ids: readonly string[]): Promise<Map<string, DeviceLogin>> {
  const passwords = new Map(ids.map((id) => [id, newDevicePassword()]));
  await withAdmin(broker, (admin) => provisionDevices(admin, passwords));
  return new Map(ids.map((id) => [id, { username: id, password: passwords.get(id)!, clientId: id }]));
}

export async function deviceLogin(broker: Mosquitto, id: string): Promise<DeviceLogin> {
  return (await deviceLogins(broker, [id])).get(id)!;
}

/**
 * The simulator's SIM_CREDENTIALS_FILE for a fleet of `count` devices named `<prefix>-NNN`,
 * provisioned on the broker; `dir` defaults to a fresh temporary directory.
 */
export async function fleetCredentials(broker: Mosquitto, prefix: string, count: number, dir?: string): Promise<string> {
  const logins = await deviceLogins(broker, deviceIds(prefix, count));
  const file = join(dir ?? (await mkdtemp(join(tmpdir(), 'sim-credentials-'))), `${prefix}.json`);
  await writeCredentials(file, new Map([...logins].map(([id, l]) => [id, l.password])));
  return file;
}
