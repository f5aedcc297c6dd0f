// The app half of the `nchan` reference target: fan-out happens inside nginx (the nchan module),
// and this process only moves each MQTT telemetry message to nchan's publisher endpoint, one HTTP
// POST per message, in order, over one keep-alive connection. The body is the event's data as the
// service would send it (`{"device", ...payload}`), so the same load clients read it.
// Not part of the service; run by target.ts for the `nchan` target only.
import mqtt from 'mqtt';
import { Agent, request } from 'node:http';
import { createServer } from 'node:http';
import { DEFAULT_TOPIC_PREFIX } from '../src/protocol.js';

const env = process.env;
const publishUrl = new URL(env['NCHAN_PUBLISH_URL']!);
// One socket: POSTs leave in the order the broker delivered the messages, as the service's log keeps it.
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
let ready = false;
let failed = 0;

function publish(body: string): void {
  const req = request({
    agent, host: publishUrl.hostname, port: publishUrl.port, path: publishUrl.pathname, method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Accept: 'text/json' },
  }, (res) => {
    if (res.statusCode !== 201 && res.statusCode !== 202) failed += 1;
    res.resume();
  });
  req.on('error', () => (failed += 1));
  req.end(body);
}

const client = mqtt.connect(env['MQTT_URL']!, {
  username: env['MQTT_USERNAME'],
  password: env['MQTT_PASSWORD'],
  clientId: `bench-nchan-${process.pid}`,
});
client.on('connect', () => {
  client.subscribe(`${DEFAULT_TOPIC_PREFIX}/+/telemetry`, (err) => {
    ready = !err;
  });
});
client.on('message', (topic, payload) => {
  const device = topic.split('/')[1];
  // As the service frames it: the device id first, then the payload's fields, one line of JSON.
  publish(`{"device":${JSON.stringify(device)},${payload.toString().slice(1)}`);
});

// /readyz as the other targets answer it; /failed counts POSTs nchan did not take.
const server = createServer((req, res) => {
  if (req.url === '/readyz') {
    res.writeHead(ready ? 200 : 503, { 'Content-Type': 'application/json' }).end(JSON.stringify({ ready }));
    return;
  }
  if (req.url === '/failed') {
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ failed }));
    return;
  }
  res.writeHead(404).end();
});
server.listen(Number(env['PORT']), '127.0.0.1');
process.on('SIGTERM', () => {
  client.end();
  server.close();
  agent.destroy();
  process.exit(0);
});
