// `npm run devices -- <command>`: the operator's tool for device identities on a running broker,
// spoken over the dynamic security plugin's control topic with the admin login
// (MQTT_URL, MQTT_ADMIN_USERNAME, MQTT_ADMIN_PASSWORD).
//
//   add <id> [--password-stdin]      a device login bound to client id <id>; a generated password is printed once
//   passwd <id> [--password-stdin]   a new password for it
//   remove <id>                      deletes it; its open connections are closed
//   list
//   provision --out <file>           the simulated fleet (SIM_DEVICES, SIM_ID_PREFIX): every device made (or
//                                    its password set), the passwords written to <file> (owner-only). Devices
//                                    already in <file> keep their password, so a second run changes nothing
//                                    for a simulator that is running on that file.
import { existsSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, EnvReader } from '../env.js';
import { deviceIds, loadSimConfig } from '../simulator/config.js';
import { BrokerAdminError, DynsecAdmin, type AdminLogin } from './control.js';
import { CredentialsError, readCredentials, writeCredentials } from './credentials.js';
import { LOGIN_NAME } from './bootstrap.js';
import { addDevice, deviceIdProblem, listDevices, newDevicePassword, provisionDevices, removeDevice, setDevicePassword } from './identities.js';

const USAGE = `usage: npm run devices -- <command>   (the broker: MQTT_URL, MQTT_ADMIN_USERNAME, MQTT_ADMIN_PASSWORD)
  add <device-id> [--password-stdin]
  passwd <device-id> [--password-stdin]
  remove <device-id>
  list
  provision --out <file>   (the simulated fleet: SIM_DEVICES, SIM_ID_PREFIX)`;

const MIN_PASSWORD = 16;

export class UsageError extends Error {}

export interface CliIo {
  out(line: string): void;
  stdin(): Promise<string>;
  env: NodeJS.ProcessEnv;
}

export function adminLoginFrom(env: NodeJS.ProcessEnv): AdminLogin {
  const r = new EnvReader(env);
  const login = {
    url: r.url('MQTT_URL', 'mqtt://localhost:1883', ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ws:', 'wss:']),
    username: r.string('MQTT_ADMIN_USERNAME', 'admin', LOGIN_NAME, '1 to 64 letters, digits, _ . or -'),
    password: r.secret('MQTT_ADMIN_PASSWORD'),
  };
  r.check(login.password !== undefined, 'MQTT_ADMIN_PASSWORD is not set: the admin login of the broker\'s dynamic security plugin is needed');
  return r.done({ ...login, password: login.password ?? '' });
}

async function password(fromStdin: boolean, io: CliIo): Promise<{ password: string; generated: boolean }> {
  if (!fromStdin) return { password: newDevicePassword(), generated: true };
  const given = (await io.stdin()).replace(/\r?\n$/, '');
  if ([...given].length < MIN_PASSWORD) throw new UsageError(`a device password has at least ${MIN_PASSWORD} characters`);
  if (/[\r\n\0]/.test(given)) throw new UsageError('a device password has no line breaks');
  return { password: given, generated: false };
}

function deviceArg(id: string | undefined): string {
  const problem = deviceIdProblem(id);
  if (problem) throw new UsageError(problem);
  return id!;
}

function keptCredentials(path: string): Map<string, string> {
  try {
    return readCredentials(path);
  } catch (err) {
    throw new CredentialsError(`--out ${path} exists but cannot be kept: ${(err as Error).message}`);
  }
}

/** Runs one command; returns the exit code (2: a usage error, 1: the broker refused or failed). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let admin: DynsecAdmin | undefined;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        out: { type: 'string' },
        'password-stdin': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    const [command, id, extra] = positionals;
    if (values.help || command === undefined) {
      io.out(USAGE);
      return values.help ? 0 : 2;
    }
    if (extra !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(extra)}`);
    if (!['add', 'passwd', 'remove', 'list', 'provision'].includes(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    // Everything that can be checked without the broker is checked first.
    const device = command === 'add' || command === 'passwd' || command === 'remove' ? deviceArg(id) : undefined;
    if (device === undefined && id !== undefined) throw new UsageError(`${command} takes no device id`);
    if (command === 'provision' && !values.out) throw new UsageError('provision needs --out <file>');
    const fleet = command === 'provision' ? loadSimConfig({ SIM_DEVICES: io.env['SIM_DEVICES'], SIM_ID_PREFIX: io.env['SIM_ID_PREFIX'] }) : undefined;
    const secret = command === 'add' || command === 'passwd' ? await password(values['password-stdin'], io) : undefined;
    admin = await DynsecAdmin.connect(adminLoginFrom(io.env));
    switch (command) {
      case 'add':
        await addDevice(admin, device!, secret!.password);
        io.out(`added ${device}: username ${device}, client id ${device}, topics devices/${device}/…`);
        if (secret!.generated) io.out(`password for ${device} (shown once): ${secret!.password}`);
        return 0;
      case 'passwd':
        await setDevicePassword(admin, device!, secret!.password);
        io.out(`new password for ${device}${secret!.generated ? ` (shown once): ${secret!.password}` : ''}`);
        return 0;
      case 'remove':
        await removeDevice(admin, device!);
        io.out(`removed ${device} (its connections were closed)`);
        return 0;
      case 'list': {
        const devices = await listDevices(admin);
        if (devices.length === 0) io.out('no devices');
        for (const d of devices) io.out(d.disabled ? `${d.id}\tdisabled` : d.id);
        return 0;
      }
      default: {
        const ids = deviceIds(fleet!.idPrefix, fleet!.devices);
        const kept = existsSync(values.out!) ? keptCredentials(values.out!) : new Map<string, string>();
        const passwords = new Map(ids.map((i) => [i, kept.get(i) ?? newDevicePassword()]));
        // Kept passwords are the broker's already (this command wrote both): setting them again
        // would disconnect a simulator that is running on the file.
        const { created, updated } = await provisionDevices(admin, passwords, new Set(kept.keys()));
        await writeCredentials(values.out!, passwords);
        io.out(`provisioned ${ids.length} devices (${created} new, ${updated} with a new password): ${ids[0]} … ${ids[ids.length - 1]}; passwords in ${values.out}`);
        return 0;
      }
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.out(`devices: ${(err as Error).message}`);
      io.out(USAGE);
      return 2;
    }
    if (err instanceof ConfigError) {
      for (const problem of err.problems) io.out(`devices: ${problem}`);
      return 2;
    }
    if (err instanceof BrokerAdminError || err instanceof CredentialsError) {
      io.out(`devices: ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    await admin?.close();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  runCli(process.argv.slice(2), { out: (l) => process.stdout.write(`${l}\n`), stdin: readStdin, env: process.env })
    .then((code) => process.exit(code), (err: Error) => {
      process.stderr.write(`devices: ${err.message}\n`);
      process.exit(1);
    });
}
