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
