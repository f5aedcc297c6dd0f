// What the components of the native stack share while it runs: one log file each, the status
// and crash callbacks, and what to undo, in reverse order, when it stops or fails to start.
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { ManagedProcess } from './process.js';

export class Supervisor {
  /** Components being stopped on purpose: their exit is no crash. */
  readonly intentional = new Set<string>();
  private stopping = false;
  private readonly cleanups: (() => Promise<void>)[] = [];
  private readonly logs: WriteStream[] = [];

  constructor(
    readonly logDir: string,
    readonly status: (line: string) => void,
    private readonly onCrash: ((component: string, detail: string) => void) | undefined,
  ) {}

  logFile(name: string): string {
    return join(this.logDir, `${name}.log`);
  }

  logTo(name: string): (line: string) => void {
    const stream = createWriteStream(this.logFile(name), { flags: 'w' });
    this.logs.push(stream);
    return (line: string) => stream.write(`${line}\n`);
  }

  crash(name: string, detail: string): void {
    if (!this.stopping && !this.intentional.has(name)) this.onCrash?.(name, detail);
  }

  /** Reports the process's exit as a crash unless the stack is stopping or stopped it. */
  watch(name: string, proc: ManagedProcess): void {
    void proc.exited.then((exit) => {
      this.crash(name, `exited (code ${exit.code}, signal ${exit.signal}); see ${this.logFile(name)}`);
    });
  }

  onStop(cleanup: () => Promise<void>): void {
    this.cleanups.push(cleanup);
  }

  async stopAll(): Promise<void> {
    this.stopping = true;
    for (const cleanup of this.cleanups.splice(0).reverse()) {
      await cleanup().catch(() => undefined);
    }
    await Promise.all(this.logs.map((s) => new Promise((resolve) => s.end(resolve))));
  }
}
