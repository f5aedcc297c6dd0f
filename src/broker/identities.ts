// Device identities in the dynamic security plugin. Each device is a client whose username and
// bound client id are its device id (the plugin then accepts the login only with that client
// id), with a role of its own granting exactly its topics. A role per device because the
// plugin of mosquitto 2.0 substitutes neither %c nor %u in its ACL topics (checked on 2.0.11:
// a `devices/%c/telemetry` grant refuses the device's own publish), so one shared role
// cannot say "its own".
import { randomBytes } from 'node:crypto';
import { DEFAULT_TOPIC_PREFIX, DEVICE_ID } from '../protocol.js';
import { BrokerAdminError, type DynsecAdmin, type DynsecCommand } from './control.js';

export const DEVICE_ROLE_PREFIX = 'device:';
/**
 * The service's client ids start with this (`mqtt-sse-gateway-ingest`, `-<hostname>`, the
 * stack's `-stack-service`): a device of such an id could take the service's session.
 */
export const RESERVED_ID_PREFIX = 'mqtt-sse-gateway';
/** Commands per control message when many devices are provisioned at once. */
const BATCH = 100;

export function deviceRole(id: string): string {
  return `${DEVICE_ROLE_PREFIX}${id}`;
}

/** Why `id` cannot be a device's broker identity, or undefined when it can. */
export function deviceIdProblem(id: string | undefined): string | undefined {
  if (id === undefined || id === '') return 'which device? (a device id after the command)';
  if (!DEVICE_ID.test(id)) return `${JSON.stringify(id)} is not a device id: 1 to 64 letters, digits, _ or -`;
  if (id.startsWith(RESERVED_ID_PREFIX)) return `${JSON.stringify(id)} starts with "${RESERVED_ID_PREFIX}", the service's client ids: a device of that id could take the service's session`;
  return undefined;
}

/** A device's grants: publish its status, telemetry, events and acks; subscribe to and receive its commands. */
export function deviceAcls(id: string, prefix = DEFAULT_TOPIC_PREFIX): { acltype: string; topic: string; allow: boolean }[] {
  const base = `${prefix}/${id}`;
  return [
    ...['status', 'telemetry', 'events', 'acks'].map((kind) => ({ acltype: 'publishClientSend', topic: `${base}/${kind}`, allow: true })),
    { acltype: 'subscribeLiteral', topic: `${base}/commands`, allow: true },
    { acltype: 'publishClientReceive', topic: `${base}/commands`, allow: true },
  ];
}

export function newDevicePassword(): string {
  return randomBytes(24).toString('base64url');
}

function createCommands(id: string, password: string): DynsecCommand[] {
  return [
    // A role left behind by an interrupted add; the device's client does not exist (checked).
    { command: 'deleteRole', rolename: deviceRole(id) },
    { command: 'createRole', rolename: deviceRole(id), acls: deviceAcls(id) },
    { command: 'createClient', username: id, password, clientid: id, roles: [{ rolename: deviceRole(id) }] },
  ];
}

interface ListedClient {
  username: string;
  clientid?: string;
  disabled?: boolean;
  roles?: { rolename: string }[];
}

export interface DeviceIdentity {
  id: string;
  disabled: boolean;
}

async function clients(admin: DynsecAdmin): Promise<ListedClient[]> {
  const response = await admin.one({ command: 'listClients', verbose: true, count: -1, offset: 0 });
  const list = (response.data as { clients?: unknown } | undefined)?.clients;
  if (!Array.isArray(list)) throw new BrokerAdminError('listClients: the plugin answered without a client list');
  return list.filter((c): c is ListedClient => typeof (c as ListedClient)?.username === 'string');
}

function isDevice(client: ListedClient): boolean {
  return client.clientid === client.username && (client.roles ?? []).some((r) => r.rolename === deviceRole(client.username));
}

export async function listDevices(admin: DynsecAdmin): Promise<DeviceIdentity[]> {
  return (await clients(admin)).filter(isDevice)
    .map((c) => ({ id: c.username, disabled: c.disabled === true }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function find(admin: DynsecAdmin, id: string): Promise<ListedClient | undefined> {
  const response = await admin.one({ command: 'getClient', username: id }, /not found/i);
  return response.error ? undefined : (response.data as { client?: ListedClient } | undefined)?.client;
}

/** Creates the device's client and role; refuses an id that is already a client (a device, the service, the admin). */
export async function addDevice(admin: DynsecAdmin, id: string, password: string): Promise<void> {
  const problem = deviceIdProblem(id);
  if (problem) throw new BrokerAdminError(problem);
  if (await find(admin, id)) throw new BrokerAdminError(`${JSON.stringify(id)} is already a client of the broker`);
  const responses = await admin.run(createCommands(id, password));
  const failed = responses.slice(1).find((r) => r.error);
  if (failed) throw new BrokerAdminError(`${failed.command} ${id}: ${failed.error}`);
}

/** Deletes the device's client (the plugin disconnects it) and its role. */
export async function removeDevice(admin: DynsecAdmin, id: string): Promise<void> {
  const problem = deviceIdProblem(id);
  if (problem) throw new BrokerAdminError(problem);
  const client = await find(admin, id);
  if (!client) throw new BrokerAdminError(`no device ${JSON.stringify(id)} on the broker`);
  if (!isDevice(client)) throw new BrokerAdminError(`${JSON.stringify(id)} is a client of the broker but not a device (no role ${deviceRole(id)}): not removed`);
  const [deleted] = await admin.run([{ command: 'deleteClient', username: id }, { command: 'deleteRole', rolename: deviceRole(id) }]);
  if (deleted!.error) throw new BrokerAdminError(`deleteClient ${id}: ${deleted!.error}`);
}

/** A new password for an existing device. */
export async function setDevicePassword(admin: DynsecAdmin, id: string, password: string): Promise<void> {
  const client = await find(admin, id);
  if (!client || !isDevice(client)) throw new BrokerAdminError(`no device ${JSON.stringify(id)} on the broker`);
  await admin.one({ command: 'setClientPassword', username: id, password });
}

/**
 * Makes each device exist with the given password: new ones are created, existing devices get
 * the new password — except those in `unchanged`, whose password the broker already has. Setting
 * a password, even the same one, makes the plugin disconnect every client of that login: a fleet
 * re-provisioned on each start would drop all its connections every time. For a fleet (the
 * simulator): one listing, then batches of commands.
 */
export async function provisionDevices(
  admin: DynsecAdmin,
  passwords: ReadonlyMap<string, string>,
  unchanged: ReadonlySet<string> = new Set(),
): Promise<{ created: number; updated: number }> {
  for (const id of passwords.keys()) {
    const problem = deviceIdProblem(id);
    if (problem) throw new BrokerAdminError(problem);
  }
  const existing = new Map((await clients(admin)).map((c) => [c.username, c]));
  const commands: DynsecCommand[] = [];
  let created = 0;
  let updated = 0;
  for (const [id, password] of passwords) {
    const client = existing.get(id);
    if (!client) {
      commands.push(...createCommands(id, password));
      created += 1;
    } else if (isDevice(client)) {
      if (unchanged.has(id)) continue;
      commands.push({ command: 'setClientPassword', username: id, password });
      updated += 1;
    } else {
      throw new BrokerAdminError(`${JSON.stringify(id)} is a client of the broker but not a device: not provisioned`);
    }
  }
  for (let i = 0; i < commands.length; i += BATCH) {
    const batch = commands.slice(i, i + BATCH);
    const responses = await admin.run(batch);
    responses.forEach((r, j) => {
      // The deleteRole before each createRole clears a leftover; "not found" is the usual answer.
      if (r.error && batch[j]!.command !== 'deleteRole') throw new BrokerAdminError(`${r.command}: ${r.error}`);
    });
  }
  return { created, updated };
}
