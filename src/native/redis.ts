import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './mosquitto.js';
import { ManagedProcess, waitForLine, waitListening } from './process.js';
import { freePort } from './ports.js';
import { PROJECT_FILES } from './project.js';

export const REDIS_INSTALL_HINT =
  'redis-server not found: install it with `apt-get install -y redis-server` (Debian/Ubuntu, as root)';

export interface RedisOptions {
  port?: number;
  host?: string;
  /** Data directory (AOF under appendonlydir/); a fresh temporary one by default. */
  dir?: string;
  /** Every line the server logs (stdout), e.g. to a log file. */
  onLine?: (line: string) => void;
  /** Own process group, so a terminal's Ctrl-C reaches only the owner, which stops it in order. */
  detached?: boolean;
}

/**
 * The project's redis/redis.conf, the very file docker-compose.yml mounts (append-only file
 * fsynced once a second, noeviction, no RDB snapshots), with only what differs natively given
 * after it: a loopback address, a free port, the instance's own directory, and the foreground
 * with logs on stdout, which the runner relies on whatever the file says.
 */
export function redisArgs(host: string, port: number, dir: string): string[] {
  return [
    // redis-server takes a config file only as its first argument.
    PROJECT_FILES.redisConf,
    '--bind', host,
    '--port', String(port),
    '--dir', dir,
    '--daemonize', 'no',
    '--logfile', '',
  ];
}

/**
 * Debian's redis-server on its own port and directory, started like the native Mosquitto.
 * `restart()` keeps the directory (the AOF brings the data back); `restart({ wipe: true })`
 * empties it first, as a Redis that lost its disk.
 */
export class Redis {
  private proc: ManagedProcess | undefined;

  private constructor(
    readonly binary: string,
    readonly dir: string,
    readonly host: string,
    readonly port: number,
    private readonly processOptions: { onLine?: (line: string) => void; detached?: boolean },
  ) {}

  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  /** Where Redis 7 keeps the multi-part AOF (manifest, base and incremental files). */
  get aofDir(): string {
    return join(this.dir, 'appendonlydir');
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  output(): string {
    return this.proc?.output() ?? '';
  }

  static async start(options: RedisOptions = {}): Promise<Redis> {
    const binary = await findBinary('redis-server', REDIS_INSTALL_HINT);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? (await freePort(host));
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'redis-')));
    await mkdir(dir, { recursive: true });
    const processOptions: { onLine?: (line: string) => void; detached?: boolean } = {};
    if (options.onLine) processOptions.onLine = options.onLine;
    if (options.detached) processOptions.detached = true;
    const server = new Redis(binary, dir, host, port, processOptions);
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    this.proc = new ManagedProcess('redis-server', this.binary, redisArgs(this.host, this.port, this.dir), this.processOptions);
    await waitListening(this.proc, this.host, this.port);
    // It listens while it loads its append-only file, answering LOADING to every command until done.
    await waitForLine(this.proc, /Ready to accept connections/, 30_000);
  }

  /** Graceful stop: on SIGTERM redis fsyncs the AOF before it exits. */
  async stop(): Promise<void> {
    await this.proc?.stop('SIGTERM');
  }

  /** A crash: up to the last second of writes may be missing from the AOF. */
  async kill(): Promise<void> {
    await this.proc?.stop('SIGKILL');
  }

  /** Starts again on the same port; with `wipe` on an emptied directory (all data lost). */
  async restart(options: { wipe?: boolean } = {}): Promise<void> {
    if (this.running) await this.stop();
    if (options.wipe) {
      await rm(this.dir, { recursive: true, force: true });
      await mkdir(this.dir, { recursive: true });
    }
    await this.launch();
  }
}
