import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, chmod, mkdir, mkdtemp, readFile, readdir, writeFile, access, constants } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ManagedProcess, waitListening } from './process.js';
import { freePort } from './ports.js';
import { PROJECT_FILES } from './project.js';
import { checkLogins, renderDynsecConfig } from '../broker/bootstrap.js';
import { ensureCertificates, type TlsPaths } from '../tls/certs.js';

const run = promisify(execFile);

export const INSTALL_HINT =
  'mosquitto not found: install it with `apt-get install -y mosquitto mosquitto-clients` (Debian/Ubuntu, as root)';

export interface MosquittoUser {
  username: string;
  password: string;
}

export interface MosquittoOptions {
  /** Config body without listener and persistence location; those are written for this instance. */
  config?: string;
  /** Extra files to write into the instance directory before start, name → contents. */
  files?: Record<string, string>;
  /** Users to put in a password file (built with mosquitto_passwd); adds `password_file`. */
  users?: readonly MosquittoUser[];
  port?: number;
  host?: string;
  dir?: string;
}

/**
 * The project broker's two fixed logins, made with its dynamic security file: the service
 * (role `service`) and the admin that manages device identities (role `admin`). Devices are
 * added through the admin (src/broker/identities.ts).
 */
export interface ProjectUsers {
  service: MosquittoUser;
  admin: MosquittoUser;
}

export interface ProjectMosquittoOptions {
  /** Defaults: `service` / `admin` with random passwords. */
  users?: ProjectUsers;
  port?: number;
  /** The TLS listener's port; default a free one. */
  tlsPort?: number;
  /** Its certificate and key (copied for the broker user); default: made in the instance directory. */
  tls?: TlsPaths;
  host?: string;
  dir?: string;
  /** Devices (id → password) made with the broker's first identities file, as `npm run devices -- add` makes them. */
  devices?: ReadonlyMap<string, string>;
  /** Every line the broker logs (stdout), e.g. to a log file. */
  onLine?: (line: string) => void;
  /** Own process group, so a terminal's Ctrl-C reaches only the owner, which stops it in order. */
  detached?: boolean;
}

/** The default usernames with fresh random passwords. */
export function generateProjectUsers(): ProjectUsers {
  const secret = () => randomBytes(18).toString('base64url');
  return {
    service: { username: 'service', password: secret() },
    admin: { username: 'admin', password: secret() },
  };
}

export interface InstancePaths {
  port: number;
  host: string;
  /** With a trailing slash, as mosquitto wants it. */
  dataDir: string;
  /** The dynamic security plugin's shared object, and the file it keeps its clients and roles in. */
  pluginPath: string;
  dynsecFile: string;
  /** The TLS listener's port (same address), certificate and key. */
  tlsPort: number;
  certFile: string;
  keyFile: string;
}

/**
 * The project's mosquitto.conf for one native instance. Only the directives tagged [native]
 * in the file differ from what runs in compose: the listener's port and address, the
 * persistence location, the plugin's path (Debian's instead of the image's) and its file
 * (this instance's directory instead of /mosquitto/...). Each must occur exactly once, so a reshaped config
 * fails here loudly instead of starting a broker that differs from the deployed one.
 */
export function renderProjectConfig(conf: string, paths: InstancePaths): string {
  const rewrites: [string, RegExp, string][] = [
    // 8883 first: the plain listener's new port is never 8883's pattern's to rewrite again.
    ['listener 8883', /^listener[ \t]+8883(?:[ \t].*)?$/gm, `listener ${paths.tlsPort} ${paths.host}`],
    ['listener 1883', /^listener[ \t]+1883(?:[ \t].*)?$/gm, `listener ${paths.port} ${paths.host}`],
    ['certfile', /^certfile[ \t].*$/gm, `certfile ${paths.certFile}`],
    ['keyfile', /^keyfile[ \t].*$/gm, `keyfile ${paths.keyFile}`],
    ['persistence_location', /^persistence_location[ \t].*$/gm, `persistence_location ${paths.dataDir}`],
    ['plugin', /^plugin[ \t].*$/gm, `plugin ${paths.pluginPath}`],
    ['plugin_opt_config_file', /^plugin_opt_config_file[ \t].*$/gm, `plugin_opt_config_file ${paths.dynsecFile}`],
  ];
  let out = conf;
  for (const [name, pattern, line] of rewrites) {
    const count = conf.match(pattern)?.length ?? 0;
    if (count !== 1) throw new Error(`mosquitto/mosquitto.conf: expected exactly one \`${name}\` line, found ${count}`);
    out = out.replace(pattern, line);
  }
  return out;
}

/** The same checks docker-entrypoint.sh makes before it makes the dynamic security file. */
export function checkProjectUsers(users: ProjectUsers): void {
  checkLogins(users);
}

export const DYNSEC_INSTALL_HINT =
  'mosquitto_dynamic_security.so not found: it ships with Debian\'s mosquitto package (`apt-get install -y mosquitto`)';

/** Debian's multiarch path (/usr/lib/<triplet>/), else the image's and a local build's. */
export async function findDynsecPlugin(): Promise<string> {
  const name = 'mosquitto_dynamic_security.so';
  const dirs: string[] = [];
  for (const entry of await readdir('/usr/lib', { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory() && entry.name.endsWith('-linux-gnu')) dirs.push(join('/usr/lib', entry.name));
  }
  for (const dir of [...dirs, '/usr/lib', '/usr/local/lib']) {
    try {
      await access(join(dir, name), constants.R_OK);
      return join(dir, name);
    } catch {
      // try the next directory
    }
  }
  throw new Error(DYNSEC_INSTALL_HINT);
}

/** A permissive config for tests of the service itself: anonymous, persistent, large queues. */
const OPEN_TEST_CONFIG = `allow_anonymous true
persistence true
autosave_interval 1
max_queued_messages 100000
`;

export async function findBinary(name: string, hint: string): Promise<string> {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']) {
    const path = join(dir, name);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // try the next directory
    }
  }
  throw new Error(hint);
}

/**
 * A real Mosquitto on its own port and directory. Data persists in the directory, so `restart()`
 * brings back the same broker with its sessions.
 */
export class Mosquitto {
  private proc: ManagedProcess | undefined;
  private processOptions: { onLine?: (line: string) => void; detached?: boolean } = {};
  /** The project broker's TLS listener (startProject), and the certificate it serves. */
  tlsPort: number | undefined;
  tls: TlsPaths | undefined;

  /** The project broker's service and admin logins (startProject); undefined for start(). */
  users: ProjectUsers | undefined;

  private constructor(
    readonly binary: string,
    readonly dir: string,
    readonly host: string,
    readonly port: number,
  ) {}

  get url(): string {
    return `mqtt://${this.host}:${this.port}`;
  }

  /** MQTT over TLS (startProject only); clients trust `tls.caCert`. */
  get tlsUrl(): string | undefined {
    return this.tlsPort === undefined ? undefined : `mqtts://${this.host}:${this.tlsPort}`;
  }

  get configPath(): string {
    return join(this.dir, 'mosquitto.conf');
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  output(): string {
    return this.proc?.output() ?? '';
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  static async start(options: MosquittoOptions = {}): Promise<Mosquitto> {
    const binary = await findBinary('mosquitto', INSTALL_HINT);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? (await freePort(host));
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mosquitto-')));
    const broker = new Mosquitto(binary, dir, host, port);
    await broker.prepare(options);
    await broker.launch();
    return broker;
  }

  /**
   * Debian's mosquitto with the project's own mosquitto/mosquitto.conf (see renderProjectConfig
   * for the only lines that differ) and a dynamic security file made from
   * mosquitto/dynamic-security.template.json as mosquitto/docker-entrypoint.sh makes it. No
   * device can log in until one is added (src/broker/identities.ts, with `users.admin`).
   */
  static async startProject(options: ProjectMosquittoOptions = {}): Promise<Mosquitto> {
    const binary = await findBinary('mosquitto', INSTALL_HINT);
    const users = options.users ?? generateProjectUsers();
    checkProjectUsers(users);
    const pluginPath = await findDynsecPlugin();
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? (await freePort(host));
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mosquitto-')));
    const broker = new Mosquitto(binary, dir, host, port);
    broker.users = users;
    broker.tlsPort = options.tlsPort ?? (await freePort(host));
    broker.tls = options.tls ?? (await ensureCertificates({ dir: join(dir, 'certs') }));
    if (options.onLine) broker.processOptions.onLine = options.onLine;
    if (options.detached) broker.processOptions.detached = true;
    await broker.prepareProject(users, pluginPath, options.devices);
    await broker.launch();
    return broker;
  }

  private async prepareProject(users: ProjectUsers, pluginPath: string, devices?: ReadonlyMap<string, string>): Promise<void> {
    const dataDir = join(this.dir, 'data');
    await mkdir(dataDir, { recursive: true });
    // As in the entrypoint: on the data directory, where the plugin rewrites it on every change.
    const dynsecFile = join(dataDir, 'dynamic-security.json');
    const template = await readFile(PROJECT_FILES.mosquittoDynsecTemplate, 'utf8');
    await writeFile(dynsecFile, renderDynsecConfig(template, users, devices), { mode: 0o600 });
    // As in the entrypoint: the certificate and key copied for the broker user, owner-only.
    const tlsDir = join(this.dir, 'tls');
    await mkdir(tlsDir, { recursive: true, mode: 0o700 });
    const certFile = join(tlsDir, 'server.crt');
    const keyFile = join(tlsDir, 'server.key');
    await writeFile(certFile, await readFile(this.tls!.cert), { mode: 0o600 });
    await writeFile(keyFile, await readFile(this.tls!.key), { mode: 0o600 });
    const conf = await readFile(PROJECT_FILES.mosquittoConf, 'utf8');
    await writeFile(
      this.configPath,
      renderProjectConfig(conf, { port: this.port, host: this.host, dataDir: `${dataDir}/`, pluginPath, dynsecFile, tlsPort: this.tlsPort!, certFile, keyFile }),
    );
    await this.grantToBrokerUser();
  }

  private async prepare(options: MosquittoOptions): Promise<void> {
    const dataDir = join(this.dir, 'data');
    await mkdir(dataDir, { recursive: true });
    for (const [name, contents] of Object.entries(options.files ?? {})) {
      await writeFile(join(this.dir, name), contents);
    }
    const lines = [
      `listener ${this.port} ${this.host}`,
      `persistence_location ${dataDir}/`,
      'log_dest stdout',
      'log_timestamp_format %Y-%m-%dT%H:%M:%S',
    ];
    if (options.users && options.users.length > 0) {
      const passwd = join(this.dir, 'passwd');
      await writeFile(passwd, '');
      for (const user of options.users) {
        await run(await findBinary('mosquitto_passwd', INSTALL_HINT), ['-b', passwd, user.username, user.password]);
      }
      lines.push(`password_file ${passwd}`);
    }
    await writeFile(this.configPath, `${lines.join('\n')}\n${options.config ?? OPEN_TEST_CONFIG}`);
    await this.grantToBrokerUser();
  }

  // Started as root, mosquitto drops to the `mosquitto` user. A data directory that user cannot
  // write makes persistence fail silently (sessions lost on restart), so hand the tree over.
  private async grantToBrokerUser(): Promise<void> {
    if (userInfo().uid !== 0) return;
    let ids: { uid: number; gid: number };
    try {
      const { stdout } = await run('id', ['-u', 'mosquitto']);
      const { stdout: gid } = await run('id', ['-g', 'mosquitto']);
      ids = { uid: Number(stdout.trim()), gid: Number(gid.trim()) };
    } catch {
      return; // no such user: mosquitto keeps running as root
    }
    await chmod(this.dir, 0o755);
    const tls = join(this.dir, 'tls');
    for (const path of [this.dir, join(this.dir, 'data'), join(this.dir, 'data', 'dynamic-security.json'), this.configPath, tls, join(tls, 'server.crt'), join(tls, 'server.key')]) {
      await chown(path, ids.uid, ids.gid).catch(() => undefined);
    }
  }

  private async launch(): Promise<void> {
    this.proc = new ManagedProcess('mosquitto', this.binary, ['-c', this.configPath], this.processOptions);
    await waitListening(this.proc, this.host, this.port);
    if (this.tlsPort !== undefined) await waitListening(this.proc, this.host, this.tlsPort);
  }

  /** Graceful stop: mosquitto writes its persistence file on SIGTERM. */
  async stop(): Promise<void> {
    await this.proc?.stop('SIGTERM');
  }

  /** A crash: no chance to save anything since the last autosave. */
  async kill(): Promise<void> {
    await this.proc?.stop('SIGKILL');
  }

  /** Starts again on the same port with the same data directory. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.launch();
  }
}
