// What a DestinationRule changes for one destination (a service, or a
// subset of it): which endpoints (the subset's labels), how one is chosen
// (loadBalancer), the circuit breakers (connectionPool) and outlier
// detection, with Istio's defaults where the rule says nothing (least
// request, no limits, no ejection). DestinationTable is the configuration's
// view, rebuilt on reload; DestinationState is what the waypoint learns of
// a destination (load, ejections) and keeps across reloads, one per
// service port and subset, with their number bounded.
import { type Endpoint, LeastRequestBalancer, pickHashed, pickRandom, type Random, RoundRobinBalancer } from './balance';
import { CircuitBreaker, ISTIO_DEFAULT_POOL } from './circuit';
import { OutlierDetector } from './outlier';
import type { Clock } from './retry';
import type { ConnectionPool, DestinationPolicy, Label, LoadBalancer, OutlierDetection, TrafficPolicy } from './types';

/** Istio's defaults for the fields of an outlierDetection that leaves them out. */
export const ISTIO_OUTLIER_DEFAULTS: OutlierDetection = Object.freeze({
  consecutive5xxErrors: 5,
  consecutiveGatewayErrors: 0,
  intervalMs: 10_000,
  baseEjectionMs: 30_000,
  maxEjectionPercent: 10,
});

/** Istio's default load balancer. */
export const ISTIO_DEFAULT_LB: LoadBalancer = Object.freeze({ type: 'LEAST_REQUEST' });

/** The policy a destination is served with, every part decided. */
export interface EffectivePolicy {
  loadBalancer: LoadBalancer;
  connectionPool: ConnectionPool;
  /** undefined: no outlier detection (Istio's default). */
  outlierDetection?: OutlierDetection;
  /** The subset's labels an endpoint must carry; empty for the whole service. */
  labels: Label[];
  /** "<namespace>/<name>" of the DestinationRule, for the access log. */
  rule?: string;
}

export const DEFAULT_POLICY: EffectivePolicy = Object.freeze({
  loadBalancer: ISTIO_DEFAULT_LB,
  connectionPool: ISTIO_DEFAULT_POOL,
  labels: [],
});

/** A subset's policy over its rule's: each part the subset sets replaces the rule's (Istio's merge). */
export function mergePolicies(top: TrafficPolicy, subset: TrafficPolicy | undefined): TrafficPolicy {
  return {
    ...top,
    ...(subset?.loadBalancer ? { loadBalancer: subset.loadBalancer } : {}),
    ...(subset?.connectionPool ? { connectionPool: subset.connectionPool } : {}),
    ...(subset?.outlierDetection ? { outlierDetection: subset.outlierDetection } : {}),
  };
}

/** The DestinationRules of a configuration, by service. */
export class DestinationTable {
  private readonly byService = new Map<string, DestinationPolicy>();

  constructor(policies: readonly DestinationPolicy[] = []) {
    // The source keeps one rule per service; should two arrive, the first stands, as there.
    for (const p of policies) if (!this.byService.has(p.service)) this.byService.set(p.service, p);
  }

  get size(): number {
    return this.byService.size;
  }

  /**
   * The policy of a service, or of one of its subsets; undefined when the
   * subset is not defined (its endpoints are none: Envoy has no such cluster).
   */
  policyFor(service: string, subset?: string): EffectivePolicy | undefined {
    const p = this.byService.get(service);
    if (subset === undefined) return p ? effective(p.trafficPolicy, [], p) : DEFAULT_POLICY;
    const s = p?.subsets.find((x) => x.name === subset);
    if (!p || !s) return undefined;
    return effective(mergePolicies(p.trafficPolicy, s.trafficPolicy), s.labels, p);
  }
}

function effective(t: TrafficPolicy, labels: Label[], p: DestinationPolicy): EffectivePolicy {
  return {
    loadBalancer: t.loadBalancer ?? ISTIO_DEFAULT_LB,
    connectionPool: t.connectionPool ?? ISTIO_DEFAULT_POOL,
    ...(t.outlierDetection ? { outlierDetection: t.outlierDetection } : {}),
    labels,
    rule: `${p.namespace}/${p.name}`,
  };
}

/** Whether a workload's labels carry every label of a subset. */
export const inSubset = (labels: Record<string, string>, subset: readonly Label[]): boolean =>
  subset.every((l) => labels[l.key] === l.value);

/** What a request offers to a consistent hash. */
export interface HashInput {
  headers: Record<string, string | string[] | undefined>;
  srcIp: string;
}

/** The key a consistent-hash balancer hashes, or undefined when the request has none (the pick is then random, as Envoy's). */
export function hashKey(lb: LoadBalancer, r: HashInput): string | undefined {
  if (lb.type === 'HASH_SOURCE_IP') return r.srcIp;
  if (lb.type === 'HASH_HEADER') {
    const v = r.headers[lb.name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : v;
  }
  if (lb.type === 'HASH_COOKIE') {
    const raw = r.headers.cookie;
    for (const part of (Array.isArray(raw) ? raw.join('; ') : (raw ?? '')).split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === lb.name) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** What the waypoint keeps for one destination across requests and reloads. */
export class DestinationState {
  readonly breaker = new CircuitBreaker();
  readonly outlier: OutlierDetector;
  private readonly leastRequest: LeastRequestBalancer;
  private readonly roundRobin = new RoundRobinBalancer();

  constructor(
    private readonly random: Random,
    clock: Clock,
  ) {
    this.outlier = new OutlierDetector(clock);
    this.leastRequest = new LeastRequestBalancer(random);
  }

  /**
   * The endpoint for an attempt: among those not ejected (all of them out
   * is no healthy upstream: Istio sets no panic threshold with outlier
   * detection), by the policy's balancer, avoiding those already tried.
   */
  pick<E extends Endpoint>(policy: EffectivePolicy, endpoints: readonly E[], tried: ReadonlySet<string>, input: HashInput): E | undefined {
    const od = policy.outlierDetection;
    if (od && this.outlier.size > endpoints.length) this.outlier.retain(new Set(endpoints.map((e) => e.id)));
    const pool = od ? endpoints.filter((e) => !this.outlier.ejected(e.id, od)) : endpoints;
    const lb = policy.loadBalancer;
    switch (lb.type) {
      case 'LEAST_REQUEST':
        return this.leastRequest.pick(pool, tried) as E | undefined;
      case 'ROUND_ROBIN':
        return this.roundRobin.pick(pool, tried) as E | undefined;
      case 'RANDOM':
        return pickRandom(pool, this.random, tried) as E | undefined;
      default: {
        const key = hashKey(lb, input);
        return (key === undefined ? pickRandom(pool, this.random, tried) : pickHashed(pool, key, tried)) as E | undefined;
      }
    }
  }

  /** Counts an attempt in flight to an endpoint (least request reads it); the returned function ends it. */
  start(id: string): () => void {
    return this.leastRequest.start(id);
  }
}
