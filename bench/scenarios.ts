// What the benchmark runs, and the knobs for a quicker run while developing.

/**
 * project: the built service, embedded (no REDIS_URL), nginx reaching it over its Unix socket as
 * the stack and compose run it; project-tcp: the same over TCP loopback (the hop's cost);
 * baseline: the textbook bridge (TCP); redis: the built service with the shared log on a native
 * redis-server (REDIS_URL), over its socket; redis-tcp: the same over TCP loopback (compose's
 * --scale replicas); nchan: the reference for fan-out inside the proxy (nginx's nchan module, fed
 * over its HTTP publisher endpoint).
 */
export type TargetName = 'project' | 'project-tcp' | 'baseline' | 'redis' | 'redis-tcp' | 'nchan';
export const TARGET_NAMES: readonly TargetName[] = ['project', 'project-tcp', 'baseline', 'redis', 'redis-tcp', 'nchan'];
/** The targets on the shared log (a redis-server beside them). */
export const isShared = (t: TargetName): boolean => t === 'redis' || t === 'redis-tcp';
const ALL: TargetName[] = ['project', 'project-tcp', 'baseline', 'redis', 'nchan'];

export interface Scenario {
  name: string;
  /** One line for the report. */
  what: string;
  clients: number;
  devices: number;
  /** Telemetry messages per second over all devices. */
  rate: number;
  /** Share of clients that stop reading when the warm-up starts. */
  slowFraction: number;
  targets: TargetName[];
  /** Extra service environment for this scenario (the service's targets, not the baseline). */
  appEnv: Record<string, string>;
  /** Replicas of the service behind nginx's upstream group (the redis and redis-tcp targets only; default 1). */
  replicas?: number;
  /** The scenario whose project run is the "without slow clients" reference. */
  reference?: string;
  /**
   * A reconnect storm: clients reconnect as EventSource does, and nginx is restarted once the
   * window is under way, cutting every stream at once (bench/storm.ts).
   */
  storm?: boolean;
}

export const SCENARIOS: readonly Scenario[] = [
  { name: 'broadcast', what: '1 device, 20 msg/s, 2,000 clients', clients: 2_000, devices: 1, rate: 20, slowFraction: 0, targets: ALL, appEnv: {} },
  { name: 'dashboard', what: '500 devices, 1,000 msg/s total, 50 clients', clients: 50, devices: 500, rate: 1_000, slowFraction: 0, targets: ALL, appEnv: {} },
  { name: 'capacity', what: '10,000 clients, 1 device, 1 msg/s', clients: 10_000, devices: 1, rate: 1, slowFraction: 0, targets: ALL, appEnv: {} },
  {
    name: 'slow',
    what: 'dashboard with 10 % of clients that stop reading',
    clients: 50,
    devices: 500,
    rate: 1_000,
    slowFraction: 0.1,
    targets: ['project'],
    appEnv: { SSE_HEARTBEAT_MS: '5000' },
    reference: 'dashboard',
  },
  // The coalescing trade (README): the dashboard with coalescing off, and with the write bound
  // below and above the default SSE_WRITES_PER_S (150).
  ...[['coalesce-off', 'coalescing off (SSE_COALESCE_MS=0)', { SSE_COALESCE_MS: '0' }], ['coalesce-75', 'SSE_WRITES_PER_S=75', { SSE_WRITES_PER_S: '75' }], ['coalesce-300', 'SSE_WRITES_PER_S=300', { SSE_WRITES_PER_S: '300' }]].map(
    ([name, what, appEnv]) => ({ name, what: `dashboard, ${what}`, clients: 50, devices: 500, rate: 1_000, slowFraction: 0, targets: ['project'], appEnv, reference: 'dashboard' }) as Scenario,
  ),
  {
    name: 'storm',
    what: '10,000 streams cut at once by an nginx restart, reconnecting as EventSource does (retry:, Last-Event-ID)',
    clients: 10_000,
    devices: 1,
    rate: 1,
    slowFraction: 0,
    targets: ['project', 'project-tcp'],
    appEnv: {},
    storm: true,
  },
  {
    // Every stream gets every device's telemetry, so the rate is multiplied by the streams:
    // 6,000 × 5 msg/s = 30,000 deliveries/s. A delivery to many streams costs 20–30 µs of server
    // CPU (broadcast and capacity in RESULTS.md): under a core for the servers, beside the load
    // generator and Redis on a 2-core machine. Busy, not saturated, so the per-replica figures
    // are costs, not queueing. 100 msg/s would be 600,000 deliveries/s, some 15 cores.
    name: 'replicas',
    what: '3 replicas behind one nginx, 6,000 clients, 500 devices, 5 msg/s total',
    clients: 6_000,
    devices: 500,
    rate: 5,
    slowFraction: 0,
    // Each replica on its own socket (the native stack), and over TCP (compose's --scale, by DNS).
    targets: ['redis', 'redis-tcp'],
    appEnv: {},
    replicas: 3,
  },
];

export interface Settings {
  scenarios: Scenario[];
  targets: TargetName[];
  scale: number;
  warmupSeconds: number;
  seconds: number;
  qos: 0 | 1;
  record: boolean;
  resultsFile: string;
  /** How many times the whole plan runs, interleaved; the report shows each run's median (BENCH_ROUNDS). */
  rounds: number;
}

function number(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) throw new Error(`${name}=${raw}: expected a number from ${min} to ${max}`);
  return value;
}

/**
 * BENCH_SCENARIOS   comma list of broadcast,dashboard,capacity,slow,coalesce-off,coalesce-75,coalesce-300,storm,replicas (default: all)
 * BENCH_TARGETS     comma list of project,project-tcp,baseline,redis,redis-tcp,nchan (default: all)
 * BENCH_SCALE       multiplies the client counts (default 1; 0.1 for a quick run)
 * BENCH_SECONDS     measurement window per run (default 20; 5 when BENCH_SCALE < 1)
 * BENCH_WARMUP      warm-up before it (default 5; 2 when BENCH_SCALE < 1)
 * BENCH_QOS         publisher QoS, 0 or 1 (default 0)
 * BENCH_RECORD      0: do not append to the results file (default 1)
 */
export function readSettings(env: NodeJS.ProcessEnv, defaultResults: string): Settings {
  const scale = number(env, 'BENCH_SCALE', 1, 0.001, 1);
  const names = (env['BENCH_SCENARIOS'] || SCENARIOS.map((s) => s.name).join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  const scenarios: Scenario[] = [];
  for (const name of names) {
    const scenario = SCENARIOS.find((s) => s.name === name);
    if (!scenario) throw new Error(`BENCH_SCENARIOS: unknown scenario "${name}" (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
    scenarios.push({ ...scenario, clients: Math.max(1, Math.round(scenario.clients * scale)) });
  }
  const targets = (env['BENCH_TARGETS'] || TARGET_NAMES.join(',')).split(',').map((s) => s.trim()) as TargetName[];
  for (const t of targets) if (!TARGET_NAMES.includes(t)) throw new Error(`BENCH_TARGETS: unknown target "${t}" (known: ${TARGET_NAMES.join(', ')})`);
  const quick = scale < 1;
  return {
    scenarios,
    targets,
    scale,
    warmupSeconds: number(env, 'BENCH_WARMUP', quick ? 2 : 5, 0, 120),
    seconds: number(env, 'BENCH_SECONDS', quick ? 5 : 20, 1, 120),
    qos: number(env, 'BENCH_QOS', 0, 0, 1) as 0 | 1,
    record: env['BENCH_RECORD'] !== '0',
    rounds: number(env, 'BENCH_ROUNDS', 1, 1, 15),
    resultsFile: env['BENCH_RESULTS'] || defaultResults,
  };
}
