// Waypoints in the standalone YAML: the Gateway API and Istio objects under
// `routes:` (waypoint Gateways, HTTPRoutes, GRPCRoutes, targeted
// AuthorizationPolicies, DestinationRules, VirtualServices, Namespace and Service labels) are read by the
// waypoint's reader (gateway-api.ts), with the labels of `services:` and
// `namespaces:` entries given to it as Service and Namespace objects, and
// the AuthorizationPolicies with targetRefs written under `policies:`, so
// that each reads the same wherever it is written. What the node tunnel
// needs comes out of it (applyWaypointDocs, shared with the Kubernetes
// view in src/kube/cluster-source.ts): each waypoint's address and
// identity, and the `waypoint` of every service and workload that uses one.
import net from 'node:net';
import { type GatewayAddress, type MeshConfig, type MeshWaypoint, serviceKey, WAYPOINT_HBONE_PORT, type Workload } from '../state/types';
import type { WaypointConfig } from '../waypoint/types';
import { compileWaypointConfig } from './gateway-api';
import { waypointPolicy } from './istio-crd';
import { GATEWAY_NAME_LABEL } from './istio-waypoint';
import { isObj, type Obj } from './k8s-doc';
import type { Report } from './schema';

/** Set by Kubernetes on a Gateway's pods; in the standalone YAML, on the waypoint's workload entries. */
export { GATEWAY_NAME_LABEL };

/** A `namespaces:` entry: its labels may opt the namespace in (istio.io/use-waypoint). */
export interface NamespaceLabels {
  name: string;
  labels: Record<string, string>;
}

/** The pods of a waypoint: workloads of its namespace labelled with its name. */
const podsOf = (cfg: MeshConfig, ns: string, name: string): Workload[] =>
  cfg.workloads.filter((w) => w.namespace === ns && w.labels[GATEWAY_NAME_LABEL] === name);

/**
 * Compiles `routes:` (reporting every problem, the labels of services[i] and
 * namespaces[i] under their own paths), fills cfg.waypoints and the
 * `waypoint` of each service and workload that uses one, and returns the
 * route model for the waypoint process.
 */
export function resolveWaypoints(
  cfg: MeshConfig,
  docs: readonly unknown[],
  namespaces: NamespaceLabels[],
  report: Report,
  policies: readonly unknown[] = [],
): WaypointConfig {
  // Labels written on services: and namespaces: entries, and the waypoint's policies written under policies:,
  // read as the objects they stand for, after the user's documents.
  const origins: string[] = [];
  const named = new Set<number>(); // origins whose problems keep the object's "(kind namespace/name)"
  const extra: unknown[] = [];
  cfg.services.forEach((s, i) => {
    if (!s.labels || Object.keys(s.labels).length === 0 || !s.name || !s.namespace) return;
    origins.push(`services[${i}]`);
    extra.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: s.name, namespace: s.namespace, labels: s.labels } });
  });
  namespaces.forEach((n, i) => {
    if (!n.name) return;
    origins.push(`namespaces[${i}]`);
    extra.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.name, labels: n.labels } });
  });
  policies.forEach((d, i) => {
    if (!waypointPolicy(d)) return;
    named.add(origins.length);
    origins.push(`policies[${i}]`);
    extra.push(d);
  });
  const relabel: Report = (at, value, what) => {
    // A message may name an earlier object too ("duplicates routes[3]").
    const text = what.replace(/routes\[(\d+)\]/g, (whole, i: string) => origins[Number(i) - docs.length] ?? whole);
    const m = /^routes\[(\d+)\](?: \([^)]*\))?( metadata\.labels| metadata\.name)?/.exec(at);
    const index = m ? Number(m[1]) - docs.length : -1;
    const origin = origins[index];
    if (!m || origin === undefined) return report(at, value, text);
    if (named.has(index)) return report(at.replace(/^routes\[\d+\]/, origin), value, text);
    const field = m[2] === ' metadata.labels' ? '.labels' : m[2] === ' metadata.name' ? '.name' : '';
    report(`${origin}${field}${at.slice(m[0].length)}`, value, text);
  };
  return applyWaypointDocs(cfg, [...docs, ...extra], 'routes', relabel);
}

/**
 * Reads waypoint documents (Gateways, routes, Namespace and Service label
 * objects, targeted AuthorizationPolicies) against cfg's services and
 * workloads, fills cfg.waypoints and the `waypoint` of each service and
 * workload that uses one, and returns the route model for the waypoint.
 * Problems name documents as `${at}[i]`.
 */
export function applyWaypointDocs(cfg: MeshConfig, docs: readonly unknown[], at: string, report: Report): WaypointConfig {
  const compiled = compileWaypointConfig(docs, cfg, { at }, report);
  const gateways = new Map<string, { at: string; spec: Obj }>();
  docs.forEach((d, i) => {
    if (!isObj(d) || d.kind !== 'Gateway' || !isObj(d.metadata)) return;
    gateways.set(`${String(d.metadata.namespace)}/${String(d.metadata.name)}`, {
      at: `${at}[${i}] (Gateway ${String(d.metadata.namespace)}/${String(d.metadata.name)})`,
      spec: isObj(d.spec) ? d.spec : {},
    });
  });
  const byKey = new Map<string, MeshWaypoint>();
  for (const w of compiled.waypoints) {
    const key = `${w.namespace}/${w.name}`;
    const g = gateways.get(key) ?? { at: `Gateway ${key}`, spec: {} };
    const pods = podsOf(cfg, w.namespace, w.name);
    const address = addressOf(cfg, g, w.namespace, w.name, pods, report);
    const accounts = [...new Set(pods.map((p) => p.serviceAccount))];
    if (accounts.length > 1)
      report(
        `${g.at} pods`,
        accounts,
        `the workloads labelled ${GATEWAY_NAME_LABEL}: ${w.name} run as different service accounts; a waypoint has one identity`,
      );
    if (!address) continue;
    // Istio names a waypoint's service account after the Gateway when it deploys one.
    byKey.set(key, { name: w.name, namespace: w.namespace, for: w.for, address, serviceAccount: accounts[0] ?? w.name });
  }
  cfg.waypoints = [...byKey.values()];
  for (const s of cfg.services) {
    const w = byKey.get(compiled.bindings.services.get(serviceKey(s)) ?? '');
    if (w) s.waypoint = w.address;
  }
  for (const wl of cfg.workloads) {
    const w = byKey.get(compiled.bindings.workloads.get(wl.uid) ?? '');
    if (w) wl.waypoint = w.address;
  }
  return compiled;
}

/**
 * Where the node tunnel reaches a waypoint: the first of spec.addresses (a
 * VIP of a service or a workload's address), else the VIP of a service of
 * its namespace selecting its pods, else its first pod's address.
 */
function addressOf(
  cfg: MeshConfig,
  g: { at: string; spec: Obj },
  ns: string,
  name: string,
  pods: Workload[],
  report: Report,
): GatewayAddress | undefined {
  const at = (rel: string): string => `${g.at} ${rel}`;
  const written = g.spec.addresses;
  if (written !== undefined) {
    const first = Array.isArray(written) ? written[0] : undefined;
    const type = isObj(first) ? (first.type ?? 'IPAddress') : undefined;
    const ip = isObj(first) ? first.value : undefined;
    if (type !== 'IPAddress' || typeof ip !== 'string' || !net.isIPv4(ip)) {
      report(at('spec.addresses'), written, 'must be a list whose first entry is { type: IPAddress, value: <IPv4 address> }');
      return undefined;
    }
    const known = cfg.services.some((s) => s.addresses.includes(ip)) || cfg.workloads.some((w) => w.addresses.includes(ip));
    if (!known) {
      report(
        at('spec.addresses[0].value'),
        ip,
        "is neither a service's VIP nor a workload's address; the node tunnel finds the waypoint's pods through it",
      );
      return undefined;
    }
    return { destination: { kind: 'address', network: '', ip }, hboneMtlsPort: WAYPOINT_HBONE_PORT };
  }
  const svc = cfg.services.find(
    (s) => s.namespace === ns && s.addresses.length > 0 && s.selector[GATEWAY_NAME_LABEL] === name && Object.keys(s.selector).length === 1,
  );
  const ip = svc?.addresses[0] ?? pods.find((p) => p.addresses.length > 0)?.addresses[0];
  if (ip === undefined) {
    report(
      at('spec.addresses'),
      written,
      `the waypoint has no address: declare its pod under workloads: with the label ${GATEWAY_NAME_LABEL}: ${name} ` +
        '(and no netns, so that no node captures it), or give spec.addresses: [{ type: IPAddress, value: <VIP or pod IP> }]',
    );
    return undefined;
  }
  return { destination: { kind: 'address', network: '', ip }, hboneMtlsPort: WAYPOINT_HBONE_PORT };
}
