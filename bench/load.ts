// A load process: holds a share of the SSE clients, counts what each receives, measures the
// device → client latency, and answers the orchestrator over IPC. Run by run.ts, not by hand.
import { Histogram } from './histogram.js';
import { DEVICE_PREFIX, type ConnectRequest, type LoadReply, type LoadRequest, type LoadStats } from './protocol.js';
import { SseStream, type StreamHandlers, type StreamTarget } from './sse-client.js';

/** Streams being opened at once: below nginx's and the app's accept backlogs (511). */
const CONNECT_CONCURRENCY = 200;
const OPEN_TIMEOUT_MS = 30_000;

interface Telemetry {
  device: string;
  seq: number;
  metrics: { t?: number; w?: number };
}

/** The number after `"key":` in a flat JSON text, or NaN. */
function numberAfter(data: string, key: string): number {
  const at = data.indexOf(key);
  if (at < 0) return Number.NaN;
  const start = at + key.length;
  let end = start;
  while (end < data.length) {
    const c = data.charCodeAt(end);
    if (c === 44 /* , */ || c === 125 /* } */) break;
    end += 1;
  }
  return Number(data.slice(start, end));
}

/**
 * Reads the few fields the bench needs without JSON.parse: at tens of thousands of events per
 * second, parsing is most of the load generator's own CPU. Falls back to JSON.parse for any
 * shape it does not recognise.
 */
function readTelemetry(data: string): Telemetry {
  const at = data.indexOf('"device":"');
  const seq = numberAfter(data, '"seq":');
  const t = numberAfter(data, '"t":');
  const w = numberAfter(data, '"w":');
  if (at < 0 || Number.isNaN(seq) || Number.isNaN(t) || Number.isNaN(w)) return JSON.parse(data) as Telemetry;
  const from = at + 10;
  return { device: data.slice(from, data.indexOf('"', from)), seq, metrics: { t, w } };
}

/** EventSource's reconnection time until the server sends `retry:`. */
const DEFAULT_RETRY_MS = 3_000;

class Client implements StreamHandlers {
  stream: SseStream | undefined;
  received = 0;
  private readonly lastSeq: Float64Array;
  private everOpened = false;

  constructor(
    readonly slow: boolean,
    devices: number,
    private readonly settle: (ok: boolean, reason?: string) => void,
    private readonly target: StreamTarget,
    private readonly reconnect: boolean,
  ) {
    this.lastSeq = new Float64Array(devices).fill(-1);
  }

  connect(lastEventId = ''): void {
    this.stream = new SseStream({ ...this.target, ...(lastEventId ? { lastEventId } : {}) }, this);
  }

  opened(): void {
    totals.open += 1;
    if (this.everOpened) totals.reopened += 1;
    this.everOpened = true;
    this.settle(true);
  }

  failed(stream: SseStream, reason: string): void {
    if (this.everOpened && this.reconnect) {
      totals.retriesFailed += 1;
      this.again(stream);
      return;
    }
    this.settle(false, reason);
  }

  closed(stream: SseStream): void {
    totals.open -= 1;
    if (closing) return;
    if (this.slow) totals.closedSlow += 1;
    else totals.closedFast += 1;
    if (this.reconnect) this.again(stream);
  }

  /** What EventSource does once a stream has opened: wait the reconnection time, resume from the last id. */
  private again(stream: SseStream): void {
    if (closing) return;
    const retry = stream.retryMs ?? DEFAULT_RETRY_MS;
    const lastEventId = stream.lastEventId;
    setTimeout(() => {
      if (!closing) this.connect(lastEventId);
    }, retry).unref();
  }

  event(type: string, data: string, now: number): void {
    if (type === 'busy') {
      this.stream?.close();
      return;
    }
    if (type !== 'telemetry') return;
    const msg = readTelemetry(data);
    if (msg.metrics.w !== 1) return; // warm-up
    const device = Number(msg.device.slice(DEVICE_PREFIX.length));
    const group = this.slow ? totals.slow : totals.fast;
    if (msg.seq <= this.lastSeq[device]!) {
      group.duplicates += 1; // a repeat or an out-of-order event: both count against us
      return;
    }
    this.lastSeq[device] = msg.seq;
    this.received += 1;
    group.received += 1;
    if (!this.slow && msg.metrics.t !== undefined) latency.record(now - msg.metrics.t);
  }
}

const clients: Client[] = [];
let latency = new Histogram();
const totals = {
  failures: [] as string[],
  opened: 0,
  failed: 0,
  closedFast: 0,
  closedSlow: 0,
  open: 0,
  reopened: 0,
  retriesFailed: 0,
  fast: { received: 0, duplicates: 0 },
  slow: { received: 0, duplicates: 0 },
};
let closing = false;

function send(reply: LoadReply): void {
  process.send?.(reply);
}

function isSlow(n: number, fraction: number): boolean {
  return Math.floor((n + 1) * fraction) > Math.floor(n * fraction);
}

function sourceAddress(n: number, perAddress: number): string {
  const k = 2 + Math.floor(n / perAddress); // 127.0.0.2 upward; 127.0.0.1 stays the target's own
  return `127.0.${k >> 8}.${k & 255}`;
}

function connectAll(req: ConnectRequest): Promise<void> {
  const started = Date.now();
  let next = 0;
  let pending = 0;
  let done = 0;
  const failures = new Map<string, number>();
  return new Promise((resolve) => {
    if (req.count === 0) {
      send({ type: 'connected', opened: totals.opened, failed: totals.failed, failures: [], ms: 0 });
      resolve();
      return;
    }
    const launch = () => {
      while (pending < CONNECT_CONCURRENCY && next < req.count) {
        const n = req.first + next;
        next += 1;
        pending += 1;
        let settled = false;
        const timer = setTimeout(() => settle(false, 'no response within 30 s'), OPEN_TIMEOUT_MS);
        const settle = (ok: boolean, reason?: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          pending -= 1;
          done += 1;
          if (ok) totals.opened += 1;
          else {
            totals.failed += 1;
            failures.set(reason ?? '?', (failures.get(reason ?? '?') ?? 0) + 1);
            client.stream?.close();
          }
          if (done === req.count) {
            const list = [...failures].map(([reason, count]) => `${count}× ${reason}`);
            totals.failures.push(...list);
            send({ type: 'connected', opened: totals.opened, failed: totals.failed, failures: list, ms: Date.now() - started });
            resolve();
          } else launch();
        };
        const target = { host: req.host, port: req.port, path: req.path, localAddress: sourceAddress(n, req.perAddress), ...(req.ca ? { ca: req.ca } : {}) };
        const client = new Client(isSlow(n, req.slowFraction), req.devices, settle, target, req.reconnect === true);
        clients.push(client);
        client.connect();
      }
    };
    launch();
  });
}

function stats(): LoadStats {
  let min = Number.POSITIVE_INFINITY;
  let slowClients = 0;
  for (const client of clients) {
    if (client.slow) slowClients += 1;
    else if (client.received < min) min = client.received;
  }
  return {
    clients: clients.length,
    slowClients,
    opened: totals.opened,
    failed: totals.failed,
    failures: totals.failures,
    closedFast: totals.closedFast,
    closedSlow: totals.closedSlow,
    open: totals.open,
    reopened: totals.reopened,
    retriesFailed: totals.retriesFailed,
    fast: { ...totals.fast, minPerClient: Number.isFinite(min) ? min : 0, latency: latency.toData() },
    slow: { ...totals.slow },
  };
}

process.on('message', (message: LoadRequest) => {
  switch (message.type) {
    case 'connect':
      void connectAll(message);
      return;
    case 'stall': {
      // Stop reading: the kernel buffers fill, then nginx's, then the app's queue for this client.
      let count = 0;
      for (const client of clients) {
        if (client.slow) {
          client.stream?.socket.pause();
          count += 1;
        }
      }
      send({ type: 'stalled', count });
      return;
    }
    case 'stats':
      send({ type: 'stats', stats: stats() });
      return;
    case 'close':
      closing = true;
      for (const client of clients) client.stream?.close();
      latency = new Histogram();
      send({ type: 'closed' });
      setTimeout(() => process.exit(0), 50);
      return;
  }
});
process.on('disconnect', () => process.exit(0));
