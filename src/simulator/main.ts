// Entry point of the simulated hardware: reads config, starts the fleet, reports progress every
// few seconds (never per message), and stops cleanly on SIGINT/SIGTERM.
import { rmSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../env.js';
import { createLogger } from '../logger.js';
import { loadSimConfig, type SimConfig } from './config.js';
import { createFleet } from './fleet.js';

const PROGRESS_MS = 5_000;

function readConfig(): Readonly<SimConfig> {
  try {
    return loadSimConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`${problem}\n`);
    process.exit(1);
  }
}

const config = readConfig();
const logger = createLogger(config.logLevel, 'simulator');
const fleet = createFleet(config, logger);

let last = { at: Date.now(), sent: 0 };
const progress = setInterval(() => {
  const stats = fleet.stats();
  const at = Date.now();
  const perSecond = ((stats.sent - last.sent) * 1000) / Math.max(1, at - last.at);
  last = { at, sent: stats.sent };
  logger.info(
    { ...stats, msgPerSecond: Math.round(perSecond * 10) / 10 },
    `devices online ${stats.online}/${stats.devices}, ${perSecond.toFixed(1)} msg/s, acks ${stats.acks}, faults ${stats.faults}`,
  );
}, PROGRESS_MS);

// The ready file follows the fleet: present while some device has a CONNACK, gone otherwise, so
// a container healthcheck means "connected to the broker", not merely "process running".
let ready = false;
// One left by a run that was killed must not make a healthcheck pass before any device connects.
if (config.readyFile) rmSync(config.readyFile, { force: true });
process.on('exit', () => {
  if (ready && config.readyFile) rmSync(config.readyFile, { force: true });
});
const readiness = setInterval(() => setReady(fleet.stats().online > 0), 1_000);
function setReady(now: boolean): void {
  if (!config.readyFile || now === ready) return;
  ready = now;
  try {
    if (now) writeFileSync(config.readyFile, `${process.pid}\n`);
    else rmSync(config.readyFile, { force: true });
  } catch (err) {
    logger.warn({ err, file: config.readyFile }, 'cannot update SIM_READY_FILE');
  }
}

let stopping = false;

async function shutdown(signal: NodeJS.Signals): Promise<void> {
  if (stopping) {
    logger.warn({ signal }, 'second signal: exiting without waiting for devices');
    logger.flush(() => process.exit(1));
    return;
  }
  stopping = true;
  clearInterval(progress);
  clearInterval(readiness);
  setReady(false);
  logger.info({ signal }, 'stopping: every device publishes offline and disconnects');
  await fleet.stop();
  const { sent, telemetry, events, acks, faults, malformed, publishErrors } = fleet.stats();
  logger.info({ sent, telemetry, events, acks, faults, malformed, publishErrors }, 'simulator stopped');
  logger.flush(() => process.exit(0));
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => void shutdown(signal));
}
