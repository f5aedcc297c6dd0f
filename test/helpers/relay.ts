import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP relay in front of the service that can cut every connection it carries (both
 * ends closed at once, as when a network drops), then keeps accepting new ones: a client's
 * reconnect goes through it again. It records what it relays, so a test can wait until the
 * client has been sent a given byte sequence and can read the request heads of reconnects.
 */
export class CuttableRelay {
  private readonly pairs = new Set<[Socket, Socket]>();
  private toClients: Buffer[] = [];
  /** Bytes sent by clients, per connection, in accept order. */
  readonly fromClients: string[] = [];

  private constructor(private readonly server: Server, readonly port: number) {}

  static async start(targetPort: number): Promise<CuttableRelay> {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const relay = new CuttableRelay(server, (server.address() as AddressInfo).port);
    server.on('connection', (client) => {
      const upstream = connect({ host: '127.0.0.1', port: targetPort });
      const pair: [Socket, Socket] = [client, upstream];
      relay.pairs.add(pair);
      const index = relay.fromClients.push('') - 1;
      client.on('data', (b: Buffer) => {
        relay.fromClients[index] += b.toString('latin1');
        upstream.write(b);
      });
      upstream.on('data', (b: Buffer) => {
        relay.toClients.push(b);
        client.write(b);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
        relay.pairs.delete(pair);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    return relay;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Everything relayed to clients so far (latin1; SSE text shows through chunk framing). */
  sentToClients(): string {
    if (this.toClients.length > 1) this.toClients = [Buffer.concat(this.toClients)];
    return this.toClients[0]?.toString('latin1') ?? '';
  }

  /** Drops every open connection, both ends; new connections are still relayed. */
  cut(): number {
    const pairs = [...this.pairs];
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
    return pairs.length;
  }

  async stop(): Promise<void> {
    this.cut();
    this.server.close();
  }
}
