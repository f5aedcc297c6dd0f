// The dynamic security plugin's first file: mosquitto/dynamic-security.template.json with the
// service and admin logins filled in. docker-entrypoint.sh fills the same template in the image
// (with mosquitto_passwd's hashes); this is the native stack's copy of that step.
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { deviceAcls, deviceIdProblem, deviceRole } from './identities.js';

export interface BrokerLogin {
  username: string;
  password: string;
}

/** What the entry point accepts for the service's and the admin's usernames. */
export const LOGIN_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

// The plugin's (and mosquitto_passwd's `$7$`) scheme in mosquitto 2.0: PBKDF2-HMAC-SHA512,
// 101 iterations, a 12-byte salt, a 64-byte key, both base64.
const ITERATIONS = 101;
const SALT_BYTES = 12;
const KEY_BYTES = 64;

export function dynsecHash(password: string): { hash: string; salt: string; iterations: number } {
  const salt = randomBytes(SALT_BYTES);
  const key = pbkdf2Sync(password, salt, ITERATIONS, KEY_BYTES, 'sha512');
  return { hash: key.toString('base64'), salt: salt.toString('base64'), iterations: ITERATIONS };
}

/** The checks docker-entrypoint.sh makes before it makes the file; throws naming the problem. */
export function checkLogins(logins: { service: BrokerLogin; admin: BrokerLogin }): void {
  for (const [role, login] of Object.entries(logins)) {
    if (!LOGIN_NAME.test(login.username)) throw new Error(`the ${role} username ${JSON.stringify(login.username)} is invalid: expected 1 to 64 letters, digits, _ . or -`);
    if (!login.password) throw new Error(`the ${role} login needs a password; the broker refuses anonymous clients`);
  }
  if (logins.service.username === logins.admin.username) {
    throw new Error(`the service and admin usernames are both "${logins.service.username}"; the service would get the admin's rights`);
  }
  if (logins.service.password === logins.admin.password) {
    throw new Error("the service and admin passwords are the same; whoever holds the service's password would hold the admin's too");
  }
}

/**
 * `devices` (id → password) are written in as `npm run devices -- add` would make them: one
 * client bound to its id, one role. Through the control topic a large fleet is slow on mosquitto
 * 2.0 (the plugin rewrites its whole file after every command: 2,000 devices took 110 s here),
 * so the native stack puts its simulated fleet into the first file instead.
 */
export function renderDynsecConfig(
  template: string,
  logins: { service: BrokerLogin; admin: BrokerLogin },
  devices: ReadonlyMap<string, string> = new Map(),
): string {
  checkLogins(logins);
  let out = template;
  for (const [role, login] of [['ADMIN', logins.admin], ['SERVICE', logins.service]] as const) {
    const { hash, salt, iterations } = dynsecHash(login.password);
    out = out
      .replaceAll(`@${role}_USERNAME@`, login.username)
      .replaceAll(`@${role}_HASH@`, hash)
      .replaceAll(`@${role}_SALT@`, salt)
      .replaceAll(`@${role}_ITERATIONS@`, String(iterations));
  }
  const left = /@[A-Z_]+@/.exec(out);
  if (left) throw new Error(`mosquitto/dynamic-security.template.json: placeholder ${left[0]} is not filled`);
  // A template that is no longer JSON fails here, not in the broker's log.
  const config = JSON.parse(out) as { clients: unknown[]; roles: unknown[] };
  if (devices.size === 0) return out;
  for (const [id, password] of devices) {
    const problem = deviceIdProblem(id);
    if (problem) throw new Error(problem);
    if (id === logins.service.username || id === logins.admin.username) throw new Error(`device id "${id}" is the service's or the admin's username`);
    const { hash, salt, iterations } = dynsecHash(password);
    config.roles.push({ rolename: deviceRole(id), acls: deviceAcls(id) });
    config.clients.push({ username: id, clientid: id, password: hash, salt, iterations, roles: [{ rolename: deviceRole(id) }] });
  }
  return `${JSON.stringify(config, null, '\t')}\n`;
}
