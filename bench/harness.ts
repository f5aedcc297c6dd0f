// The native harness and the service, as built by `npm run build` (dist/): the benchmark measures
// exactly what `npm start` and `npm run stack` run. src/ is imported for types only, and for the
// shared names of src/protocol.ts (constants, no imports: nothing of the service runs from it).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as ControlModule from '../src/broker/control.js';
import type * as IdentitiesModule from '../src/broker/identities.js';
import type * as MosquittoModule from '../src/native/mosquitto.js';
import type * as NginxModule from '../src/native/nginx.js';
import type * as PortsModule from '../src/native/ports.js';
import type * as ProcessModule from '../src/native/process.js';
import type * as RedisModule from '../src/native/redis.js';
import type * as CertsModule from '../src/tls/certs.js';

/** This file runs from bench/out/bench/ (compiled); the repository root is three levels up. */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const DIST = join(ROOT, 'dist');
export const SERVICE_ENTRY = join(DIST, 'main.js');
/** The compiled bench entry points sit next to this file. */
export const BENCH_OUT = fileURLToPath(new URL('.', import.meta.url));

for (const file of [SERVICE_ENTRY, join(DIST, 'native', 'nginx.js')]) {
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first (npm run bench does)`);
}

const load = async <T>(path: string): Promise<T> => (await import(pathToFileURL(join(DIST, path)).href)) as T;

export const { Mosquitto, generateProjectUsers } = await load<typeof MosquittoModule>('native/mosquitto.js');
export const { DynsecAdmin } = await load<typeof ControlModule>('broker/control.js');
export const { newDevicePassword, provisionDevices } = await load<typeof IdentitiesModule>('broker/identities.js');
export const { Nginx, appAddress, socketDirectory, socketEnv } = await load<typeof NginxModule>('native/nginx.js');
export const { freePort, waitForPort } = await load<typeof PortsModule>('native/ports.js');
export const { ManagedProcess, waitReady } = await load<typeof ProcessModule>('native/process.js');
export const { Redis } = await load<typeof RedisModule>('native/redis.js');
export const { ensureCertificates } = await load<typeof CertsModule>('tls/certs.js');

/**
 * What every app under test starts with, and nothing else of the bench's environment: on
 * 127.0.0.1 at `port`, in production mode, on the broker at `mqttUrl`. Streams are closed by
 * the bench before an app stops, so its drain is short.
 */
export function baseAppEnv(port: number, mqttUrl: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    MQTT_URL: mqttUrl,
    // The bench measures delivery; sign-in would only add a cookie check per stream opening.
    AUTH: 'off',
    SHUTDOWN_DRAIN_MS: '500',
  };
}

export type Mosquitto = MosquittoModule.Mosquitto;
export type Nginx = NginxModule.Nginx;
export type ManagedProcess = ProcessModule.ManagedProcess;
export type Redis = RedisModule.Redis;
export type ProjectUsers = MosquittoModule.ProjectUsers;
