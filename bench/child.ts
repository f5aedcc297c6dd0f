// A forked bench process (load.ts, publisher.ts) spoken to over IPC: one request, one typed reply.
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { BENCH_OUT } from './harness.js';
import type { LoadReply, LoadRequest, PublisherReply, PublisherRequest } from './protocol.js';

export class Child<Req, Rep extends { type: string }> {
  readonly proc: ChildProcess;
  private readonly waiting: { type: string; resolve: (r: Rep) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | undefined;

  constructor(readonly name: string, file: string) {
    this.proc = fork(join(BENCH_OUT, file), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (message: Rep) => {
      if (message.type === 'error') {
        this.fail(new Error(`${name}: ${(message as unknown as { message: string }).message}`));
        return;
      }
      const i = this.waiting.findIndex((w) => w.type === message.type);
      if (i >= 0) this.waiting.splice(i, 1)[0]!.resolve(message);
    });
    this.proc.on('exit', (code, signal) => this.fail(new Error(`${name} exited (code ${code}, signal ${signal})`)));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  request<T extends Rep['type']>(message: Req, reply: T, timeoutMs: number): Promise<Extract<Rep, { type: T }>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no "${reply}" within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({
        type: reply,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r as Extract<Rep, { type: T }>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send(message as object);
    });
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

export type Load = Child<LoadRequest, LoadReply>;
export type Publisher = Child<PublisherRequest, PublisherReply>;
