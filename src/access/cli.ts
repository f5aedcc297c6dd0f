// `npm run users -- <command>`: the operator's tool for the users file (USERS_FILE, or --file).
//
//   add <name> --role viewer|operator|admin [--devices 'pump-*,valve-7'] [--password-stdin]
//   passwd <name> [--password-stdin]        a new password (generated and printed once, or from stdin)
//   grant <name> [--role …] [--devices …]   change the role or the device patterns
//   token <name>                            a new API token, printed once (only its hash is kept)
//   revoke <name> <token-id>                remove one API token
//   remove <name>
//   list
//   init [--secret-file <path>]             first start (compose): the demo users from DEMO_*_PASSWORD
//                                           and a random session secret, each only if not there yet
import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { MIN_SESSION_SECRET, hashPassword, newPassword, newToken, usableSessionSecret, verifyPassword } from './secrets.js';
import { DEMO_ACCOUNTS, ROLES, UsersFileError, loadUsers, withUsersLock, saveUsers, validPattern, validUserName, type Role, type UsersFile } from './users.js';

const USAGE = `usage: npm run users -- <command> [options]   (the file: USERS_FILE or --file)
  add <name> --role viewer|operator|admin [--devices 'pump-*,valve-7'] [--password-stdin]
  passwd <name> [--password-stdin]
  grant <name> [--role <role>] [--devices <patterns>]
  token <name>
  revoke <name> <token-id>
  remove <name>
  list
  init [--secret-file <path>]   (DEMO_ADMIN_PASSWORD, DEMO_OPERATOR_PASSWORD, DEMO_VIEWER_PASSWORD)`;

const MIN_PASSWORD = 12;
const SECRET_BYTES = 32;

/** DEMO_ADMIN_PASSWORD and so on: the environment variable holding a demo account's password. */
export function demoPasswordVariable(name: string): string {
  return `DEMO_${name.toUpperCase()}_PASSWORD`;
}

/** The demo defaults docker-compose.yml writes (demo-…) and .env.example suggests replacing (change-me-…). */
function isPublicDefault(password: string): boolean {
  return /^(demo|change-me)-/.test(password);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new UsageError(`cannot look at ${path}: ${(err as Error).message}`);
  }
}

/**
 * The first start of a deployment: the users file with the demo accounts whose passwords the
 * environment gives, and the session secret file with a random secret. Whatever exists is kept
 * as it is (the operator's changes, the sessions signed with the secret), so it runs at every start.
 */
async function init(path: string, secretFile: string | undefined, io: CliIo): Promise<void> {
  if (await exists(path)) {
    const file = await loadUsers(path);
    io.out(`users file ${path} exists (${Object.keys(file.users).length} users): left as it is`);
    for (const account of DEMO_ACCOUNTS) {
      const given = io.env[demoPasswordVariable(account.name)] ?? '';
      const user = file.users[account.name];
      if (given === '' || !user) continue;
      if (!(await verifyPassword(given, user.password))) {
        io.out(`note: ${demoPasswordVariable(account.name)} is not ${account.name}'s password: the DEMO_* passwords are used only when the users file is made (change one with: passwd ${account.name})`);
      } else if (isPublicDefault(given)) {
        io.out(`WARNING: ${account.name} still has the demo password written in docker-compose.yml: anyone who reads it can sign in (change it with: passwd ${account.name})`);
      }
    }
  } else {
    const given = DEMO_ACCOUNTS.filter((a) => (io.env[demoPasswordVariable(a.name)] ?? '') !== '');
    if (given.length === 0) {
      throw new UsageError(`init creates the demo users from ${DEMO_ACCOUNTS.map((a) => demoPasswordVariable(a.name)).join(', ')}: none is set`);
    }
    const file: UsersFile = { version: 1, users: {} };
    for (const account of given) {
      const secret = io.env[demoPasswordVariable(account.name)]!;
      if ([...secret].length < MIN_PASSWORD) throw new UsageError(`${demoPasswordVariable(account.name)}: a password has at least ${MIN_PASSWORD} characters`);
      file.users[account.name] = { role: account.role, devices: [...account.devices], password: await hashPassword(secret), tokens: [] };
    }
    await saveUsers(path, file);
    for (const account of given) {
      if (isPublicDefault(io.env[demoPasswordVariable(account.name)]!)) {
        io.out(`WARNING: ${account.name} has the demo password written in docker-compose.yml: anyone who reads it can sign in (set ${demoPasswordVariable(account.name)} in .env before the first start, or change it with: passwd ${account.name})`);
      }
    }
    io.out(`created ${path}: ${given.map((a) => `${a.name} (${a.role}${a.devices.length > 0 ? `, devices ${a.devices.join(',')}` : ''})`).join(', ')}`);
  }
  if (secretFile === undefined) return;
  if (await exists(secretFile)) {
    const kept = (await readFile(secretFile, 'utf8')).trim();
    if (!usableSessionSecret(kept)) throw new UsageError(`${secretFile}: expected one line of at least ${MIN_SESSION_SECRET} characters; remove it to have a new one made`);
    io.out(`session secret ${secretFile} exists: left as it is`);
    return;
  }
  // wx: never over a file another start made meanwhile.
  await writeFile(secretFile, `${randomBytes(SECRET_BYTES).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  io.out(`created session secret ${secretFile}`);
}

export class UsageError extends Error {}

export interface CliIo {
  out(line: string): void;
  /** The whole of standard input (for --password-stdin). */
  stdin(): Promise<string>;
  env: NodeJS.ProcessEnv;
  now(): Date;
}

function role(value: string | undefined): Role | undefined {
  if (value === undefined) return undefined;
  if (!ROLES.includes(value as Role)) throw new UsageError(`--role ${JSON.stringify(value)}: expected one of ${ROLES.join(', ')}`);
  return value as Role;
}

function patterns(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = value.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const bad = list.filter((p) => !validPattern(p));
  if (bad.length > 0) throw new UsageError(`--devices: ${bad.map((b) => JSON.stringify(b)).join(', ')} is not a device-id pattern (letters, digits, _ . : - and *)`);
  return list;
}

async function password(fromStdin: boolean, io: CliIo): Promise<{ password: string; generated: boolean }> {
  if (!fromStdin) return { password: newPassword(), generated: true };
  const given = (await io.stdin()).replace(/\r?\n$/, '');
  if ([...given].length < MIN_PASSWORD) throw new UsageError(`a password has at least ${MIN_PASSWORD} characters`);
  return { password: given, generated: false };
}

function existing(file: UsersFile, name: string | undefined): string {
  if (name === undefined) throw new UsageError('which user? (a name after the command)');
  if (!file.users[name]) throw new UsageError(`no user ${JSON.stringify(name)}`);
  return name;
}

/** Runs one command; returns the exit code. Errors of use are printed with the usage. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        file: { type: 'string' },
        'secret-file': { type: 'string' },
        role: { type: 'string' },
        devices: { type: 'string' },
        'password-stdin': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    const [command, name, extra] = positionals;
    if (values.help || command === undefined) {
      io.out(USAGE);
      return command === undefined && !values.help ? 2 : 0;
    }
    const path = values.file ?? io.env['USERS_FILE'];
    if (!path) throw new UsageError('no users file: set USERS_FILE or pass --file <path>');
    // Every change reads, changes and writes the file under its lock; `list` only reads.
    const run = async (): Promise<number> => {
      if (command === 'init') {
        const secretFile = values['secret-file'] ?? (io.env['SESSION_SECRET_FILE'] || undefined);
        if (secretFile !== undefined && !secretFile.startsWith('/')) throw new UsageError(`the session secret file is an absolute path, not ${JSON.stringify(secretFile)}`);
        await init(path, secretFile, io);
        return 0;
      }
      const file = await loadUsers(path);
      switch (command) {
        case 'add': {
          if (name === undefined || !validUserName(name)) throw new UsageError('a user name is 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit');
          if (file.users[name]) throw new UsageError(`user ${JSON.stringify(name)} exists (passwd, grant or remove it)`);
          const r = role(values.role);
          if (!r) throw new UsageError('add needs --role viewer|operator|admin');
          const devices = patterns(values.devices) ?? [];
          if (r !== 'admin' && devices.length === 0) io.out(`note: ${name} has no --devices and sees no device until granted some`);
          const secret = await password(values['password-stdin'], io);
          file.users[name] = { role: r, devices, password: await hashPassword(secret.password), tokens: [] };
          await saveUsers(path, file);
          io.out(`added ${name} (${r}${devices.length > 0 ? `, devices ${devices.join(',')}` : ''})`);
          if (secret.generated) io.out(`password for ${name} (shown once): ${secret.password}`);
          return 0;
        }
        case 'passwd': {
          const who = existing(file, name);
          const secret = await password(values['password-stdin'], io);
          file.users[who]!.password = await hashPassword(secret.password);
          await saveUsers(path, file);
          io.out(`new password for ${who}${secret.generated ? ` (shown once): ${secret.password}` : ''}`);
          return 0;
        }
        case 'grant': {
          const who = existing(file, name);
          const user = file.users[who]!;
          const r = role(values.role);
          const devices = patterns(values.devices);
          if (!r && !devices) throw new UsageError('grant needs --role and/or --devices');
          if (r) user.role = r;
          if (devices) user.devices = devices;
          await saveUsers(path, file);
          io.out(`${who}: ${user.role}, devices ${user.devices.join(',') || '(none)'}`);
          return 0;
        }
        case 'token': {
          const who = existing(file, name);
          const made = newToken();
          file.users[who]!.tokens.push({ id: made.id, hash: made.hash, created: io.now().toISOString() });
          await saveUsers(path, file);
          io.out(`API token ${made.id} for ${who} (shown once; send it as "Authorization: Bearer …"): ${made.token}`);
          return 0;
        }
        case 'revoke': {
          const who = existing(file, name);
          const user = file.users[who]!;
          const before = user.tokens.length;
          user.tokens = user.tokens.filter((t) => t.id !== extra);
          if (user.tokens.length === before) throw new UsageError(`${who} has no token ${JSON.stringify(extra ?? '')}`);
          await saveUsers(path, file);
          io.out(`revoked token ${extra} of ${who}`);
          return 0;
        }
        case 'remove': {
          const who = existing(file, name);
          delete file.users[who];
          await saveUsers(path, file);
          io.out(`removed ${who}`);
          return 0;
        }
        case 'list': {
          const names = Object.keys(file.users).sort();
          if (names.length === 0) io.out('no users');
          for (const n of names) {
            const u = file.users[n]!;
            const tokens = u.tokens.map((t) => t.id).join(',');
            io.out(`${n}\t${u.role}\t${u.role === 'admin' ? '*' : u.devices.join(',') || '(none)'}\t${tokens ? `tokens ${tokens}` : ''}`.trimEnd());
          }
          return 0;
        }
        default:
          throw new UsageError(`unknown command ${JSON.stringify(command)}`);
      }
    };
    return command === 'list' ? await run() : await withUsersLock(path, run);
  } catch (err) {
    if (err instanceof UsageError || err instanceof UsersFileError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.out(`users: ${(err as Error).message}`);
      if (err instanceof UsageError || !(err instanceof UsersFileError)) io.out(USAGE);
      return 2;
    }
    throw err;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  runCli(process.argv.slice(2), { out: (l) => process.stdout.write(`${l}\n`), stdin: readStdin, env: process.env, now: () => new Date() })
    .then((code) => process.exit(code), (err: Error) => {
      process.stderr.write(`users: ${err.message}\n`);
      process.exit(1);
    });
}
