import { ConfigError } from './env.js';
import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { createHttpServer } from './http/server.js';
import { listenOnSocket } from './http/socket.js';
import { createService } from './service.js';

// The entry point: read config, wire the parts, listen, and own shutdown.
let config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  for (const problem of err.problems) process.stderr.write(`config: ${problem}\n`);
  process.exit(1);
}

const logger = createLogger(config.logLevel, 'mqtt-sse-gateway');
let service: ReturnType<typeof createService>;
try {
  service = createService(config, logger);
} catch (err) {
  // A users file that cannot be read or is invalid: said once, clearly, then exit 1.
  process.stderr.write(`config: ${(err as Error).message}\n`);
  process.exit(1);
}
const callback = service.app.callback();
const limits = { requestTimeoutMs: config.httpRequestTimeoutMs };
const server = createHttpServer(callback, limits);
// nginx on the same host reaches the service here; TCP stays for probes, Prometheus, other hosts.
const socketServer = config.socket ? createHttpServer(callback, limits) : undefined;

// Signals are ours from here on: a SIGTERM during the start is a shutdown, not an abrupt end.
let stopping = false;
async function stop(signal: NodeJS.Signals): Promise<void> {
  if (stopping) {
    logger.warn({ signal }, 'second signal: exiting now');
    process.exit(1);
  }
  stopping = true;
  logger.info({ signal }, 'shutdown requested');
  await service.shutdown();
  for (const listener of [server, socketServer]) {
    listener?.close();
    listener?.closeAllConnections();
  }
  logger.info('shutdown complete');
  logger.flush();
  process.exit(0);
}
process.on('SIGTERM', (signal) => void stop(signal));
process.on('SIGINT', (signal) => void stop(signal));
process.on('uncaughtException', (err) => {
  logger.fatal({ err }, 'uncaught exception');
  logger.flush();
  process.exit(1);
});

server.on('error', (err) => {
  logger.fatal({ err }, 'http server failed');
  process.exit(1);
});
// The socket first: once the TCP port answers (/readyz included), nginx's way in is there too.
if (socketServer && config.socket) {
  const socket = config.socket;
  try {
    const found = await listenOnSocket(socketServer, { ...socket, backlog: config.listenBacklog });
    socketServer.on('error', (err) => logger.error({ err }, 'socket server failed'));
    logger.info({ socket: socket.path, group: socket.group ?? process.getgid?.(), backlog: config.listenBacklog, replacedStale: found === 'stale' }, 'listening on socket');
  } catch (err) {
    process.stderr.write(`config: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
server.listen({ port: config.port, host: config.host, backlog: config.listenBacklog }, () => {
  const address = server.address();
  const port = address && typeof address === 'object' ? address.port : config.port;
  logger.info({ host: config.host, port, mqtt: config.mqtt.url.replace(/\/\/[^@/]*@/, '//***@'), instance: service.hub.instanceId }, 'listening');
});
service.start();

