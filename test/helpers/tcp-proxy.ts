import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP relay that can go silent: `freeze()` stops moving bytes on every connection it
 * holds, in both directions, without closing anything (no FIN, no RST). To both ends that is a
 * half-open connection, as after a pulled cable or a dead NAT entry: only keepalives find out.
 * Until `accepting` is set again, new connections are closed at once.
 */
export class FreezableProxy {
  private readonly pairs: [Socket, Socket][] = [];
  private readonly silenced: Socket[] = [];
  /** While false, new connections are refused (closed at once), as to a host that is gone. */
  accepting = true;

  private constructor(private readonly server: Server, readonly port: number) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<FreezableProxy> {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = new FreezableProxy(server, (server.address() as AddressInfo).port);
    server.on('connection', (client) => {
      if (!proxy.accepting) {
        client.destroy();
        return;
      }
      const upstream = connect({ host: targetHost, port: targetPort });
      const pair: [Socket, Socket] = [client, upstream];
      proxy.pairs.push(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        const at = proxy.pairs.indexOf(pair);
        if (at >= 0) proxy.pairs.splice(at, 1);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    return proxy;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Every connection open now stops carrying bytes, and stays open. */
  freeze(): number {
    this.accepting = false;
    const frozen = this.pairs.splice(0);
    for (const [client, upstream] of frozen) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
      // Bytes are left unread in the kernel and nothing is written again; whatever one end does
      // (the device giving up and closing, say) never reaches the other.
      for (const socket of [client, upstream]) {
        socket.removeAllListeners('close').removeAllListeners('error').on('error', () => undefined);
        this.silenced.push(socket);
      }
    }
    return frozen.length;
  }

  async stop(): Promise<void> {
    for (const [a, b] of this.pairs.splice(0)) {
      a.destroy();
      b.destroy();
    }
    for (const s of this.silenced.splice(0)) s.destroy();
    this.server.close();
  }
}
