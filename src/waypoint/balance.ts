// Choosing where one request goes, in two steps as Envoy does: a backend of
// the rule by weight (the canary split), then an endpoint of that backend
// by least request. Per request, not per connection, so one long-lived
// HTTP/2 or gRPC connection is spread over every endpoint. The random
// source is injected so tests are exact.

/** A number in [0, 1), as Math.random. */
export type Random = () => number;

/**
 * A weighted choice among items; items of weight 0 are never chosen, and
 * undefined comes back when no item has weight. O(n): a rule has at most 16
 * backends.
 */
export function pickWeighted<T extends { weight: number }>(items: readonly T[], random: Random): T | undefined {
  let total = 0;
  for (const it of items) if (it.weight > 0) total += it.weight;
  if (total === 0) return undefined;
  let r = random() * total;
  let last: T | undefined;
  for (const it of items) {
    if (it.weight <= 0) continue;
    if (r < it.weight) return it;
    r -= it.weight;
    last = it;
  }
  return last; // r landed on total through rounding: the last one with weight
}

/** An endpoint of a backend: a pod address and its capacity (the model's Workload.capacity). */
export interface Endpoint {
  /** Unique among the endpoints balanced together, e.g. "10.200.1.11:8080". */
  id: string;
  /** Relative capacity; 0 takes it out of rotation. */
  weight: number;
}

/**
 * Least request with two random choices (Envoy's default choice_count 2):
 * sample two distinct endpoints, in proportion to weight, and take the one
 * with fewer requests in flight per unit of weight. Ties go to the first
 * sampled, so equal load still spreads at random. Endpoints already tried
 * for this request (`exclude`) are skipped while others remain, as Istio's
 * previous-hosts retry predicate does.
 */
export class LeastRequestBalancer {
  private readonly active = new Map<string, number>();

  constructor(private readonly random: Random = Math.random) {}

  /** Requests in flight to an endpoint. */
  inFlight(id: string): number {
    return this.active.get(id) ?? 0;
  }

  pick(endpoints: readonly Endpoint[], exclude?: ReadonlySet<string>): Endpoint | undefined {
    let pool = endpoints.filter((e) => e.weight > 0);
    if (exclude && exclude.size > 0) {
      const fresh = pool.filter((e) => !exclude.has(e.id));
      if (fresh.length > 0) pool = fresh;
    }
    if (pool.length <= 1) return pool[0];
    const first = pickWeighted(pool, this.random);
    const second = pickWeighted(
      pool.filter((e) => e !== first),
      this.random,
    );
    if (!first || !second) return first ?? second;
    const load = (e: Endpoint): number => this.inFlight(e.id) / e.weight;
    return load(second) < load(first) ? second : first;
  }

  /** Counts a request to an endpoint as in flight; the returned function ends it (idempotent). */
  start(id: string): () => void {
    this.active.set(id, this.inFlight(id) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = this.inFlight(id) - 1;
      if (n > 0) this.active.set(id, n);
      else this.active.delete(id); // departed endpoints leave no entry behind
    };
  }
}

/**
 * Weighted round robin: endpoints in turn, each as many times per round as
 * its weight, in the order given (the caller keeps it stable). The position
 * is the destination's, so it survives the endpoints coming and going;
 * exclusions (endpoints already tried) move on to the next one.
 */
export class RoundRobinBalancer {
  private position = 0;

  pick(endpoints: readonly Endpoint[], exclude?: ReadonlySet<string>): Endpoint | undefined {
    const pool = eligible(endpoints, exclude);
    let total = 0;
    for (const e of pool) total += e.weight;
    if (total === 0) return undefined;
    let at = this.position++ % total;
    if (this.position >= Number.MAX_SAFE_INTEGER) this.position = 0;
    for (const e of pool) {
      if (at < e.weight) return e;
      at -= e.weight;
    }
    return pool[pool.length - 1];
  }
}

/** A random endpoint in proportion to weight (Istio's RANDOM). */
export const pickRandom = (endpoints: readonly Endpoint[], random: Random, exclude?: ReadonlySet<string>): Endpoint | undefined =>
  pickWeighted(eligible(endpoints, exclude), random);

/**
 * Consistent hashing by rendezvous (highest random weight): each endpoint
 * scores hash(key, endpoint), scaled by its weight, and the best wins. The
 * same key finds the same endpoint while it is there; an endpoint leaving
 * moves only its own keys, and a retry takes the next best.
 */
export function pickHashed(endpoints: readonly Endpoint[], key: string, exclude?: ReadonlySet<string>): Endpoint | undefined {
  let best: Endpoint | undefined;
  let bestScore = -Infinity;
  for (const e of eligible(endpoints, exclude)) {
    // A uniform in (0, 1) from the hash; -w / ln(u) is the weighted rendezvous score.
    const u = (hash32(`${key}\u0000${e.id}`) + 0.5) / 2 ** 32;
    const score = -e.weight / Math.log(u);
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}

/** FNV-1a over UTF-16 code units, then murmur3's finaliser so that near keys spread. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Endpoints with weight, less the excluded while any other remains. */
function eligible(endpoints: readonly Endpoint[], exclude?: ReadonlySet<string>): Endpoint[] {
  const pool = endpoints.filter((e) => e.weight > 0);
  if (!exclude || exclude.size === 0) return pool;
  const fresh = pool.filter((e) => !exclude.has(e.id));
  return fresh.length > 0 ? fresh : pool;
}
