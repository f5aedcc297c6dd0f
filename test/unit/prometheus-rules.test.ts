import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { PROJECT_FILES, PROJECT_ROOT } from '../../src/native/project.js';
import { parseYaml } from '../helpers/yaml.js';

// The alerting and recording rules in prometheus/rules/, checked by Debian's promtool: they parse,
// and the unit tests in prometheus/tests/ pass (each alert fires on a broken objective and stays
// quiet on a healthy case). Plus what promtool cannot know: the rules read only metrics the service
// really exports, and the monitoring profile loads them.

const run = promisify(execFile);
const PROMTOOL = '/usr/bin/promtool';
const INSTALL_HINT = 'promtool not found: install it with `apt-get install -y prometheus` (Debian/Ubuntu, as root), or `bash scripts/install-deps.sh`';
const RULES_DIR = join(PROJECT_ROOT, 'prometheus', 'rules');
const TESTS_DIR = join(PROJECT_ROOT, 'prometheus', 'tests');

interface Rule { alert?: string; record?: string; expr: string }
interface RuleFile { groups: { name: string; rules: Rule[] }[] }
interface AlertCase { alertname: string; exp_alerts: unknown[] }
interface TestFile { rule_files: string[]; tests: { name: string; alert_rule_test?: AlertCase[] }[] }

async function yamlFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.yml')).sort().map((f) => join(dir, f));
}

async function promtool(args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(PROMTOOL, args, { cwd: PROJECT_ROOT });
    return stdout + stderr;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error(INSTALL_HINT);
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
  }
}

async function rules(): Promise<Rule[]> {
  const all: Rule[] = [];
  for (const file of await yamlFiles(RULES_DIR)) {
    for (const group of ((await parseYaml(await readFile(file, 'utf8'))) as RuleFile).groups) all.push(...group.rules);
  }
  return all;
}

describe('prometheus/rules', () => {
  it('are valid rule files (promtool check rules)', async () => {
    const files = await yamlFiles(RULES_DIR);
    expect(files.length).toBeGreaterThan(0);
    expect(await promtool(['check', 'rules', ...files])).toMatch(/SUCCESS/);
  });

  it('pass their unit tests (promtool test rules)', async () => {
    const files = await yamlFiles(TESTS_DIR);
    expect(files.length).toBeGreaterThan(0);
    const out = await promtool(['test', 'rules', ...files]);
    expect(out).not.toMatch(/FAILED/);
    expect(out).toMatch(/SUCCESS/);
  }, 60_000);

  it('give every alert a case where it fires and one where it stays quiet', async () => {
    const alerts = (await rules()).flatMap((r) => (r.alert ? [r.alert] : []));
    expect(alerts.length).toBeGreaterThanOrEqual(9);
    const firing = new Set<string>();
    const quiet = new Set<string>();
    for (const file of await yamlFiles(TESTS_DIR)) {
      const tests = (await parseYaml(await readFile(file, 'utf8'))) as TestFile;
      for (const test of tests.tests) {
        for (const c of test.alert_rule_test ?? []) (c.exp_alerts.length > 0 ? firing : quiet).add(c.alertname);
      }
    }
    expect(alerts.filter((a) => !firing.has(a)), 'alerts never seen firing').toEqual([]);
    expect(alerts.filter((a) => !quiet.has(a)), 'alerts never seen quiet').toEqual([]);
  });

  it('read only metrics the service exports (or Prometheus\'s own `up`)', async () => {
    const exported = new Set<string>();
    for (const metric of await createMetrics().registry.getMetricsAsJSON()) {
      exported.add(metric.name);
      if (String(metric.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(metric.name + s);
    }
    const recorded = new Set((await rules()).flatMap((r) => (r.record ? [r.record] : [])));
    const read = new Set<string>();
    for (const rule of await rules()) {
      // What is left once label matchers, grouping clauses, ranges and function calls are gone.
      const expr = rule.expr
        .replace(/\{[^}]*\}/g, ' ')
        .replace(/\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
        .replace(/\[[^\]]*\]/g, ' ');
      for (const m of expr.matchAll(/(?<![\w:])[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()/g)) {
        if (!['and', 'or', 'unless'].includes(m[0])) read.add(m[0]);
      }
    }
    const unknown = [...read].filter((n) => !exported.has(n) && !recorded.has(n) && n !== 'up');
    expect(unknown).toEqual([]);
    expect([...read]).toEqual(expect.arrayContaining(['mqtt_connected', 'sse_disconnects_total', 'device_to_client_latency_seconds_bucket']));
  });

  it('are loaded by prometheus.yml from the directory the compose file mounts', async () => {
    const config = (await parseYaml(await readFile(PROJECT_FILES.prometheusConf, 'utf8'))) as { rule_files?: string[] };
    expect(config.rule_files).toEqual(['rules/*.yml']);
    expect(await readFile(PROJECT_FILES.composeFile, 'utf8')).toContain('- ./prometheus/rules:/etc/prometheus/rules:ro');
  });
});
