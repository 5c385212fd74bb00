// Istio's waypoints as the API server describes them, handed to the same
// reader as the standalone YAML's `routes:` (applyWaypointDocs): Gateways of
// class istio-waypoint, and the istio.io/use-waypoint labels of namespaces
// and services as Namespace and Service objects (a pod's labels are read
// from its workload). A waypoint's pods are those Kubernetes labels
// gateway.networking.k8s.io/gateway-name: <gateway>.
// HTTPRoutes, GRPCRoutes and AuthorizationPolicies go to the reader as they
// are, but for what belongs to another controller: references to Gateways
// of another class (an ingress) are left out, and an object with nothing
// else is not the mesh's at all. DestinationRules go as they are: one for a
// host outside the mesh model applies to nothing (the reader warns).

import { GATEWAY_GROUP, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, WAYPOINT_CLASS } from '../sources/istio-waypoint';
import { isObj } from '../sources/k8s-doc';
import { GATEWAY_NAME_LABEL } from '../sources/standalone-waypoints';
import type { Service as MeshService } from '../state/types';
import type { CheckedObject, Gateway, GatewayAddressEntry, Namespace, Service } from './types';

export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1';
export const ISTIO_SECURITY_VERSION = 'security.istio.io/v1';
export const ISTIO_NETWORKING_VERSION = 'networking.istio.io/v1';
export const LINKERD_POLICY_VERSION = 'policy.linkerd.io/v1alpha1';

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

/**
 * A cluster object for the reader. When references to other controllers'
 * Gateways were left out of it, `refs` gives the index each kept one has in
 * the object, so that a problem names the field as the user wrote it.
 */
export interface ClusterDoc {
  doc: unknown;
  refs?: { field: string; kept: number[] };
}

const byName = (a: CheckedObject, b: CheckedObject): number => {
  const x = `${a.metadata.namespace ?? ''}/${a.metadata.name}`;
  const y = `${b.metadata.namespace ?? ''}/${b.metadata.name}`;
  return x < y ? -1 : x > y ? 1 : 0;
};

/** As the reader reads a document: a list's items come without kind and apiVersion, and status is not the user's. */
function docOf(apiVersion: string, kind: string, o: CheckedObject, spec: unknown): Record<string, unknown> {
  const m = o.metadata;
  return {
    apiVersion,
    kind,
    metadata: {
      name: m.name,
      namespace: m.namespace ?? 'default',
      ...(m.labels ? { labels: m.labels } : {}),
      ...(m.annotations ? { annotations: m.annotations } : {}),
      ...(m.creationTimestamp ? { creationTimestamp: m.creationTimestamp } : {}),
    },
    ...(spec === undefined ? {} : { spec }),
  };
}

/** "ns/name" of every Gateway of another class than istio-waypoint: an ingress, for its own controller to act on. */
const otherGateways = (gateways: readonly Gateway[]): Set<string> =>
  new Set(
    gateways
      .filter((g) => g.spec.gatewayClassName !== WAYPOINT_CLASS)
      .map((g) => `${g.metadata.namespace ?? 'default'}/${g.metadata.name}`),
  );

/**
 * A reference to a Gateway of another class. One naming no Gateway at all
 * is not: it may be a waypoint's name mistyped, which the reader reports.
 * `kind` and `group` are the field's defaults when the reference leaves
 * them out.
 */
function foreign(ref: unknown, ns: string, others: Set<string>, defaults: { group?: string; kind?: string }): boolean {
  if (!isObj(ref)) return false;
  const group = ref.group ?? defaults.group;
  const kind = ref.kind ?? defaults.kind;
  if (group !== GATEWAY_GROUP || kind !== 'Gateway' || typeof ref.name !== 'string') return false;
  const gns = typeof ref.namespace === 'string' ? ref.namespace : ns;
  return others.has(`${gns}/${ref.name}`);
}

/** The object without its references to foreign Gateways; undefined when it had only those. */
function withoutForeign(
  apiVersion: string,
  kind: string,
  o: CheckedObject,
  field: string,
  isForeign: (ref: unknown, ns: string) => boolean,
): ClusterDoc | undefined {
  const spec = o.spec;
  const refs = isObj(spec) ? spec[field] : undefined;
  if (!isObj(spec) || !Array.isArray(refs) || refs.length === 0) return { doc: docOf(apiVersion, kind, o, spec) };
  const ns = o.metadata.namespace ?? 'default';
  const kept = refs.flatMap((r, i) => (isForeign(r, ns) ? [] : [i]));
  if (kept.length === 0) return undefined;
  if (kept.length === refs.length) return { doc: docOf(apiVersion, kind, o, spec) };
  return { doc: docOf(apiVersion, kind, o, { ...spec, [field]: kept.map((i) => refs[i]) }), refs: { field: `spec.${field}`, kept } };
}

/**
 * The HTTPRoutes and GRPCRoutes of the mesh: those attached to a Service
 * (or to a waypoint, which the reader explains it does not support);
 * routes of ingress Gateways are left to their controller without a word.
 */
export function routeDocs(o: {
  httpRoutes: readonly CheckedObject[];
  grpcRoutes: readonly CheckedObject[];
  gateways: readonly Gateway[];
}): ClusterDoc[] {
  const others = otherGateways(o.gateways);
  // A parentRef is a Gateway unless it says otherwise.
  const isForeign = (ref: unknown, ns: string): boolean => foreign(ref, ns, others, { group: GATEWAY_GROUP, kind: 'Gateway' });
  const read = (kind: string, list: readonly CheckedObject[]): ClusterDoc[] =>
    [...list].sort(byName).flatMap((r) => withoutForeign(GATEWAY_API_VERSION, kind, r, 'parentRefs', isForeign) ?? []);
  return [...read('HTTPRoute', o.httpRoutes), ...read('GRPCRoute', o.grpcRoutes)];
}

/**
 * Every AuthorizationPolicy, but those that target only Gateways of
 * another class (Istio's ingress policies); the node tunnel's conversion
 * and the waypoint's reader each take theirs from this list.
 */
export function policyDocs(o: { policies: readonly CheckedObject[]; gateways: readonly Gateway[] }): ClusterDoc[] {
  const others = otherGateways(o.gateways);
  const isForeign = (ref: unknown, ns: string): boolean => foreign(ref, ns, others, {});
  return [...o.policies].sort(byName).flatMap((p) => {
    const spec = isObj(p.spec) ? p.spec : {};
    if (spec.targetRefs === undefined && spec.targetRef !== undefined && isForeign(spec.targetRef, p.metadata.namespace ?? 'default'))
      return [];
    return withoutForeign(ISTIO_SECURITY_VERSION, 'AuthorizationPolicy', p, 'targetRefs', isForeign) ?? [];
  });
}

/**
 * Every DestinationRule, for the waypoints. One with a workloadSelector is
 * a sidecar's business (Istio applies it to the selected workloads' own
 * proxies), not a waypoint's: left out without a word.
 */
export function destinationRuleDocs(rules: readonly CheckedObject[]): ClusterDoc[] {
  return [...rules]
    .sort(byName)
    .filter((r) => !(isObj(r.spec) && r.spec.workloadSelector !== undefined))
    .map((r) => ({ doc: docOf(ISTIO_NETWORKING_VERSION, 'DestinationRule', r, r.spec) }));
}

/**
 * The VirtualServices of the mesh, for the waypoints: those without
 * `gateways` or naming the reserved `mesh` (whose other gateways, an
 * ingress's, are not the waypoint's business and are left out), with http
 * routes. One bound to gateways only, or with only tcp or tls routes,
 * belongs to an ingress or a sidecar: left out without a word.
 */
export function virtualServiceDocs(list: readonly CheckedObject[]): ClusterDoc[] {
  return [...list].sort(byName).flatMap((v) => {
    const spec = isObj(v.spec) ? v.spec : {};
    const gateways = Array.isArray(spec.gateways) ? spec.gateways : undefined;
    if ((gateways && !gateways.includes('mesh')) || !Array.isArray(spec.http)) return [];
    const { gateways: _, ...rest } = spec;
    return [{ doc: docOf(ISTIO_NETWORKING_VERSION, 'VirtualService', v, gateways ? rest : spec) }];
  });
}

/**
 * The HTTPLocalRateLimitPolicies that target a Service, for the waypoints.
 * One targeting a Linkerd Server (or anything else) is Linkerd's business
 * in a cluster that runs both: left out without a word.
 */
export function rateLimitDocs(policies: readonly CheckedObject[]): ClusterDoc[] {
  return [...policies]
    .sort(byName)
    .filter((p) => {
      const ref = isObj(p.spec) && isObj(p.spec.targetRef) ? p.spec.targetRef : undefined;
      return ref?.kind === 'Service' && (ref.group === undefined || ref.group === '' || ref.group === 'core');
    })
    .map((p) => ({ doc: docOf(LINKERD_POLICY_VERSION, 'HTTPLocalRateLimitPolicy', p, p.spec) }));
}
