import { readdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../src/native/mosquitto.js';
import { isolation, startService, type RunningService } from '../helpers/service.js';
import { eventually } from '../helpers/wait.js';

// Connections that come and go must leave nothing behind: no descriptor, no client entry, no heap.
// The service runs in this process so the test can collect garbage before it measures the heap.

const CYCLES = 20_000;
const CONCURRENCY = 64;
let broker: Mosquitto;
let svc: RunningService;

beforeAll(async () => {
  broker = await Mosquitto.start();
  svc = await startService({ MQTT_URL: broker.url, ...isolation('churn') });
});

afterAll(async () => {
  await svc?.stop();
  await broker?.stop();
});

const openFds = async () => (await readdir('/proc/self/fd')).length;

async function settledHeap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (vitest.config.ts sets it for the forks pool)');
  await sleep(100);
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** Opens one stream, waits for its snapshot, and hangs up. */
function cycle(): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: svc.port, host: '127.0.0.1' }, () => {
      socket.write('GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n');
    });
    let seen = '';
    socket.on('data', (chunk) => {
      seen += chunk.toString('latin1');
      if (seen.includes('event: snapshot')) socket.destroy();
    });
    socket.on('close', () => (seen.includes('event: snapshot') ? resolve() : reject(new Error(`no snapshot: ${seen.slice(0, 200)}`))));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('cycle timed out')));
  });
}

async function churn(count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      await cycle();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await eventually(() => svc.service.hub.clientCount === 0, 'every stream closed', 10_000, () => svc.service.hub.clientCount);
}

describe('connection churn', () => {
  it(`leaves descriptors, sse_clients and heap at baseline after ${CYCLES} connect/close cycles`, { timeout: 180_000 }, async () => {
    await churn(500); // warm-up: JIT, pools and lazily built state belong to the baseline
    const fdsBefore = await openFds();
    const heapBefore = await settledHeap();

    await churn(CYCLES);

    const fdsAfter = await eventually(async () => {
      const n = await openFds();
      return n <= fdsBefore ? n : undefined;
    }, `descriptors back at ${fdsBefore}`, 10_000, () => 'more descriptors open');
    const heapAfter = await settledHeap();
    const metrics = await (await fetch(`${svc.url}/metrics`)).text();
    expect(metrics).toMatch(/^sse_clients 0$/m);
    expect(Number(/^sse_connections_total\{outcome="opened"\} (\d+)$/m.exec(metrics)?.[1])).toBe(CYCLES + 500);
    expect(Number(/^sse_disconnects_total\{reason="client"\} (\d+)$/m.exec(metrics)?.[1])).toBe(CYCLES + 500);
    expect(fdsAfter).toBeLessThanOrEqual(fdsBefore);
    console.info(`churn: ${CYCLES} cycles; descriptors ${fdsBefore} → ${fdsAfter}; sse_clients 0; heap ${(heapBefore / 1048576).toFixed(1)} → ${(heapAfter / 1048576).toFixed(1)} MiB`);
    // A leak of 100 bytes per connection would add 2 MB here.
    expect(heapAfter - heapBefore, `heap ${heapBefore} → ${heapAfter}`).toBeLessThan(2 * 1024 * 1024);
  });
});
