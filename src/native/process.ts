import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitForPort } from './ports.js';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A child process with its recent output kept (bounded) for error messages, and a stop that
 * escalates to SIGKILL so nothing outlives its owner.
 */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  private exit: Exit | undefined;
  private readonly lines: string[] = [];

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    options: SpawnOptions & { onLine?: (line: string) => void; keepLines?: number } = {},
  ) {
    const { onLine, keepLines = 200, ...spawnOptions } = options;
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue;
        this.lines.push(line);
        if (this.lines.length > keepLines) this.lines.shift();
        onLine?.(line);
      }
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.lines.push(`spawn failed: ${err.message}`);
        this.exit = { code: -1, signal: null };
        resolve(this.exit);
      });
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  output(): string {
    return this.lines.join('\n');
  }

  /** An Error describing an early exit, for use while waiting for the process to become ready. */
  exitedEarly(): Error | undefined {
    if (!this.exit) return undefined;
    return new Error(
      `${this.name} exited (code ${this.exit.code}, signal ${this.exit.signal}) before it was ready:\n${this.output()}`,
    );
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Sends `signal`, waits up to `graceMs`, then SIGKILL. Resolves with how it ended. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<Exit> {
    if (!this.running) return this.exit!;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export async function waitForLine(proc: ManagedProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  const found = proc.output().split('\n').find((line) => pattern.test(line));
  if (found) return found;
  const early = proc.exitedEarly();
  if (early) throw early;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${proc.name}: no line matching ${pattern} within ${timeoutMs} ms:\n${proc.output()}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      const line = chunk.toString('utf8').split('\n').find((l) => pattern.test(l));
      if (line) {
        cleanup();
        resolve(line);
      }
    };
    const onExit = () => {
      cleanup();
      reject(proc.exitedEarly() ?? new Error(`${proc.name} exited`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      proc.child.stdout?.off('data', onData);
      proc.child.stderr?.off('data', onData);
      proc.child.off('exit', onExit);
    };
    proc.child.stdout?.on('data', onData);
    proc.child.stderr?.on('data', onData);
    proc.child.once('exit', onExit);
  });
}

/** Resolves once `proc` accepts TCP connections on host:port; SIGKILLs it if it exits first or never does. */
export async function waitListening(proc: ManagedProcess, host: string, port: number, timeoutMs = 10_000): Promise<void> {
  try {
    await waitForPort(port, host, timeoutMs, () => proc.exitedEarly());
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
}

/** Polls `url` until it answers 2xx; fails at once if `proc` exits first, or after `timeoutMs`. */
export async function waitReady(proc: ManagedProcess, url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const early = proc.exitedEarly();
    if (early) throw early;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`${proc.name} not ready (${url}) after ${timeoutMs} ms:\n${proc.output()}`);
    }
    await sleep(100);
  }
}
