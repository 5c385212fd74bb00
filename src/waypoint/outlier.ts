// Outlier detection as Envoy does it for Istio's outlierDetection: an
// endpoint answering 5xx (or gateway errors) so many times in a row is
// taken out of its destination's rotation for baseEjectionTime × the
// number of times it was ejected, then comes back. The ejection count goes
// down by one for every interval the endpoint stays in, so an endpoint that
// keeps failing stays out longer each time and one that recovers is soon
// forgiven. Connection failures, resets and timeouts count as gateway
// errors (Envoy's default, which does not split local-origin errors).
// Pure: the clock is injected; state is kept only for endpoints that erred,
// and forgotten when they leave the destination.
import type { Clock } from './retry';
import type { OutlierDetection } from './types';

/** Envoy's max_ejection_time default, which Istio leaves: an ejection lasts at most this (or baseEjectionTime when longer). */
export const MAX_EJECTION_MS = 300_000;

/** How one attempt ended, as outlier detection sees it. */
export type OutlierResult = 'success' | '5xx' | 'gateway';

/** An answer's status as outlier detection counts it; gRPC's status is mapped as Envoy maps it for its router. */
export function outlierResult(status: number, grpcStatus?: number): OutlierResult {
  const s = grpcStatus === 14 ? 503 : grpcStatus === 4 ? 504 : grpcStatus === 13 ? 500 : status;
  if (s === 502 || s === 503 || s === 504) return 'gateway';
  return s >= 500 ? '5xx' : 'success';
}

interface Host {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** Times ejected, going down by one per interval spent in rotation. */
  ejections: number;
  /** Clock time the current ejection ends; undefined when in rotation. */
  until?: number;
}

export class OutlierDetector {
  private readonly hosts = new Map<string, Host>();
  private lastTick: number;
  /** The earliest end of a current ejection (Infinity when none): until then, and within an interval, tick has nothing to do. */
  private nextReturn = Infinity;

  constructor(private readonly clock: Clock) {
    this.lastTick = clock();
  }

  /** Whether the endpoint is out of rotation now. */
  ejected(id: string, cfg: OutlierDetection): boolean {
    this.tick(cfg);
    const h = this.hosts.get(id);
    return h?.until !== undefined;
  }

  /** Endpoints out of rotation now. */
  ejectedCount(cfg: OutlierDetection): number {
    this.tick(cfg);
    let n = 0;
    for (const h of this.hosts.values()) if (h.until !== undefined) n++;
    return n;
  }

  /** Times the endpoint was ejected, as the next ejection's multiplier stands. */
  ejections(id: string): number {
    return this.hosts.get(id)?.ejections ?? 0;
  }

  /**
   * Counts one attempt's result against its endpoint, out of `total`
   * endpoints in the destination; true when it ejected the endpoint.
   */
  record(id: string, result: OutlierResult, total: number, cfg: OutlierDetection): boolean {
    this.tick(cfg);
    let h = this.hosts.get(id);
    if (result === 'success') {
      if (h) h.consecutive5xx = h.consecutiveGateway = 0;
      return false;
    }
    if (!h) {
      h = { consecutive5xx: 0, consecutiveGateway: 0, ejections: 0 };
      this.hosts.set(id, h);
    }
    if (h.until !== undefined) return false; // an answer that was under way when it was ejected
    h.consecutive5xx++;
    if (result === 'gateway') h.consecutiveGateway++;
    const hit =
      (cfg.consecutive5xxErrors > 0 && h.consecutive5xx >= cfg.consecutive5xxErrors) ||
      (cfg.consecutiveGatewayErrors > 0 && h.consecutiveGateway >= cfg.consecutiveGatewayErrors);
    if (!hit) return false;
    // Envoy starts counting afresh whether or not the ejection is allowed.
    h.consecutive5xx = h.consecutiveGateway = 0;
    const out = this.ejectedCount(cfg);
    if (out > 0 && (out + 1) * 100 > cfg.maxEjectionPercent * total) return false;
    h.ejections++;
    h.until = this.clock() + Math.min(cfg.baseEjectionMs * h.ejections, Math.max(MAX_EJECTION_MS, cfg.baseEjectionMs));
    this.nextReturn = Math.min(this.nextReturn, h.until);
    return true;
  }

  /** Forgets the endpoints that are no longer in the destination (called with the current ones). */
  retain(ids: ReadonlySet<string>): void {
    if (this.hosts.size === 0) return;
    for (const id of this.hosts.keys()) if (!ids.has(id)) this.hosts.delete(id);
  }

  /** Endpoints with state kept, for tests and the bound. */
  get size(): number {
    return this.hosts.size;
  }

  /** Brings back the endpoints whose ejection is over, and lowers the counts of those in rotation once per whole interval. */
  private tick(cfg: OutlierDetection): void {
    const now = this.clock();
    const intervals = cfg.intervalMs > 0 ? Math.floor((now - this.lastTick) / cfg.intervalMs) : 0;
    // Called for every endpoint of every request: nothing to walk most of the time.
    if (intervals === 0 && now < this.nextReturn) return;
    if (intervals > 0) this.lastTick += intervals * cfg.intervalMs;
    this.nextReturn = Infinity;
    for (const [id, h] of this.hosts) {
      if (h.until !== undefined && now >= h.until) h.until = undefined;
      else if (h.until !== undefined) this.nextReturn = Math.min(this.nextReturn, h.until);
      else if (intervals > 0) {
        h.ejections = Math.max(0, h.ejections - intervals);
        if (h.ejections === 0 && h.consecutive5xx === 0 && h.consecutiveGateway === 0) this.hosts.delete(id);
      }
    }
  }
}
