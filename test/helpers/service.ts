import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig, type Config } from '../../src/config.js';
import { createHttpServer } from '../../src/http/server.js';
import { createLogger } from '../../src/logger.js';
import { createService, type Service } from '../../src/service.js';
import { eventually } from './wait.js';

export interface RunningService {
  url: string;
  port: number;
  config: Readonly<Config>;
  service: Service;
  server: Server;
  /** The SIGTERM path, in-process: drain, leave MQTT, close the listener. */
  stop(): Promise<void>;
}

/** The real service, in this process, on a random port; env as the entry point would read it. */
export interface StartOptions {
  waitReady?: boolean;
  /** Where log lines go (JSON, one per line); default stdout. */
  logStream?: { write(line: string): void };
}

export async function startService(env: Record<string, string>, { waitReady = true, logStream }: StartOptions = {}): Promise<RunningService> {
  const config = loadConfig({
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    HOST: '127.0.0.1',
    PORT: '0',
    SHUTDOWN_DRAIN_MS: '200',
    // Sign-in is on by default; a test that gives no users file tests the rest with it off.
    ...(env['USERS_FILE'] ? {} : { AUTH: 'off' }),
    ...env,
  });
  const service = createService(config, createLogger(config.logLevel, 'test-service', logStream));
  // The entry point's server, with the same limits and timeouts.
  const server = createHttpServer(service.app.callback(), { requestTimeoutMs: config.httpRequestTimeoutMs });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  service.start();
  const running: RunningService = {
    url: `http://127.0.0.1:${port}`,
    port,
    config,
    service,
    server,
    async stop() {
      await service.shutdown();
      server.close();
      server.closeAllConnections();
    },
  };
  if (waitReady) await eventually(() => service.bridge.isReady, 'service connected to the broker', 10_000);
  return running;
}

let counter = 0;
/** A prefix and client id no other test uses, so retained messages and sessions never leak. */
export function isolation(name: string): { MQTT_TOPIC_PREFIX: string; MQTT_CLIENT_ID: string } {
  counter += 1;
  const tag = `${name}-${process.pid}-${counter}-${Date.now().toString(36)}`;
  return { MQTT_TOPIC_PREFIX: `t/${tag}`, MQTT_CLIENT_ID: `svc-${tag}` };
}
