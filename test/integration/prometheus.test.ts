import { access, constants, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, waitForPort } from '../../src/native/ports.js';
import { ManagedProcess } from '../../src/native/process.js';
import { PROJECT_FILES } from '../../src/native/project.js';
import { startStack, type Stack } from '../../src/native/stack.js';
import { SseCollector } from '../helpers/sse-client.js';
import { eventually } from '../helpers/wait.js';
import { parseYaml } from '../helpers/yaml.js';

// Debian's Prometheus with the project's prometheus/prometheus.yml, scraping the built service
// (`npm run build` first) of the native stack. Only the target changes: compose finds the app
// replicas through DNS (`app`, port 3000); here it is the service's local port. The scrape interval
// is shortened so the test does not wait 15 s per sample.

const INSTALL_HINT = 'prometheus not found: install it with `apt-get install -y prometheus` (Debian/Ubuntu, as root)';

interface ScrapeConfig {
  job_name: string;
  metrics_path?: string;
  scrape_interval?: string;
  dns_sd_configs?: { names: string[]; type?: string; port: number }[];
  static_configs?: { targets: string[] }[];
}
interface PrometheusConfig {
  global?: Record<string, unknown>;
  scrape_configs: ScrapeConfig[];
}

let stack: Stack;
let prometheus: ManagedProcess;
let prometheusUrl: string;
let dir: string;

/** The project's config with the gateway job pointed at `target`; everything else as written. */
function localConfig(config: PrometheusConfig, target: string, selfTarget: string): PrometheusConfig {
  return {
    ...config,
    global: { ...config.global, scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    scrape_configs: config.scrape_configs.map((job) => {
      if (job.job_name === 'gateway') {
        const { dns_sd_configs: _dns, ...rest } = job;
        return { ...rest, static_configs: [{ targets: [target] }] };
      }
      if (job.job_name === 'prometheus') return { ...job, static_configs: [{ targets: [selfTarget] }] };
      return job;
    }),
  };
}

async function query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await response.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  expect(body.status).toBe('success');
  return body.data.result;
}

beforeAll(async () => {
  const binary = '/usr/bin/prometheus';
  await access(binary, constants.X_OK).catch(() => {
    throw new Error(INSTALL_HINT);
  });
  stack = await startStack({
    // Sign-in has its own tests (access.test.ts, the dashboard e2e); these are about streaming.
    auth: false,
    simulator: false,
    serviceEnv: { LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '200' },
    logDir: join(tmpdir(), `prometheus-test-logs-${process.pid}`),
  });
  dir = await mkdtemp(join(tmpdir(), 'prometheus-'));
  const port = await freePort();
  prometheusUrl = `http://127.0.0.1:${port}`;
  const project = (await parseYaml(await readFile(PROJECT_FILES.prometheusConf, 'utf8'))) as PrometheusConfig;
  // Prometheus reads YAML, and JSON is YAML.
  const config = localConfig(project, `127.0.0.1:${stack.ports.service}`, `127.0.0.1:${port}`);
  await writeFile(join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2));
  prometheus = new ManagedProcess('prometheus', binary, [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ]);
  await waitForPort(port, '127.0.0.1', 20_000, () => prometheus.exitedEarly());
  await eventually(async () => (await fetch(`${prometheusUrl}/-/ready`).catch(() => undefined))?.ok, 'prometheus ready', 20_000);
}, 60_000);

afterAll(async () => {
  await prometheus?.stop();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('Prometheus with the project config', () => {
  it('keeps the project scrape job (path, job name) and only swaps the DNS target for the local port', async () => {
    const written = JSON.parse(await readFile(join(dir, 'prometheus.yml'), 'utf8')) as PrometheusConfig;
    const job = written.scrape_configs.find((j) => j.job_name === 'gateway');
    expect(job).toEqual({ job_name: 'gateway', metrics_path: '/metrics', static_configs: [{ targets: [`127.0.0.1:${stack.ports.service}`] }] });
  });

  it('scrapes the service: the gateway target is up', async () => {
    await eventually(async () => (await query('up{job="gateway"}'))[0]?.value[1] === '1', 'up{job="gateway"} == 1', 15_000, () => prometheus.output().split('\n').slice(-3));
  });

  it('reads sse_clients through its HTTP query API as streams open through nginx', async () => {
    const clients = [new SseCollector(stack.urls.events), new SseCollector(stack.urls.events)];
    try {
      for (const client of clients) await client.waitFor((e) => e.type === 'snapshot', 'snapshot');
      const result = await eventually(async () => {
        const r = await query('sse_clients{job="gateway"}');
        return r[0]?.value[1] === '2' ? r : undefined;
      }, 'sse_clients == 2', 15_000);
      expect(result[0]?.metric).toMatchObject({ job: 'gateway', instance: `127.0.0.1:${stack.ports.service}` });
    } finally {
      for (const client of clients) client.close();
    }
    await eventually(async () => (await query('sse_clients{job="gateway"}'))[0]?.value[1] === '0', 'sse_clients back to 0', 15_000);
  });
});
