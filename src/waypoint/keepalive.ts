// HTTP/1.1 keep-alive to endpoints. Opening a CONNECT stream per request
// costs the waypoint a stream, the endpoint's node a new TCP connection to
// the pod, and the app an accept, for every request. Here each (endpoint,
// identity, service) keeps a bounded set of idle HTTP/1.1 connections, each
// over its own CONNECT stream, in a node:http Agent, which already knows
// when a connection may carry another request: only after a complete
// response that did not say `connection: close`. A connection that failed,
// whose answer was abandoned, or that the endpoint closed is never handed
// out again; idle ones close after idleMs, below Node's default server
// keep-alive (5 s), so the pool rarely picks one the app is closing. A
// request that fails on a reused connection before any answer (the app
// closed it as we sent) is sent once more on a new one, as Node advises.
import http from 'node:http';
import type net from 'node:net';
import { Duplex } from 'node:stream';
import type { AttemptResult, H1Via, OutgoingRequest } from './upstream';
import { sendH1Via } from './upstream';

export interface KeepAliveTarget {
  ip: string;
  port: number;
  identity: string;
  service?: { hostname: string };
  /** Requests one connection carries before it is closed (connectionPool.http.maxRequestsPerConnection); absent: no limit. */
  maxRequests?: number;
}

export interface KeepAliveLimits {
  /** Idle connections kept per (endpoint, identity, service); more are closed as they free up. */
  maxIdlePerKey: number;
  /** An idle connection is closed after this long. */
  idleMs: number;
}

export const DEFAULT_KEEPALIVE_LIMITS: KeepAliveLimits = { maxIdlePerKey: 64, idleMs: 4000 };

/** Marks an error of opening the CONNECT stream, so the attempt reports a connect failure, not a reset. */
const OPEN_FAILED = Symbol('open failed');
type OpenError = NodeJS.ErrnoException & { [OPEN_FAILED]?: true; refused?: boolean };

const keyOf = (t: KeepAliveTarget): string => `${t.ip}:${t.port}|${t.identity}|${t.service?.hostname ?? ''}|${t.maxRequests ?? ''}`;

/** Requests a kept connection may still carry, on connections opened under maxRequestsPerConnection. */
const REQUESTS_LEFT = Symbol('requests left');
type Counted = { [REQUESTS_LEFT]?: number };

/**
 * A CONNECT stream as the socket node:http's Agent keeps: JavaScript only
 * (js-duplex.ts says why), writes batched, not half-open (the endpoint's end closes it, so
 * the Agent drops it), with the inactivity timeout, ref and unref a pooled
 * socket is given.
 */
function pooledSocket(s: Duplex): Duplex {
  let timer: NodeJS.Timeout | undefined;
  let timeoutMs = 0;
  const d = new Duplex({
    allowHalfOpen: false,
    read() {
      s.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      touch();
      s.write(chunk, cb);
    },
    // node:http writes a request's head and body as two chunks; written
    // apart, each request waited ~40 ms on the way to the endpoint (a
    // delayed ACK behind a small segment, measured on the bench).
    writev(chunks: { chunk: Buffer }[], cb) {
      touch();
      s.write(Buffer.concat(chunks.map((c) => c.chunk)), cb);
    },
    final(cb) {
      s.end();
      cb();
    },
    destroy(err, cb) {
      clearTimeout(timer);
      s.destroy(err ?? undefined);
      cb(err);
    },
  });
  const touch = (): void => {
    clearTimeout(timer);
    if (timeoutMs > 0 && !d.destroyed) timer = setTimeout(() => d.emit('timeout'), timeoutMs);
  };
  s.on('data', (c: Buffer) => {
    touch();
    if (!d.push(c)) s.pause();
  });
  s.once('end', () => d.push(null));
  s.once('close', () => d.destroy());
  s.on('error', (err) => d.destroy(err));
  Object.assign(d, {
    get timeout(): number {
      return timeoutMs;
    },
    // As net.Socket's: 0 with a callback takes that callback back off. node:http sets and clears
    // one per request on a reused socket; without the removal each reuse left a listener behind.
    setTimeout(ms: number, cb?: () => void): Duplex {
      timeoutMs = ms;
      if (cb && ms === 0) d.removeListener('timeout', cb);
      else if (cb) d.once('timeout', cb);
      touch();
      return d;
    },
    setNoDelay: () => d,
    setKeepAlive: () => d,
    ref: () => d,
    unref: () => d,
  });
  return d;
}

export class KeepAlivePool {
  private readonly agent: http.Agent;
  /** CONNECT streams opened, for tests and the config dump. */
  opened = 0;

  constructor(open: (t: KeepAliveTarget) => Promise<Duplex>, limits: KeepAliveLimits = DEFAULT_KEEPALIVE_LIMITS) {
    // LIFO: the most recently used connection is the least likely to be closing.
    const agent = new http.Agent({
      keepAlive: true,
      maxFreeSockets: limits.maxIdlePerKey,
      timeout: limits.idleMs,
      scheduling: 'lifo',
    });
    // The Agent keys and opens by the request's own options, where send() puts the target.
    Object.assign(agent, {
      getName: (o: { target: KeepAliveTarget }) => keyOf(o.target),
      createConnection: (o: { target: KeepAliveTarget }, cb: (err: Error | null, s?: net.Socket) => void) => {
        this.opened++;
        open(o.target).then(
          (s) => {
            const d = pooledSocket(s) as net.Socket & Counted;
            if (o.target.maxRequests !== undefined && o.target.maxRequests > 0) d[REQUESTS_LEFT] = o.target.maxRequests;
            cb(null, d);
          },
          (err: OpenError) => cb(Object.assign(err instanceof Error ? err : new Error(String(err)), { [OPEN_FAILED]: true })),
        );
        return undefined;
      },
    });
    // A connection that has carried its share of requests is closed instead of kept (the key keeps such connections apart).
    const hooks = agent as unknown as { keepSocketAlive: (socket: net.Socket & Counted) => boolean };
    const keep = hooks.keepSocketAlive.bind(agent);
    hooks.keepSocketAlive = (socket) => {
      const left = socket[REQUESTS_LEFT];
      if (left !== undefined) {
        socket[REQUESTS_LEFT] = left - 1;
        if (left - 1 <= 0) return false;
      }
      return keep(socket);
    };
    this.agent = agent;
  }

  /** Sends an HTTP/1.1 request to the endpoint on a kept connection, or a new one. */
  async send(target: KeepAliveTarget, req: OutgoingRequest): Promise<AttemptResult> {
    let reused = false;
    const via: H1Via = {
      options: { agent: this.agent, ...({ target } as object) },
      keepAlive: true,
      destroy: () => undefined,
      classify: (err: OpenError, out) => {
        reused = out.reusedSocket;
        if (!err[OPEN_FAILED]) return undefined;
        return err.refused ? { kind: 'refused-stream', detail: err.code } : { kind: 'connect-failure', detail: err.code ?? err.message };
      },
    };
    const r = await sendH1Via(req, via);
    if (r.kind !== 'reset' || !reused || r.protocolError) return r;
    return sendH1Via(req, { ...via, classify: via.classify });
  }

  /** Idle connections, per key. */
  idle(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.agent.freeSockets).map(([k, v]) => [k, v?.length ?? 0]));
  }

  close(): void {
    this.agent.destroy();
  }
}
