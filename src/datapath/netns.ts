// Sockets that live in a pod's network namespace but belong to this
// process: setns into the pod, create the socket, setns back — all
// synchronously on the main thread, because setns changes only the calling
// thread and libuv's threads must never see a foreign namespace. A socket
// keeps the namespace it was created in; only creation needs the switch.
import net from 'node:net';
import { AmbitError } from '../errors';
import {
  AF_INET,
  AMBIT_SOCKET_MARK,
  CLONE_NEWNET,
  errno,
  errnoName,
  F_DUPFD_CLOEXEC,
  IPPROTO_TCP,
  libcFns,
  O_CLOEXEC,
  O_RDONLY,
  SO_MARK,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from './ffi';
import { ip4Bytes } from './maps';

/** This process's own netns, opened once: where every setns returns to. */
let homeFd = -1;
function home(): number {
  if (homeFd < 0) {
    homeFd = libcFns.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC);
    if (homeFd < 0) throw new AmbitError('AMBIT_E_NETNS', `cannot open own netns: ${errnoName(errno())}`, 'is /proc mounted?');
  }
  return homeFd;
}

/**
 * An open network namespace. Holding the fd keeps per-connection work to
 * two setns calls (no path lookups), and pins the namespace we checked
 * rather than whatever later appears at the same path.
 */
export class Netns {
  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  static open(nsPath: string): Netns {
    const fd = libcFns.open(nsPath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw new AmbitError(
        'AMBIT_E_NETNS',
        `cannot open netns ${nsPath}: ${errnoName(errno())}`,
        'give a netns file such as /var/run/netns/NAME or /proc/PID/ns/net',
      );
    return new Netns(nsPath, fd);
  }

  /** Runs fn with the calling thread inside this namespace. */
  run<T>(fn: () => T): T {
    if (this.fd < 0) throw new AmbitError('AMBIT_E_NETNS', `netns ${this.path} is closed`);
    const back = home();
    if (libcFns.setns(this.fd, CLONE_NEWNET) < 0) {
      throw new AmbitError('AMBIT_E_NETNS', `setns into ${this.path} failed: ${errnoName(errno())}`, 'needs CAP_SYS_ADMIN');
    }
    try {
      return fn();
    } finally {
      if (libcFns.setns(back, CLONE_NEWNET) < 0) {
        // Every later socket would be created in the pod: nothing is safe now.
        process.stderr.write(`fatal: cannot return from netns ${this.path}: ${errnoName(errno())}\n`);
        process.abort();
      }
    }
  }

  /** Creates listening sockets inside this namespace; returns their fds in order. */
  listen(specs: ListenSpec[], backlog = 4096): number[] {
    return this.run(() => {
      const fds: number[] = [];
      try {
        for (const { ip, port } of specs) {
          const fd = tcpSocket();
          fds.push(fd);
          const one = Buffer.alloc(4);
          one.writeInt32LE(1);
          libcFns.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
          if (libcFns.bind(fd, sockaddrIn(ip, port), 16) < 0) {
            const code = errnoName(errno());
            throw new AmbitError(
              'AMBIT_E_NETNS',
              `bind ${ip}:${port} in ${this.path} failed: ${code}`,
              code === 'EADDRINUSE'
                ? `something in the pod already listens on ${port}, a tunnel port; has another agent enrolled it?`
                : undefined,
            );
          }
          if (libcFns.listen(fd, backlog) < 0)
            throw new AmbitError('AMBIT_E_NETNS', `listen on ${ip}:${port} in ${this.path} failed: ${errnoName(errno())}`);
        }
        return fds;
      } catch (err) {
        for (const fd of fds) libcFns.close(fd);
        throw err;
      }
    });
  }

  /** Connects to ip:port from inside this namespace; the socket carries the tunnel's mark. */
  connect(ip: string, port: number, opts: DialOptions = {}): net.Socket {
    const fd = this.run(tcpSocket);
    markAsTunnel(fd);
    const sock = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: opts.allowHalfOpen ?? true });
    // A tunnel leg forwards what it was handed at once: no Nagle delay on top of the app's own.
    return sock.connect({ host: ip, port, noDelay: true });
  }

  close(): void {
    if (this.fd >= 0) libcFns.close(this.fd);
    this.fd = -1;
  }
}

/** Marks a socket as the tunnel's own, so connect4 leaves it alone even inside a captured cgroup. */
function markAsTunnel(fd: number): void {
  const mark = Buffer.alloc(4);
  mark.writeUInt32LE(AMBIT_SOCKET_MARK);
  if (libcFns.setsockopt(fd, SOL_SOCKET, SO_MARK, mark, 4) < 0) {
    const code = errnoName(errno());
    libcFns.close(fd);
    throw new AmbitError('AMBIT_E_NETNS', `setting SO_MARK on a tunnel socket failed: ${code}`, 'needs CAP_NET_ADMIN');
  }
}

function sockaddrIn(ip: string, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_INET, 0);
  sa.writeUInt16BE(port, 2);
  ip4Bytes(ip).copy(sa, 4);
  return sa;
}

/** A non-blocking TCP socket, optionally bound, in the current netns. */
function tcpSocket(): number {
  const fd = libcFns.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) throw new AmbitError('AMBIT_E_NETNS', `socket() failed: ${errnoName(errno())}`);
  return fd;
}

export interface ListenSpec {
  ip: string;
  port: number;
}

export interface DialOptions {
  /**
   * Keep the socket open for writing after the peer's FIN: right for byte
   * copies, which carry half-close across; wrong under TLS, which must see
   * the peer's close to end the session.
   */
  allowHalfOpen?: boolean;
}

/** Opens a TCP connection (the seam between the tunnel and where its sockets live). */
export type Dialer = (ip: string, port: number, opts?: DialOptions) => net.Socket;

/** One connection from inside the netns at nsPath (tests and one-off tools). */
export function connectFromNetns(nsPath: string, ip: string, port: number, opts: DialOptions = {}): net.Socket {
  const ns = Netns.open(nsPath);
  try {
    return ns.connect(ip, port, opts);
  } finally {
    ns.close();
  }
}

/**
 * A Node server accepting on a listening socket the agent owns: it gets a
 * duplicate of the fd, so closing the server stops this process accepting
 * while the socket itself stays open for whoever else serves it.
 */
export function listenerServer(fd: number): net.Server {
  const copy = dupCloexec(fd);
  const server = net.createServer({ allowHalfOpen: true, noDelay: true });
  server.listen({ fd: copy });
  return server;
}

/** A listening socket as a handle that Node's IPC can pass to a tunnel worker (a duplicate fd, closed here once sent). */
export function listenerHandle(fd: number): net.Socket {
  return new net.Socket({ fd: dupCloexec(fd), readable: false, writable: false });
}

/** A duplicate that child processes do not inherit. */
function dupCloexec(fd: number): number {
  const copy = libcFns.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0);
  if (copy < 0) throw new AmbitError('AMBIT_E_NETNS', `duplicating listening socket ${fd} failed: ${errnoName(errno())}`);
  return copy;
}
