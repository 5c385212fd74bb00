// Who a connection came from, as the destination may report it: only what
// the peer proved (its certificate's SPIFFE id) and what the mesh state
// says (which workload holds an address, and what identity it runs as).
// The peer's own claims — baggage, the forwarded service host — are hints:
// used when the mesh confirms them, dropped otherwise, so a peer can
// neither pose as another workload nor mint metric series at will.
import { parseSpiffe } from '../identity/spiffe';
import type { MeshConfig, Service, Workload } from '../state/types';

/** The part of the mesh store the resolution reads (MeshStore satisfies it). */
export interface MeshView {
  readonly config: MeshConfig;
  workloadByIp(ip: string): Workload | undefined;
  identityOf(w: Workload): string;
  endpoints(s: Service): Workload[];
}

export interface VerifiedSource {
  /** The source workload, when the mesh confirms it runs as the verified identity. */
  workload?: Workload;
  /** From the workload, else from the verified SPIFFE id. */
  namespace?: string;
  principal: string;
  /** How the workload was found, or why it was not (for the debug log, never a label). */
  how: 'address' | 'baggage' | 'address_identity_mismatch' | 'unknown';
}

/** Name and namespace claimed in a baggage header (k8s.pod.name, k8s.namespace.name). */
export interface Claim {
  name: string;
  namespace: string;
}

interface Index {
  byName: Map<string, Workload>;
  servicesByHost: Map<string, Service[]>;
}
const indexes = new WeakMap<MeshConfig, Index>();

/** Built once per state (the store replaces its config object on every change). */
function indexOf(cfg: MeshConfig): Index {
  let ix = indexes.get(cfg);
  if (!ix) {
    const servicesByHost = new Map<string, Service[]>();
    for (const s of cfg.services) servicesByHost.set(s.hostname, [...(servicesByHost.get(s.hostname) ?? []), s]);
    ix = { byName: new Map(cfg.workloads.map((w) => [`${w.namespace}/${w.name}`, w])), servicesByHost };
    indexes.set(cfg, ix);
  }
  return ix;
}

export function verifiedSource(mesh: MeshView, srcIp: string, principal: string, claim: Claim | undefined): VerifiedSource {
  const namespace = parseSpiffe(principal)?.namespace;
  const byAddress = mesh.workloadByIp(srcIp);
  if (byAddress && mesh.identityOf(byAddress) === principal)
    return { workload: byAddress, namespace: byAddress.namespace, principal, how: 'address' };
  // The address is not a workload's (a node address, a sidecar behind NAT): the claim
  // stands if it names a workload that runs as the identity the peer proved.
  if (!byAddress && claim) {
    const named = indexOf(mesh.config).byName.get(`${claim.namespace}/${claim.name}`);
    if (named && mesh.identityOf(named) === principal) return { workload: named, namespace: named.namespace, principal, how: 'baggage' };
  }
  return { namespace, principal, how: byAddress ? 'address_identity_mismatch' : 'unknown' };
}

/** The service hostname a peer named, if the mesh has it and it routes to dst; else undefined. */
export function verifiedService(mesh: MeshView, host: string | undefined, dst: Workload): string | undefined {
  if (!host) return undefined;
  const services = indexOf(mesh.config).servicesByHost.get(host) ?? [];
  return services.some((s) => mesh.endpoints(s).some((w) => w.uid === dst.uid)) ? host : undefined;
}

/** Whether a workload with this namespace and name is in the state (for removing the series of those gone). */
export function workloadPresent(cfg: MeshConfig, namespace: string, name: string): boolean {
  return indexOf(cfg).byName.has(`${namespace}/${name}`);
}
