// npm run bench: the native stack and the textbook baseline under the same load, one scenario
// and target at a time, measured from /proc and by the clients themselves. See bench/README.md.
import { spawnSync } from 'node:child_process';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './harness.js';
import { hardOpenFilesLimit, machine, openFilesLimit } from './proc.js';
import { OPENINGS, openingsMarkdown, runOpenings } from './openings.js';
import { markdown, medianRuns, type RunResult } from './report.js';
import { readSettings, type Scenario, type Settings, type TargetName } from './scenarios.js';
import {
  Run,
  awaitEviction,
  closeClients,
  collectStats,
  connectDevices,
  log,
  measureWindow,
  openStreams,
  reportRun,
  stallSlowClients,
  startSystem,
  toResult,
  warmUp,
  watchRssPeak,
  type Devices,
  type Streams,
} from './steps.js';
import { serviceOverrides, type Target } from './target.js';
import { stormLine, stormWindow, type StormResult } from './storm.js';

// --- one scenario against one target -----------------------------------------------------

/** Every run in progress, so that a signal stops what it started. */
const runs = new Set<Run>();

/**
 * One run's frame: the system up, the devices connected, the streams open, then `measure`; every
 * stream, device and process it started is closed and stopped whatever happens.
 */
async function withSystem<T>(
  scenario: Scenario,
  targetName: TargetName,
  settings: Settings,
  measure: (run: Run, target: Target, devices: Devices, streams: Streams) => Promise<T>,
): Promise<T> {
  const run = new Run(scenario, targetName, settings);
  runs.add(run);
  try {
    const target = await startSystem(run);
    const devices = await connectDevices(run, target);
    const streams = await openStreams(run, target, devices);
    try {
      return await measure(run, target, devices, streams);
    } finally {
      await closeClients(streams.loads, devices.publisher);
    }
  } finally {
    await run.stop();
    runs.delete(run);
  }
}

function runOne(scenario: Scenario, targetName: TargetName, settings: Settings): Promise<RunResult> {
  return withSystem(scenario, targetName, settings, async (run, target, devices, streams) => {
    const rss = watchRssPeak(target, streams.rssIdle);
    try {
      const stalledAt = await stallSlowClients(run, streams.loads);
      await warmUp(run, devices.publisher);
      const window = await measureWindow(run, target, devices.publisher, streams.loads);
      const result = toResult(run, target, devices, streams, window, rss.peak());
      if (result.slowClients > 0 && targetName === 'project') {
        await awaitEviction(run, result, devices.publisher, target.appPort, stalledAt);
        result.dropped = (await collectStats(streams.loads)).closedFast;
        result.rssPeak = rss.peak();
      }
      reportRun(run, result, rss.peak());
      return result;
    } finally {
      rss.stop();
    }
  });
}

/** The storm scenario: streams that reconnect, one nginx restart in the window (bench/storm.ts). */
function runStorm(scenario: Scenario, targetName: TargetName, settings: Settings): Promise<StormResult> {
  return withSystem(scenario, targetName, settings, async (run, target, devices, streams) => {
    await warmUp(run, devices.publisher);
    const result = await stormWindow(run, target, devices.publisher, streams.loads, streams.streams);
    run.phase(stormLine(result));
    return result;
  });
}

// --- main ---------------------------------------------------------------------------------

/** Streams need file descriptors: re-run under the hard limit if the soft one is lower. */
function ensureOpenFiles(): void {
  const hard = hardOpenFilesLimit();
  const soft = openFilesLimit('self');
  if (soft >= Math.min(hard, 65_536) || process.env['BENCH_NOFILE_RAISED']) return;
  const limit = Number.isFinite(hard) ? String(hard) : '65536';
  const child = spawnSync('bash', ['-c', `ulimit -n ${limit} && exec "$@"`, 'bash', process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_NOFILE_RAISED: '1' },
  });
  process.exit(child.status ?? 1);
}

async function main(): Promise<void> {
  ensureOpenFiles();
  const resultsFile = join(ROOT, 'bench', 'RESULTS.md');
  // `openings` is a scenario of its own (bench/openings.ts): the service alone, at 100,000 devices.
  const requested = (process.env['BENCH_SCENARIOS'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const others = requested.filter((s) => s !== OPENINGS);
  const withOpenings = requested.length === 0 || others.length < requested.length;
  const settings = readSettings({ ...process.env, BENCH_SCENARIOS: others.join(',') }, resultsFile);
  if (requested.length > 0 && others.length === 0) settings.scenarios = [];
  const started = new Date();
  const m = machine();
  const knobs = ['BENCH_SCENARIOS', 'BENCH_TARGETS', 'BENCH_SCALE', 'BENCH_SECONDS', 'BENCH_WARMUP', 'BENCH_QOS', 'BENCH_ROUNDS']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${process.env[k]}`)
    .concat(Object.entries(serviceOverrides()).map(([k, v]) => `${k}=${v}`));
  const command = [...knobs, 'npm run bench'].join(' ');
  log(`bench: ${m.cores} cores (${m.model}), ${m.memGiB} GiB, node ${m.node}, open files ${openFilesLimit('self')}`);

  // A scenario with a reference (slow clients, the coalescing settings) needs that run too (the
  // same load without slow clients, with the default settings), once.
  const plan: [Scenario, TargetName][] = [];
  const add = (scenario: Scenario, t: TargetName) => {
    if (settings.targets.includes(t) && !plan.some(([s, x]) => s.name === scenario.name && x === t)) plan.push([scenario, t]);
  };
  for (const scenario of settings.scenarios) {
    const ref = scenario.reference;
    if (ref && !settings.scenarios.some((s) => s.name === ref)) {
      const base = readSettings({ ...process.env, BENCH_SCENARIOS: ref }, resultsFile).scenarios[0]!;
      for (const t of scenario.targets) add(base, t);
    }
    for (const t of scenario.targets) add(scenario, t);
  }

  // Several rounds: the whole plan again and again, so that the runs a ratio compares are taken
  // close together each time and a busy spell of the machine lands in one round, not in one target.
  const rounds: RunResult[][] = [];
  const storms: StormResult[] = [];
  for (let round = 1; round <= settings.rounds; round += 1) {
    if (settings.rounds > 1) log(`bench: round ${round} of ${settings.rounds}`);
    const runs: RunResult[] = [];
    for (const [scenario, target] of plan) {
      if (!scenario.storm) runs.push(await runOne(scenario, target, settings));
      else if (round === 1) storms.push(await runStorm(scenario, target, settings));
    }
    rounds.push(runs);
  }
  const results = medianRuns(rounds);

  let table = results.length + storms.length > 0 ? markdown(results, settings, m, command, started, storms, rounds) : '';
  if (withOpenings) table += `${table ? '\n' : ''}${openingsMarkdown(await runOpenings(), m, command, started)}`;
  log('');
  log(table);
  if (settings.record) {
    if (!existsSync(settings.resultsFile)) {
      await writeFile(settings.resultsFile, '# Benchmark results\n\nAppended by `npm run bench` (see bench/README.md); newest last.\n\n');
    }
    const previous = await readFile(settings.resultsFile, 'utf8');
    await appendFile(settings.resultsFile, `${previous.endsWith('\n\n') ? '' : '\n'}${table}\n`);
    log(`appended to ${settings.resultsFile}`);
  }
}

/**
 * One stop for everything, however many ask: a Ctrl-C also kills the load processes (same process
 * group), whose exit then fails the run and asks again; exiting on that second call left the
 * detached app replicas and redis-server running.
 */
let stopping: Promise<void> | undefined;
async function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    for (const run of runs) await run.stop().catch(() => undefined);
  })();
  await stopping;
  process.exit(code);
}
process.on('SIGINT', () => void stopAll(130));
process.on('SIGTERM', () => void stopAll(143));

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await stopAll(1);
  },
);
