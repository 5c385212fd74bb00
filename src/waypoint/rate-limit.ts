// Local rate limits at the waypoint (Linkerd's HTTPLocalRateLimitPolicy on a
// service): token buckets refilled at requestsPerSecond, each holding at most
// one second's worth, so a client may burst up to its rate and then goes at
// it. A request takes a token from every bucket that applies (the service's
// total and the client's identity or override bucket) or from none: a refused
// request costs nothing, so a client that is turned away does not starve
// itself or others of the share it could still use.
//
// Buckets live as long as the proxy (a reload keeps what clients have
// spent) and are bounded in number: the least recently used goes first. An
// evicted bucket comes back full, which is what an idle one would have been
// anyway; identities are mTLS-verified, but a client rotating through many
// of them must still not grow the waypoint's memory.
import { parseSpiffe } from '../identity/spiffe';
import type { Clock } from './retry';
import type { RateLimitPolicy } from './types';

/** The policies of one configuration, by service key; replaced as a whole on reload. */
export class RateLimitTable {
  private readonly byService = new Map<string, RateLimitPolicy>();
  constructor(policies: readonly RateLimitPolicy[] = []) {
    for (const p of policies) if (!this.byService.has(p.service)) this.byService.set(p.service, p);
  }
  policyFor(service: string): RateLimitPolicy | undefined {
    return this.byService.get(service);
  }
  get size(): number {
    return this.byService.size;
  }
}

/** Which limit refused a request, for the access log and the metric. */
export interface RateLimited {
  /** "<namespace>/<name>" of the policy. */
  policy: string;
  limit: 'total' | 'identity' | 'override';
  requestsPerSecond: number;
}

interface Bucket {
  tokens: number;
  /** Clock reading of the last refill (ms). */
  at: number;
  rate: number;
}

/** Buckets kept at most by default: a few thousand client identities per waypoint. */
export const DEFAULT_MAX_BUCKETS = 10_000;

export class RateLimiter {
  /** Insertion order is recency: a bucket used is moved to the end. */
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly clock: Clock,
    readonly maxBuckets = DEFAULT_MAX_BUCKETS,
  ) {}

  /** Takes a token for a request from srcIdentity to the service; the limit that refused it, or undefined when it may go. */
  take(table: RateLimitTable | undefined, service: string, srcIdentity: string): RateLimited | undefined {
    const p = table?.policyFor(service);
    if (!p) return undefined;
    const key = `${p.namespace}/${p.name}`;
    const applies: { id: string; limit: RateLimited['limit']; rate: number }[] = [];
    if (p.total !== undefined) applies.push({ id: `${key}|total|${p.total}`, limit: 'total', rate: p.total });
    const o = overrideOf(p, srcIdentity);
    if (o !== undefined) {
      const ov = p.overrides[o];
      if (ov) applies.push({ id: `${key}|override|${o}|${ov.requestsPerSecond}`, limit: 'override', rate: ov.requestsPerSecond });
    } else if (p.identity !== undefined) {
      applies.push({ id: `${key}|identity|${p.identity}|${srcIdentity}`, limit: 'identity', rate: p.identity });
    }
    const now = this.clock();
    const held = applies.map((a) => ({ a, b: this.bucket(a.id, a.rate, now) }));
    const short = held.find(({ b }) => b.tokens < 1);
    if (short) return { policy: key, limit: short.a.limit, requestsPerSecond: short.a.rate };
    for (const { b } of held) b.tokens -= 1;
    return undefined;
  }

  /** Buckets held now (for the config dump and tests). */
  get size(): number {
    return this.buckets.size;
  }

  private bucket(id: string, rate: number, now: number): Bucket {
    let b = this.buckets.get(id);
    if (b) {
      this.buckets.delete(id);
      // A clock that went backwards refills nothing rather than draining.
      b.tokens = Math.min(rate, b.tokens + (Math.max(0, now - b.at) * rate) / 1000);
      b.at = now;
    } else {
      b = { tokens: rate, at: now, rate };
      while (this.buckets.size >= this.maxBuckets) {
        const oldest = this.buckets.keys().next();
        if (oldest.done) break;
        this.buckets.delete(oldest.value);
      }
    }
    this.buckets.set(id, b);
    return b;
  }
}

/** The index of the first override naming the client's service account, if any. */
function overrideOf(p: RateLimitPolicy, srcIdentity: string): number | undefined {
  if (p.overrides.length === 0) return undefined;
  const id = parseSpiffe(srcIdentity);
  if (!id) return undefined;
  const i = p.overrides.findIndex((o) => o.clients.some((c) => c.namespace === id.namespace && c.name === id.serviceAccount));
  return i < 0 ? undefined : i;
}
