// The node's view of the mesh, indexed for the per-connection lookups
// (address → workload or service, service → endpoints). Replaced as a
// whole when the source delivers a new valid state.
import { EventEmitter } from 'node:events';
import { workloadIdentity } from '../identity/spiffe';
import { type MeshConfig, type Service, serviceKey, type Workload } from './types';

export class MeshStore extends EventEmitter {
  private cfg!: MeshConfig;
  private byIp = new Map<string, Workload>();
  private byVip = new Map<string, Service>();
  private endpointsOf = new Map<Service, Workload[]>();

  constructor(cfg: MeshConfig) {
    super();
    this.index(cfg);
  }

  get config(): MeshConfig {
    return this.cfg;
  }
  get trustDomain(): string {
    return this.cfg.trustDomain;
  }

  replace(cfg: MeshConfig): void {
    this.index(cfg);
    this.emit('changed', cfg);
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.byIp.get(ip);
  }
  serviceByVip(ip: string): Service | undefined {
    return this.byVip.get(ip);
  }
  endpoints(s: Service): Workload[] {
    return this.endpointsOf.get(s) ?? [];
  }
  workloadsOn(node: string): Workload[] {
    return this.cfg.workloads.filter((w) => w.node === node);
  }
  identityOf(w: Workload): string {
    return workloadIdentity(w.trustDomain ?? this.cfg.trustDomain, w);
  }

  private index(cfg: MeshConfig): void {
    this.cfg = cfg;
    this.byIp = new Map(cfg.workloads.flatMap((w) => w.addresses.map((a) => [a, w] as const)));
    this.byVip = new Map(cfg.services.flatMap((s) => s.addresses.map((a) => [a, s] as const)));
    // Endpoints: picked by the service's selector (standalone YAML), or naming the service themselves (xDS).
    this.endpointsOf = new Map(
      cfg.services.map((s) => {
        const key = serviceKey(s);
        return [
          s,
          cfg.workloads.filter((w) => w.services?.includes(key) || (w.namespace === s.namespace && selects(s.selector, w.labels))),
        ];
      }),
    );
  }
}

/** A selector selects a workload when every key matches; an empty selector selects nothing (as in Kubernetes). */
function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const keys = Object.keys(selector);
  return keys.length > 0 && keys.every((k) => labels[k] === selector[k]);
}
