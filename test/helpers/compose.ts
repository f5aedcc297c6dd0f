// One `docker compose` project of a test run on the private engine (src/native/docker.ts): the
// project's own docker-compose.yml, unmodified, with the run's variables in an env file of its own
// (a developer's .env never leaks in).
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { DOCKER_CLI, type Engine } from '../../src/native/docker.js';
import { PROJECT_FILES, PROJECT_ROOT } from '../../src/native/project.js';

const run = promisify(execFile);

export interface Ran {
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Container {
  Name: string;
  Service: string;
  State: string;
  Health: string;
  ExitCode: number;
  Publishers: { URL: string; TargetPort: number; PublishedPort: number; Protocol: string }[] | null;
}

export class ComposeProject {
  constructor(
    readonly engine: Engine,
    readonly name: string,
    private readonly envFile: string,
  ) {}

  static async create(engine: Engine, name: string, envFile: string, vars: Record<string, string>): Promise<ComposeProject> {
    await writeFile(envFile, Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    return new ComposeProject(engine, name, envFile);
  }

  private args(args: readonly string[]): string[] {
    return ['compose', '-p', this.name, '--project-directory', PROJECT_ROOT, '-f', PROJECT_FILES.composeFile,
      '--env-file', this.envFile, ...args];
  }

  // The classic builder: `up --build` is then answered from the cache buildAppImage filled with the
  // host's network; no buildx plugin is needed.
  private env(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
    return this.engine.env({ DOCKER_BUILDKIT: '0', ...overrides });
  }

  /**
   * Runs `docker compose …`; rejects with its output when it exits non-zero. `overrides` are shell
   * variables for this call, which take precedence over the env file's, as a user's shell would.
   */
  async compose(args: readonly string[], timeoutMs = 5 * 60_000, overrides: Record<string, string> = {}): Promise<Ran> {
    const started = Date.now();
    try {
      const { stdout, stderr } = await run(DOCKER_CLI, this.args(args), {
        env: this.env(overrides), cwd: PROJECT_ROOT, timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024,
      });
      return { stdout, stderr, ms: Date.now() - started };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string; code?: number | string };
      throw new Error(`docker compose ${args.join(' ')} failed (${e.code}):\n${(e.stdout ?? '').slice(-3000)}\n${(e.stderr ?? e.message).slice(-6000)}`);
    }
  }

  /** `docker compose exec -T [--index N] SERVICE …`, with `input` on its standard input. */
  exec(service: string, command: readonly string[], options: { input?: string; index?: number; timeoutMs?: number } = {}): Promise<Ran> {
    const { input, index, timeoutMs = 60_000 } = options;
    const started = Date.now();
    const which = index === undefined ? [] : ['--index', String(index)];
    return new Promise((resolve, reject) => {
      const child = spawn(DOCKER_CLI, this.args(['exec', '-T', ...which, service, ...command]), {
        env: this.env(), cwd: PROJECT_ROOT, stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString('utf8'); });
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString('utf8'); });
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve({ stdout, stderr, ms: Date.now() - started });
        else reject(new Error(`exec in ${service} (${command.join(' ')}) exited ${code}:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
      });
      child.stdin.end(input ?? '');
    });
  }

  /** Every container of the project, running or not. */
  async containers(): Promise<Container[]> {
    const { stdout } = await this.compose(['ps', '--all', '--format', 'json'], 60_000);
    const text = stdout.trim();
    if (text === '') return [];
    // One object per line (compose >= 2.21) or one array (older).
    return text.startsWith('[') ? (JSON.parse(text) as Container[]) : text.split('\n').map((l) => JSON.parse(l) as Container);
  }

  /** GET /metrics of one app container (replica `index`, from 1), from inside it (nginx does not serve /metrics). */
  async appMetrics(index = 1): Promise<string> {
    const script = "fetch('http://127.0.0.1:3000/metrics').then(r=>r.text()).then(t=>process.stdout.write(t),()=>process.exit(1))";
    return (await this.exec('app', ['node', '-e', script], { index })).stdout;
  }

  /** An HTTP GET from inside the prometheus container (busybox wget), as text. */
  async prometheusGet(path: string): Promise<string> {
    return (await this.exec('prometheus', ['wget', '-q', '-O', '-', `http://127.0.0.1:9090${path}`])).stdout;
  }
}

/** The value of one sample, e.g. sample(text, 'mqtt_messages_received_total{kind="telemetry"}'). */
export function sample(metrics: string, series: string): number | undefined {
  const line = metrics.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
