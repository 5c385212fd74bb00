// The mesh as the API server describes it: which pods are in the mesh
// (labels), their identity facts (service account, labels, IPs, node), and
// services with their endpoints (EndpointSlices). Used by the control
// plane (`--kubernetes`) to build what it serves, and by node agents to
// know which of their pods to capture.
import net from 'node:net';
import type { Service as MeshService, Workload } from '../state/types';
import type { EndpointSlice, Namespace, Pod, Service } from './types';

/** The label that puts a namespace or a pod in the mesh (ambient) or, on a pod, keeps it out (none). */
export const MODE_LABEL = 'ambit.dev/mode';
export const CLUSTER_DOMAIN = 'cluster.local';

/** A pod's workload uid: the form istiod gives Kubernetes pods. */
export const podUid = (p: Pod): string => `Kubernetes//Pod/${p.metadata.namespace}/${p.metadata.name}`;

/**
 * In the mesh: the pod says ambient, or its namespace does and the pod does
 * not opt out. Host-network pods share the node's netns and can never be.
 */
export function inMesh(pod: Pod, ns: Namespace | undefined): boolean {
  if (pod.spec.hostNetwork) return false;
  const own = pod.metadata.labels?.[MODE_LABEL];
  if (own === 'none') return false;
  return own === 'ambient' || ns?.metadata.labels?.[MODE_LABEL] === 'ambient';
}

/** Pods that have an address and are not finished or being deleted. */
export function isLive(pod: Pod): boolean {
  return !!podIps(pod).length && pod.status.phase !== 'Succeeded' && pod.status.phase !== 'Failed' && !pod.metadata.deletionTimestamp;
}

const podIps = (p: Pod): string[] =>
  (p.status.podIPs?.map((x) => x.ip) ?? (p.status.podIP ? [p.status.podIP] : [])).filter((ip) => net.isIPv4(ip));

export function workloadOf(pod: Pod, ns: Namespace | undefined, services: string[]): Workload {
  return {
    uid: podUid(pod),
    name: pod.metadata.name,
    namespace: pod.metadata.namespace ?? 'default',
    serviceAccount: pod.spec.serviceAccountName || 'default',
    node: pod.spec.nodeName ?? '',
    addresses: podIps(pod),
    protocol: inMesh(pod, ns) ? 'HBONE' : 'NONE',
    dataplane: 'ambient',
    labels: { ...(pod.metadata.labels ?? {}) },
    capacity: 1,
    services,
    authorizationPolicies: [],
  };
}

export interface ClusterObjects {
  pods: Pod[];
  namespaces: Namespace[];
  services: Service[];
  slices: EndpointSlice[];
}

/** Workloads (every live pod with an IPv4 address) and ClusterIP services with their endpoints. */
export function meshFromCluster(o: ClusterObjects): { workloads: Workload[]; services: MeshService[] } {
  const nsByName = new Map(o.namespaces.map((n) => [n.metadata.name, n]));
  const services: MeshService[] = [];
  const backs = new Map<string, string[]>(); // pod "ns/name" → service keys
  for (const s of o.services) {
    const ips = (s.spec.clusterIPs ?? (s.spec.clusterIP ? [s.spec.clusterIP] : [])).filter((ip) => net.isIPv4(ip));
    if (!ips.length) continue; // headless or ExternalName: nothing to capture
    const ns = s.metadata.namespace ?? 'default';
    const hostname = `${s.metadata.name}.${ns}.svc.${CLUSTER_DOMAIN}`;
    const slices = o.slices.filter(
      (sl) =>
        sl.metadata.namespace === ns && sl.metadata.labels?.['kubernetes.io/service-name'] === s.metadata.name && sl.addressType === 'IPv4',
    );
    services.push({
      name: s.metadata.name,
      namespace: ns,
      hostname,
      addresses: ips,
      selector: {},
      ports: (s.spec.ports ?? [])
        .filter((p) => (p.protocol ?? 'TCP') === 'TCP')
        // name and appProtocol: how a waypoint tells HTTP from TCP on the port.
        .map((p) => ({
          port: p.port,
          targetPort: targetPort(p, slices),
          ...(p.name ? { name: p.name } : {}),
          ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
        })),
    });
    for (const sl of slices) {
      for (const e of sl.endpoints ?? []) {
        if (e.targetRef?.kind !== 'Pod') continue;
        const k = `${e.targetRef.namespace ?? ns}/${e.targetRef.name}`;
        backs.set(k, [...(backs.get(k) ?? []), `${ns}/${hostname}`]);
      }
    }
  }
  const workloads = o.pods
    .filter(isLive)
    .map((p) =>
      workloadOf(p, nsByName.get(p.metadata.namespace ?? 'default'), [
        ...new Set(backs.get(`${p.metadata.namespace}/${p.metadata.name}`) ?? []),
      ]),
    );
  return { workloads, services };
}

/** A named targetPort resolves through the EndpointSlice port of the same name (what kube-proxy uses). */
function targetPort(p: NonNullable<Service['spec']['ports']>[number], slices: EndpointSlice[]): number {
  if (typeof p.targetPort === 'number') return p.targetPort;
  if (typeof p.targetPort === 'string' && /^\d+$/.test(p.targetPort)) return Number(p.targetPort);
  if (p.targetPort === undefined) return p.port;
  for (const sl of slices) for (const sp of sl.ports ?? []) if ((sp.name ?? '') === (p.name ?? '') && sp.port) return sp.port;
  return p.port;
}
