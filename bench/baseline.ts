// The textbook MQTT → SSE bridge the benchmark compares the service against: Koa, a PassThrough
// per client, and on every MQTT message a JSON.stringify and a stream.write for each client. No
// shared encoding, no coalescing, no conflation, no backpressure: what most tutorials show.
// Not part of the service; run by run.ts only.
import Koa from 'koa';
import mqtt from 'mqtt';
import { createServer } from 'node:http';
import { PassThrough } from 'node:stream';
import { DEFAULT_TOPIC_PREFIX } from '../src/protocol.js';

const env = process.env;
const clients = new Set<PassThrough>();
let ready = false;

const app = new Koa();
app.use((ctx) => {
  if (ctx.path === '/readyz') {
    ctx.status = ready ? 200 : 503;
    ctx.body = { ready };
    return;
  }
  if (ctx.path !== '/events') {
    ctx.status = 404;
    return;
  }
  ctx.req.socket.setTimeout(0);
  ctx.req.socket.setNoDelay(true);
  ctx.req.socket.setKeepAlive(true);
  ctx.set({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  ctx.status = 200;
  const stream = new PassThrough();
  ctx.body = stream;
  clients.add(stream);
  ctx.req.on('close', () => {
    clients.delete(stream);
    stream.end();
  });
  stream.write('retry: 3000\n\n');
});

const client = mqtt.connect(env['MQTT_URL']!, {
  username: env['MQTT_USERNAME'],
  password: env['MQTT_PASSWORD'],
  clientId: `bench-baseline-${process.pid}`,
});
client.on('connect', () => {
  client.subscribe(`${DEFAULT_TOPIC_PREFIX}/+/telemetry`, (err) => {
    ready = !err;
  });
});
client.on('message', (topic, payload) => {
  const device = topic.split('/')[1];
  const data = JSON.parse(payload.toString()) as Record<string, unknown>;
  for (const stream of clients) {
    stream.write(`event: telemetry\ndata: ${JSON.stringify({ device, ...data })}\n\n`);
  }
});

const server = createServer(app.callback());
server.requestTimeout = 0;
server.listen(Number(env['PORT']), env['HOST'] ?? '127.0.0.1');
process.on('SIGTERM', () => {
  client.end();
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
