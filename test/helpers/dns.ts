import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';

/**
 * A one-name DNS server on 127.0.0.1 for tests: answers A queries for `name` with `address`
 * (changeable at any moment, TTL 1 s), NXDOMAIN for any other name, and an empty answer for
 * other record types. Enough for nginx's resolver; nothing else.
 */
export class TinyDns {
  address: string;
  queries = 0;

  private constructor(private readonly socket: Socket, readonly port: number, readonly name: string, address: string) {
    this.address = address;
  }

  static async start(name: string, address: string): Promise<TinyDns> {
    const socket = createSocket('udp4');
    socket.bind(0, '127.0.0.1');
    await once(socket, 'listening');
    const dns = new TinyDns(socket, socket.address().port, name.toLowerCase(), address);
    socket.on('message', (query, peer) => {
      const answer = dns.answer(query);
      if (answer) socket.send(answer, peer.port, peer.address);
    });
    return dns;
  }

  private answer(query: Buffer): Buffer | undefined {
    if (query.length < 17) return undefined;
    // The question: length-prefixed labels up to a zero byte, then type and class.
    const labels: string[] = [];
    let at = 12;
    while (at < query.length && query[at] !== 0) {
      const len = query[at]!;
      labels.push(query.subarray(at + 1, at + 1 + len).toString('latin1'));
      at += 1 + len;
    }
    const end = at + 5;
    if (end > query.length) return undefined;
    const type = query.readUInt16BE(at + 1);
    this.queries += 1;
    const known = labels.join('.').toLowerCase() === this.name;
    const answers = known && type === 1 ? 1 : 0;
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2); // the query's id
    header.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, recursion available, NOERROR / NXDOMAIN
    header.writeUInt16BE(1, 4); // one question
    header.writeUInt16BE(answers, 6);
    const parts = [header, query.subarray(12, end)];
    if (answers) {
      const record = Buffer.alloc(16);
      record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      record.writeUInt16BE(1, 2); // A
      record.writeUInt16BE(1, 4); // IN
      record.writeUInt32BE(1, 6); // TTL 1 s
      record.writeUInt16BE(4, 10);
      this.address.split('.').forEach((octet, i) => record.writeUInt8(Number(octet), 12 + i));
      parts.push(record);
    }
    return Buffer.concat(parts);
  }

  stop(): void {
    this.socket.close();
  }
}
