// Istio's connectionPool as Envoy's circuit breakers of one destination
// (a service port, or a subset of it): requests active at once, attempts on
// their own connections at once with a bounded queue of those waiting for
// one, and retries in flight. A limit reached answers 503 with UO at once,
// so an overloaded backend sees at most what the limits let through
// instead of a growing backlog. Limits are read at each call: a reload
// changes them for what comes next.
import type { ConnectionPool } from './types';

/** Istio's connectionPool defaults: no limit (2³²−1), and no cap of requests per connection. */
export const UNLIMITED = 2 ** 32 - 1;
export const ISTIO_DEFAULT_POOL: ConnectionPool = Object.freeze({
  maxConnections: UNLIMITED,
  maxPendingRequests: UNLIMITED,
  maxRequests: UNLIMITED,
  maxRequestsPerConnection: 0,
  maxRetries: UNLIMITED,
});

/** A held slot; releasing it twice does nothing. */
export type Release = () => void;

export type Acquired = { ready: Promise<Release | undefined>; cancel: () => void } | 'overflow';

export class CircuitBreaker {
  private requests = 0;
  private connections = 0;
  private retries = 0;
  private maxConnections = UNLIMITED;
  private readonly waiting: ((r: Release | undefined) => void)[] = [];

  /** A request counted active, or undefined (overflow) when maxRequests are. */
  request(pool: ConnectionPool): Release | undefined {
    if (this.requests >= pool.maxRequests) return undefined;
    this.requests++;
    return once(() => this.requests--);
  }

  /**
   * A connection for one attempt: at once while fewer than maxConnections
   * are in use, else a place in the queue while fewer than
   * maxPendingRequests wait, else overflow. `ready` gives the connection's
   * release, or undefined once cancelled (the client went away, the
   * deadline passed).
   */
  connection(pool: ConnectionPool): Acquired {
    this.maxConnections = pool.maxConnections;
    if (this.connections < pool.maxConnections) {
      this.connections++;
      return { ready: Promise.resolve(this.releaser()), cancel: () => undefined };
    }
    if (this.waiting.length >= pool.maxPendingRequests) return 'overflow';
    let resolve!: (r: Release | undefined) => void;
    const ready = new Promise<Release | undefined>((r) => {
      resolve = r;
    });
    this.waiting.push(resolve);
    return {
      ready,
      cancel: () => {
        const i = this.waiting.indexOf(resolve);
        if (i >= 0) this.waiting.splice(i, 1);
        resolve(undefined);
      },
    };
  }

  /** A retry counted in flight, or undefined when maxRetries are. */
  retry(pool: ConnectionPool): Release | undefined {
    if (this.retries >= pool.maxRetries) return undefined;
    this.retries++;
    return once(() => this.retries--);
  }

  stats(): { requests: number; connections: number; pending: number; retries: number } {
    return { requests: this.requests, connections: this.connections, pending: this.waiting.length, retries: this.retries };
  }

  /** Whether nothing is held or waiting (the destination's state may be dropped). */
  get idle(): boolean {
    return this.requests === 0 && this.connections === 0 && this.retries === 0 && this.waiting.length === 0;
  }

  private releaser(): Release {
    return once(() => {
      this.connections--;
      // The freed connection goes to the longest waiting, in order.
      while (this.waiting.length > 0 && this.connections < this.maxConnections) {
        const next = this.waiting.shift();
        if (!next) break;
        this.connections++;
        next(this.releaser());
      }
    });
  }
}

function once(f: () => void): Release {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      f();
    }
  };
}
