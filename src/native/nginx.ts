import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { findBinary } from './mosquitto.js';
import { ManagedProcess, waitListening } from './process.js';
import { freePort } from './ports.js';
import { PROJECT_FILES } from './project.js';
import { ensureCertificates, type TlsPaths } from '../tls/certs.js';

const run = promisify(execFile);

const NGINX_INSTALL_HINT =
  'nginx not found: install it with `apt-get install -y nginx` (Debian/Ubuntu, as root)';
const ENVSUBST_INSTALL_HINT =
  'envsubst not found: install it with `apt-get install -y gettext-base` (Debian/Ubuntu, as root)';

/** The template's tunables and their defaults (docker-compose.yml uses the same defaults). */
const TEMPLATE_DEFAULTS = {
  SSE_PER_ADDRESS_LIMIT: '100',
  NGINX_SSE_READ_TIMEOUT: '1h',
} as const;

export type TemplateVars = Record<string, string>;

/** nginx's resolver asks DNS only, never /etc/hosts, where localhost lives: an address instead. */
function byAddress(hostPort: string): string {
  return hostPort.replace(/^localhost:/, '127.0.0.1:');
}

/**
 * APP_UPSTREAM for the template's `proxy_pass http://$app_upstream`: host:port, or a Unix
 * socket as `unix:/path:` (the trailing colon ends the path in proxy_pass's URL).
 */
export function upstreamValue(app: string): string {
  if (!app.startsWith('unix:')) return byAddress(app);
  return app.endsWith(':') ? app : `${app}:`;
}

/** A `server` line's address in an upstream{} block: host:port, or `unix:/path` (no colon). */
function serverAddress(app: string): string {
  if (!app.startsWith('unix:')) return byAddress(app);
  return app.replace(/:$/, '');
}

/** The upstream group of the app's replicas on one host (see NginxOptions.appServers). */
const APP_GROUP = 'app_replicas';

export interface NginxOptions {
  /**
   * The certificate nginx serves (ssl_certificate/ssl_certificate_key) and the CA clients trust;
   * default: a local CA and certificate made in the instance directory (src/tls/certs.ts).
   */
  tls?: TlsPaths;
  /**
   * The app: host:port, e.g. `127.0.0.1:3000` (compose over TCP: `app:3000`), or its Unix
   * socket, `unix:/path/app.sock` (the service's SOCKET_PATH; nginx's workers must be able to
   * connect: SOCKET_GROUP).
   */
  appUpstream: string;
  /**
   * Several replicas on one host (host:port or `unix:/path` each): an upstream group of them, which the
   * template's `proxy_pass http://$app_upstream` finds by name before it asks any resolver,
   * and uses in turn (a replica that refuses is passed over). Replaces appUpstream.
   */
  appServers?: readonly string[];
  /** The dashboard's files; default: the repository's web/. */
  webRoot?: string;
  /** The HTTPS port (HTTP/2); default a free one. */
  port?: number;
  /** The plain HTTP port, which only redirects to HTTPS; default a free one. */
  httpPort?: number;
  host?: string;
  /** Overrides of TEMPLATE_DEFAULTS (or any other template variable). */
  vars?: Partial<TemplateVars>;
  /** Instance (prefix) directory; default: a new temporary one. */
  dir?: string;
  /** The access log file; default: access.log in the instance directory. */
  accessLog?: string;
  /** Every line nginx writes to stderr (its error log). */
  onLine?: (line: string) => void;
  /** Own process group, so a terminal's Ctrl-C reaches only the owner, which stops it in order. */
  detached?: boolean;
}

/** The `${NAME}` variables a template uses, in order of first use. */
export function templateVariables(template: string): string[] {
  return [...new Set([...template.matchAll(/\$\{([A-Z][A-Z0-9_]*)\}/g)].map((m) => m[1]!))];
}

/**
 * Renders the template the way the nginx image's entrypoint does: envsubst restricted to the
 * template's own variables (the image restricts it with NGINX_ENVSUBST_FILTER), so nginx's
 * lower-case `$variables` are left alone. Every variable must have a value.
 */
async function renderTemplate(template: string, vars: TemplateVars): Promise<string> {
  const names = templateVariables(template);
  const missing = names.filter((name) => vars[name] === undefined || vars[name] === '');
  if (missing.length > 0) throw new Error(`nginx template: no value for ${missing.join(', ')}`);
  const envsubst = await findBinary('envsubst', ENVSUBST_INSTALL_HINT);
  return new Promise((resolve, reject) => {
    const child = spawn(envsubst, [names.map((n) => `\${${n}}`).join(' ')], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...vars },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`envsubst exited with ${code}: ${Buffer.concat(err).toString('utf8')}`));
    });
    child.stdin.end(template);
  });
}

/**
 * Debian's nginx with the project's nginx/nginx.conf and nginx/templates/default.conf.template,
 * in a prefix directory of its own:
 *
 *   nginx.conf               the project's, verbatim
 *   mime.types               copied from /etc/nginx (the image has its own next to nginx.conf)
 *   conf.d/default.conf      the template rendered with envsubst (the variables: start() below)
 *   conf.d/native-paths.conf temp paths inside the prefix (the image's defaults are built in)
 *   tls/                     the certificate, when none is given (NginxOptions.tls)
 *
 * Started as root, the workers run as `nobody` (nginx's default without a `user` line), so the
 * prefix is made traversable and the temp directories are created by nginx for that user.
 */
export class Nginx {
  private proc: ManagedProcess | undefined;
  private vars: TemplateVars;

  private constructor(
    readonly binary: string,
    readonly dir: string,
    readonly host: string,
    readonly port: number,
    readonly httpPort: number,
    readonly tls: TlsPaths,
    vars: TemplateVars,
    private readonly processOptions: { onLine?: (line: string) => void; detached?: boolean },
  ) {
    this.vars = vars;
  }

  /** The site: HTTPS, HTTP/2 offered (clients trust `tls.caCert`). */
  get url(): string {
    return `https://${this.host}:${this.port}`;
  }

  /** Plain HTTP: redirects to `url`. */
  get httpUrl(): string {
    return `http://${this.host}:${this.httpPort}`;
  }

  private get configPath(): string {
    return join(this.dir, 'nginx.conf');
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Resolves when nginx exits, for whatever reason. */
  get exited(): Promise<unknown> {
    return this.proc?.exited ?? Promise.resolve();
  }

  /** nginx's recent stderr lines (its error log). */
  output(): string {
    return this.proc?.output() ?? '';
  }

  static async start(options: NginxOptions): Promise<Nginx> {
    const binary = await findBinary('nginx', NGINX_INSTALL_HINT);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? (await freePort(host));
    const httpPort = options.httpPort ?? (await freePort(host));
    if (httpPort === port) throw new Error(`nginx: the HTTPS and the plain HTTP port are both ${port}`);
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'nginx-')));
    const tls = options.tls ?? (await ensureCertificates({ dir: join(dir, 'tls') }));
    const vars: TemplateVars = {
      ...TEMPLATE_DEFAULTS,
      NGINX_RESOLVER: systemResolver(),
      ...(options.vars as TemplateVars | undefined),
      NGINX_LISTEN: `${host}:${httpPort}`,
      NGINX_LISTEN_TLS: `${host}:${port}`,
      NGINX_HTTPS_PORT: String(port),
      NGINX_TLS_CERT: tls.cert,
      NGINX_TLS_KEY: tls.key,
      APP_UPSTREAM: options.appServers ? APP_GROUP : upstreamValue(options.appUpstream),
      WEB_ROOT: options.webRoot ?? PROJECT_FILES.webRoot,
      NGINX_ACCESS_LOG: options.accessLog ?? join(dir, 'access.log'),
    };
    const processOptions = {
      ...(options.onLine ? { onLine: options.onLine } : {}),
      ...(options.detached ? { detached: true } : {}),
    };
    if (userInfo().uid === 0) await checkReadableByWorkers(vars['WEB_ROOT']!);
    const nginx = new Nginx(binary, dir, host, port, httpPort, tls, vars, processOptions);
    await nginx.prepare(options.appServers);
    await nginx.test();
    await nginx.launch();
    return nginx;
  }

  private async prepare(appServers: readonly string[] | undefined): Promise<void> {
    // mkdtemp makes the directory 0700; the workers (nobody) must reach the temp paths in it.
    await chmod(this.dir, 0o755);
    await mkdir(join(this.dir, 'conf.d'), { recursive: true });
    await mkdir(join(this.dir, 'temp'), { recursive: true });
    await copyFile(PROJECT_FILES.nginxConf, this.configPath);
    await copyFile('/etc/nginx/mime.types', join(this.dir, 'mime.types')).catch((err: unknown) => {
      throw new Error(`cannot copy /etc/nginx/mime.types (${String(err)}); ${NGINX_INSTALL_HINT}`);
    });
    const temp = (name: string) => join(this.dir, 'temp', name);
    await writeFile(
      join(this.dir, 'conf.d', 'native-paths.conf'),
      [
        '# Written by src/native/nginx.ts: temp paths inside this prefix instead of the built-in ones.',
        `client_body_temp_path ${temp('client_body')};`,
        `proxy_temp_path ${temp('proxy')};`,
        `fastcgi_temp_path ${temp('fastcgi')};`,
        `uwsgi_temp_path ${temp('uwsgi')};`,
        `scgi_temp_path ${temp('scgi')};`,
        '',
      ].join('\n'),
    );
    if (appServers) {
      // max_fails=0: a replica that refuses (restarting) is passed over per request
      // (proxy_next_upstream error), never marked down. Marked down for fail_timeout, every
      // replica of a rolling restart was down at once, and the retries of the clients answered
      // "no live upstreams" kept them so: measured, 200 streams refused for 20 s with all three up.
      const servers = appServers.map((s) => `    server ${serverAddress(s)} max_fails=0;`);
      await writeFile(join(this.dir, 'conf.d', 'replicas.conf'), ['# Written by src/native/nginx.ts: the replicas of the app on this host.', `upstream ${APP_GROUP} {`, ...servers, '}', ''].join('\n'));
    }
    await this.render();
  }

  private async render(): Promise<void> {
    const template = await readFile(PROJECT_FILES.nginxTemplate, 'utf8');
    await writeFile(join(this.dir, 'conf.d', 'default.conf'), await renderTemplate(template, this.vars));
  }

  private args(): string[] {
    return ['-p', `${this.dir}/`, '-c', this.configPath, '-e', 'stderr'];
  }

  private globals(): string {
    return `daemon off; pid ${join(this.dir, 'nginx.pid')};`;
  }

  /** `nginx -t` on the rendered configuration; throws with nginx's own explanation. */
  async test(): Promise<void> {
    try {
      await run(this.binary, [...this.args(), '-g', this.globals(), '-t']);
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? String(err);
      throw new Error(`nginx rejected its configuration (${this.dir}):\n${stderr}`);
    }
  }

  private async launch(): Promise<void> {
    this.proc = new ManagedProcess('nginx', this.binary, [...this.args(), '-g', this.globals()], this.processOptions);
    await waitListening(this.proc, this.host, this.port);
    await waitListening(this.proc, this.host, this.httpPort);
  }

  /** The master's children (its workers), as pid strings. */
  private workers(): string[] {
    const pid = this.proc?.pid;
    if (pid === undefined) return [];
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean);
    } catch {
      return [];
    }
  }

  /** Polls the workers until `done` says so; fails when the master dies or after 10 s. */
  private async waitForWorkers(done: (pids: string[]) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (done(this.workers())) return;
      if (!this.running) throw new Error(`nginx exited ${what}:\n${this.output()}`);
      if (Date.now() > deadline) throw new Error(`nginx started no new workers within 10 s ${what}:\n${this.output()}`);
      await sleep(25);
    }
  }

  /**
   * Re-renders the template (with `vars` merged in, e.g. a new APP_UPSTREAM), checks it with
   * `nginx -t`, and reloads: new workers take new connections, old ones finish their streams
   * (up to worker_shutdown_timeout). Resolves once the new workers are running.
   */
  async reload(vars: Partial<TemplateVars> = {}): Promise<void> {
    const previous = this.vars;
    this.vars = { ...this.vars, ...(vars as TemplateVars) };
    try {
      await this.render();
      await this.test();
    } catch (err) {
      this.vars = previous;
      await this.render();
      throw err;
    }
    const before = new Set(this.workers());
    this.proc?.signal('SIGHUP');
    await this.waitForWorkers((now) => now.some((pid) => !before.has(pid)), 'after SIGHUP');
  }

  /**
   * A proxy crash: SIGKILLs every worker, which cuts every open connection at once; the master
   * starts new workers. Resolves once they run.
   */
  async killWorkers(): Promise<void> {
    const before = new Set(this.workers());
    for (const pid of before) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await this.waitForWorkers((now) => now.length > 0 && now.every((pid) => !before.has(pid)), 'after its workers were killed');
  }

  /** Fast shutdown: open streams are cut (browsers reconnect). No worker is left behind. */
  async stop(): Promise<void> {
    const workers = this.workers().map(Number);
    await this.proc?.stop('SIGTERM');
    // Workers exit with their master; if it had to be SIGKILLed, they would not.
    for (const pid of workers) {
      try {
        // Only if that pid is still one of our nginx processes (pids are reused).
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('nginx')) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/**
 * The first nameserver of /etc/resolv.conf, as nginx's `resolver` wants it (IPv6 in brackets);
 * 127.0.0.1 when there is none. Only consulted when APP_UPSTREAM names a host, not an address.
 */
export function systemResolver(resolvConf = '/etc/resolv.conf'): string {
  let text = '';
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    // no resolver configured
  }
  // nginx takes no IPv6 zone (fe80::1%eth0): such a server is skipped.
  const servers = [...text.matchAll(/^\s*nameserver\s+([0-9A-Fa-f.:]+)(%\S+)?\s*(?:[#;].*)?$/gm)].filter((m) => !m[2]).map((m) => m[1]!);
  const server = servers[0];
  if (!server) return '127.0.0.1';
  return server.includes(':') ? `[${server}]` : server;
}

const NOBODY = 65_534;

/**
 * The group nginx's workers run in natively: started as root they run as nobody (nogroup);
 * otherwise as the user who started nginx, whose own group needs no grant (undefined).
 */
export function workerGroup(): number | undefined {
  return userInfo().uid === 0 ? NOBODY : undefined;
}

/**
 * A new directory for services' sockets: nginx's workers may pass through it (0711) but not list
 * it; each socket's own mode and group say who may connect. Under the temp directory, short: a
 * socket's path holds at most 107 bytes. The caller removes it.
 */
export async function socketDirectory(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o711);
  return dir;
}

/** The service's environment for a socket at `path` that this host's nginx workers may open. */
export function socketEnv(path: string): Record<string, string> {
  const group = workerGroup();
  return { SOCKET_PATH: path, ...(group === undefined ? {} : { SOCKET_GROUP: String(group) }) };
}

/** How nginx names a service: its socket when it has one (`unix:/path`), else its TCP port on this host. */
export function appAddress(app: { port: number; socket?: string | undefined }): string {
  return app.socket ? `unix:${app.socket}` : `127.0.0.1:${app.port}`;
}

/**
 * Started as root, nginx's workers run as `nobody`: a web root under a private directory (a
 * home directory with mode 0700, say) would answer every page with 403. Say so up front.
 */
async function checkReadableByWorkers(webRoot: string): Promise<void> {
  try {
    await run('test', ['-r', webRoot, '-a', '-x', webRoot], { uid: NOBODY, gid: NOBODY });
  } catch {
    throw new Error(
      `nginx's workers run as nobody and cannot read ${webRoot}: make it and every parent directory world-readable (chmod o+rx), or pass another webRoot`,
    );
  }
}
