// Istio's waypoints as the API server describes them, handed to the same
// reader as the standalone YAML's `routes:` (applyWaypointDocs): Gateways of
// class istio-waypoint, and the istio.io/use-waypoint labels of namespaces
// and services as Namespace and Service objects (a pod's labels are read
// from its workload). A waypoint's pods are those Kubernetes labels
// gateway.networking.k8s.io/gateway-name: <gateway>.
import { USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, WAYPOINT_CLASS } from '../sources/istio-waypoint';
import { GATEWAY_NAME_LABEL } from '../sources/standalone-waypoints';
import type { Service as MeshService } from '../state/types';
import type { Gateway, GatewayAddressEntry, Namespace, Service } from './types';

export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1';

const isIp = (a: GatewayAddressEntry): boolean => (a.type ?? 'IPAddress') === 'IPAddress';

/** Only the labels that choose a waypoint: the others cannot change it, and a namespace may carry many. */
function waypointLabels(labels: Record<string, string> | undefined): Record<string, string> | undefined {
  if (labels?.[USE_WAYPOINT] === undefined) return undefined;
  const out: Record<string, string> = { [USE_WAYPOINT]: labels[USE_WAYPOINT] };
  if (labels[USE_WAYPOINT_NAMESPACE] !== undefined) out[USE_WAYPOINT_NAMESPACE] = labels[USE_WAYPOINT_NAMESPACE];
  return out;
}

/**
 * Where the node tunnel reaches a waypoint, when the Gateway does not say
 * (spec.addresses): the IP Istio reports in its status, else the VIP of a
 * service selecting exactly its pods; undefined leaves it to the reader
 * (its first pod's address).
 */
function addressesOf(g: Gateway, services: readonly Service[]): GatewayAddressEntry[] | undefined {
  if (g.spec.addresses?.length) return g.spec.addresses;
  const reported = g.status?.addresses?.filter(isIp) ?? [];
  if (reported.length) return reported.map((a) => ({ type: 'IPAddress', value: a.value }));
  const ns = g.metadata.namespace ?? 'default';
  const svc = services.find((s) => {
    const sel = s.spec.selector ?? {};
    return (s.metadata.namespace ?? 'default') === ns && Object.keys(sel).length === 1 && sel[GATEWAY_NAME_LABEL] === g.metadata.name;
  });
  const vip = svc?.spec.clusterIP;
  return vip && vip !== 'None' ? [{ type: 'IPAddress', value: vip }] : undefined;
}

/**
 * The waypoint documents of a cluster: each Gateway of class istio-waypoint
 * (other classes are another controller's business, so not even warned
 * about), then the namespaces and the services of the mesh model that
 * carry istio.io/use-waypoint.
 */
export function waypointDocs(o: {
  gateways: readonly Gateway[];
  namespaces: readonly Namespace[];
  services: readonly Service[];
  mesh: readonly MeshService[];
}): unknown[] {
  const docs: unknown[] = [];
  for (const g of o.gateways) {
    if (g.spec.gatewayClassName !== WAYPOINT_CLASS) continue;
    const addresses = addressesOf(g, o.services);
    docs.push({
      apiVersion: GATEWAY_API_VERSION,
      kind: 'Gateway',
      metadata: {
        name: g.metadata.name,
        namespace: g.metadata.namespace ?? 'default',
        labels: g.metadata.labels ?? {},
        ...(g.metadata.creationTimestamp ? { creationTimestamp: g.metadata.creationTimestamp } : {}),
      },
      spec: { gatewayClassName: WAYPOINT_CLASS, listeners: g.spec.listeners ?? [], ...(addresses ? { addresses } : {}) },
    });
  }
  for (const n of o.namespaces) {
    const labels = waypointLabels(n.metadata.labels);
    if (labels) docs.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.metadata.name, labels } });
  }
  const known = new Set(o.mesh.map((s) => `${s.namespace}/${s.name}`));
  for (const s of o.services) {
    const labels = waypointLabels(s.metadata.labels);
    const ns = s.metadata.namespace ?? 'default';
    // Headless and ExternalName services are not in the model: nothing of theirs is captured, so no waypoint either.
    if (labels && known.has(`${ns}/${s.metadata.name}`))
      docs.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: s.metadata.name, namespace: ns, labels } });
  }
  return docs;
}
