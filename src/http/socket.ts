import { chmod, chown, lstat, unlink } from 'node:fs/promises';
import { connect, type Server } from 'node:net';

/**
 * The Unix domain socket nginx reaches the service through when both share a host. On
 * loopback TCP the kernel runs the receive path of nginx's end inside the service's write();
 * over a Unix socket that work is a copy between two buffers (the README's "The proxy hop").
 */
export interface SocketListen {
  /** Absolute path of the socket file. */
  path: string;
  /** The group allowed to connect besides the owner (nginx's workers' group); default: the process's own. */
  group: number | undefined;
  /** Pending connections the kernel keeps (capped by net.core.somaxconn). */
  backlog: number;
}

/** Owner and group read/write: the owner (this service) and nginx's workers, nobody else. */
export const SOCKET_MODE = 0o660;

export class SocketPathError extends Error {
  override name = 'SocketPathError';
}

/**
 * Makes `path` free to bind: nothing there, or a socket nobody answers on (left by a process
 * that was killed: a socket file outlives its listener), which is removed. A socket that still
 * answers belongs to a live process and a file that is not a socket is not ours: both are left
 * alone and refused, naming the path.
 */
export async function clearStaleSocket(path: string): Promise<'none' | 'stale'> {
  let stats;
  try {
    stats = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw new SocketPathError(`SOCKET_PATH ${path}: ${(err as Error).message}`);
  }
  if (!stats.isSocket()) throw new SocketPathError(`SOCKET_PATH ${path} exists and is not a socket: left alone; remove it or choose another path`);
  if (await answers(path)) {
    throw new SocketPathError(`SOCKET_PATH ${path} is served by another live process (another instance with the same path?): left alone`);
  }
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new SocketPathError(`SOCKET_PATH ${path}: cannot remove the stale socket: ${err.message}`);
  });
  return 'stale';
}

/** Whether something accepts connections on the socket at `path` (refused or missing: no). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const done = (live: boolean) => {
      socket.destroy();
      resolve(live);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(2_000, () => done(true)); // a listener too busy to accept is still alive
  });
}

/**
 * Listens on the socket with owner-only permissions from the moment it is bound (umask), then
 * hands it to the group and opens it to that group: at no point can anyone else connect.
 */
export async function listenOnSocket(server: Server, options: SocketListen): Promise<'none' | 'stale'> {
  const found = await clearStaleSocket(options.path);
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => reject(new SocketPathError(`SOCKET_PATH ${options.path}: ${err.message}`));
    server.once('error', failed);
    // The bind happens inside listen(), synchronously for a path: the umask covers exactly it.
    const previous = process.umask(0o177);
    try {
      server.listen({ path: options.path, backlog: options.backlog }, () => {
        server.off('error', failed);
        resolve();
      });
    } finally {
      process.umask(previous);
    }
  });
  try {
    if (options.group !== undefined) await chown(options.path, -1, options.group);
    await chmod(options.path, SOCKET_MODE);
  } catch (err) {
    server.close();
    const code = (err as NodeJS.ErrnoException).code;
    throw new SocketPathError(code === 'EPERM' && options.group !== undefined
      ? `SOCKET_PATH ${options.path}: cannot hand the socket to group ${options.group} (SOCKET_GROUP): a process that is not root may only use a group it is a member of`
      : `SOCKET_PATH ${options.path}: ${(err as Error).message}`);
  }
  return found;
}
