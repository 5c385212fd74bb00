// The mesh state as xDS resources and back: istio.workload.Address (a
// Workload named by its uid, or a Service named "<namespace>/<hostname>")
// and istio.security.Authorization ("<namespace>/<name>"). The control-plane
// server encodes with toResources; a node decodes one resource at a time
// with the *FromMessage functions, which throw naming the resource and the
// field, so that one bad resource is NACKed and nothing else is lost.
//
// What the wire does not carry: a pod's netns and cgroup (facts of the node
// that hosts it, merged in by the node) and labels (only the canonical
// name and revision, which ambit maps back to the app/version labels used
// by telemetry). Service endpoints travel on the workloads (services map),
// so selectors are resolved by the server.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { parseSpiffe } from '../identity/spiffe';
import { type Authorization, type IpBlock, type Match, policyKey, type StringMatch } from '../policy/types';
import type {
  AddressMessage,
  Any,
  AuthorizationMessage,
  GatewayAddressMessage,
  IpBlockMessage,
  MatchMessage,
  ServiceMessage,
  StringMatchMessage,
  WorkloadMessage,
} from '../protocol/messages';
import { pack, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../protocol/protos';
import { type GatewayAddress, type MeshConfig, type Service, serviceKey, WAYPOINT_HBONE_PORT, type Workload } from '../state/types';

export const CLUSTER_ID = 'Kubernetes';

export interface XdsResource {
  name: string;
  version: string;
  resource: Any;
}

/** Every resource of the mesh, by type URL, with a content version (so only what changed is pushed). */
export function toResources(cfg: MeshConfig, endpointsOf: (s: Service) => Workload[]): Map<string, Map<string, XdsResource>> {
  const backs = new Map<Workload, Service[]>();
  for (const s of cfg.services) for (const w of endpointsOf(s)) backs.set(w, [...(backs.get(w) ?? []), s]);
  const addresses = new Map<string, XdsResource>();
  for (const w of cfg.workloads) add(addresses, w.uid, TYPE_ADDRESS, { workload: workloadMessage(cfg, w, backs.get(w) ?? []) });
  for (const s of cfg.services) add(addresses, serviceKey(s), TYPE_ADDRESS, { service: serviceMessage(s) });
  const auths = new Map<string, XdsResource>();
  for (const p of cfg.policies) add(auths, policyKey(p), TYPE_AUTHORIZATION, authorizationMessage(p));
  return new Map([
    [TYPE_ADDRESS, addresses],
    [TYPE_AUTHORIZATION, auths],
  ]);
}

function add(into: Map<string, XdsResource>, name: string, typeUrl: string, message: object): void {
  into.set(name, packResource(name, typeUrl, message));
}

/** A resource whose version is a digest of its encoding: unchanged content is never pushed again. */
export function packResource(name: string, typeUrl: string, message: object): XdsResource {
  const resource = pack(typeUrl, message);
  return { name, version: createHash('sha256').update(resource.value).digest('hex').slice(0, 16), resource };
}

function workloadMessage(cfg: MeshConfig, w: Workload, backs: Service[]): Partial<WorkloadMessage> {
  const services: WorkloadMessage['services'] = {};
  for (const s of backs) services[serviceKey(s)] = { ports: s.ports.map((p) => ({ service_port: p.port, target_port: p.targetPort })) };
  return {
    uid: w.uid,
    name: w.name,
    namespace: w.namespace,
    addresses: w.addresses.map(ipBytes),
    tunnel_protocol: w.protocol,
    trust_domain: w.trustDomain ?? cfg.trustDomain,
    service_account: w.serviceAccount,
    node: w.node,
    canonical_name: w.labels.app ?? w.name,
    canonical_revision: w.labels.version ?? 'latest',
    workload_type: 'POD',
    workload_name: w.name,
    services,
    authorization_policies: w.authorizationPolicies,
    status: 'HEALTHY',
    cluster_id: CLUSTER_ID,
    capacity: { value: w.capacity },
    ...(w.waypoint ? { waypoint: gatewayMessage(w.waypoint) } : {}),
  };
}

function serviceMessage(s: Service): Partial<ServiceMessage> {
  return {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    addresses: s.addresses.map((a) => ({ network: '', address: ipBytes(a) })),
    ports: s.ports.map((p) => ({ service_port: p.port, target_port: p.targetPort })),
    subject_alt_names: [],
    ...(s.waypoint ? { waypoint: gatewayMessage(s.waypoint) } : {}),
  };
}

function gatewayMessage(g: GatewayAddress): GatewayAddressMessage {
  const d = g.destination;
  return {
    ...(d.kind === 'address'
      ? { address: { network: d.network, address: ipBytes(d.ip) } }
      : { hostname: { namespace: d.namespace, hostname: d.hostname } }),
    hbone_mtls_port: g.hboneMtlsPort,
  };
}

function authorizationMessage(p: Authorization): Partial<AuthorizationMessage> {
  return {
    name: p.name,
    namespace: p.namespace,
    scope: p.scope,
    action: p.action,
    dry_run: p.dryRun,
    rules: p.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.matches.map(matchMessage) })) })),
  };
}

function matchMessage(m: Match): MatchMessage {
  const strs = (l: StringMatch[]): StringMatchMessage[] => l.map((s) => ('presence' in s ? { presence: {} } : s));
  const ips = (l: IpBlock[]): IpBlockMessage[] => l.map((b) => ({ address: ipBytes(b.address), length: b.length }));
  return {
    namespaces: strs(m.namespaces),
    not_namespaces: strs(m.notNamespaces),
    principals: strs(m.principals),
    not_principals: strs(m.notPrincipals),
    source_ips: ips(m.sourceIps),
    not_source_ips: ips(m.notSourceIps),
    destination_ips: ips(m.destinationIps),
    not_destination_ips: ips(m.notDestinationIps),
    destination_ports: m.destinationPorts,
    not_destination_ports: m.notDestinationPorts,
  };
}

function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  return Buffer.from(expandV6(ip));
}

function expandV6(ip: string): number[] {
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return groups.flatMap((g) => {
    const v = parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}

// ---- decoding: one resource at a time, each problem naming where ----

export class ResourceError extends Error {}

function bad(name: string, field: string, value: unknown, what: string): never {
  throw new ResourceError(`${name}: ${field} ${JSON.stringify(value)} ${what}`);
}

function ipText(name: string, field: string, b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  if (b.length === 16) return [...Array(8).keys()].map((i) => b.readUInt16BE(i * 2).toString(16)).join(':');
  return bad(name, field, b.toString('hex'), 'is not an IP address: 4 (IPv4) or 16 (IPv6) bytes expected');
}

/** A decoded Address resource: a workload or a service. */
export type AddressEntry = { workload: Workload } | { service: Service };

export function addressFromMessage(name: string, m: AddressMessage, trustDomain: string): AddressEntry {
  if (m.workload) return { workload: workloadFromMessage(name, m.workload, trustDomain) };
  if (m.service) return { service: serviceFromMessage(name, m.service) };
  return bad(name, 'type', null, 'is neither a workload nor a service');
}

function workloadFromMessage(name: string, w: WorkloadMessage, trustDomain: string): Workload {
  if (!w.uid || w.uid !== name) bad(name, 'uid', w.uid, `must equal the resource name ${JSON.stringify(name)}`);
  if (!w.namespace) bad(name, 'namespace', w.namespace, 'must be set');
  if (!w.service_account) bad(name, 'service_account', w.service_account, 'must be set');
  const td = w.trust_domain || trustDomain;
  if (!parseSpiffe(`spiffe://${td}/ns/${w.namespace}/sa/${w.service_account}`))
    bad(name, 'trust_domain/namespace/service_account', [td, w.namespace, w.service_account], 'do not form a SPIFFE identity');
  const addresses = w.addresses.map((a, i) => ipText(name, `addresses[${i}]`, a));
  const capacity = w.capacity ? w.capacity.value : 1;
  const labels: Record<string, string> = {};
  if (w.canonical_name) labels.app = w.canonical_name;
  if (w.canonical_revision) labels.version = w.canonical_revision;
  return {
    uid: w.uid,
    name: w.name || w.workload_name || w.uid,
    namespace: w.namespace,
    serviceAccount: w.service_account,
    node: w.node,
    // The datapath is IPv4 only: IPv6 addresses are accepted on the wire and not used.
    addresses: addresses.filter((a) => net.isIPv4(a)),
    protocol: w.tunnel_protocol === 'HBONE' ? 'HBONE' : 'NONE',
    dataplane: 'ambient',
    labels,
    capacity,
    trustDomain: td === trustDomain ? undefined : td,
    services: Object.keys(w.services ?? {}),
    authorizationPolicies: [...w.authorization_policies],
    ...(w.waypoint ? { waypoint: gatewayFromMessage(name, w.waypoint) } : {}),
  };
}

/** A GatewayAddress; a port of 0 (unset on the wire) is Istio's 15008. */
function gatewayFromMessage(name: string, g: GatewayAddressMessage): GatewayAddress {
  if (!(g.hbone_mtls_port >= 0 && g.hbone_mtls_port <= 65535)) bad(name, 'waypoint.hbone_mtls_port', g.hbone_mtls_port, 'is not a port');
  const hboneMtlsPort = g.hbone_mtls_port || WAYPOINT_HBONE_PORT;
  if (g.address) {
    const ip = ipText(name, 'waypoint.address.address', g.address.address);
    if (!net.isIPv4(ip)) bad(name, 'waypoint.address.address', ip, 'is not IPv4 (the datapath is IPv4 only)');
    return { destination: { kind: 'address', network: g.address.network, ip }, hboneMtlsPort };
  }
  if (g.hostname?.hostname && g.hostname.namespace)
    return { destination: { kind: 'hostname', namespace: g.hostname.namespace, hostname: g.hostname.hostname }, hboneMtlsPort };
  return bad(name, 'waypoint', g, 'names neither an address nor a namespace and hostname');
}

function serviceFromMessage(name: string, s: ServiceMessage): Service {
  if (`${s.namespace}/${s.hostname}` !== name)
    bad(name, 'namespace/hostname', `${s.namespace}/${s.hostname}`, `must equal the resource name ${JSON.stringify(name)}`);
  const ports = s.ports.map((p, i) => {
    if (!(p.service_port >= 1 && p.service_port <= 65535)) bad(name, `ports[${i}].service_port`, p.service_port, 'is not a port 1..65535');
    if (!(p.target_port >= 0 && p.target_port <= 65535)) bad(name, `ports[${i}].target_port`, p.target_port, 'is not a port 0..65535');
    return { port: p.service_port, targetPort: p.target_port || p.service_port };
  });
  return {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    addresses: s.addresses.map((a, i) => ipText(name, `addresses[${i}].address`, a.address)).filter((a) => net.isIPv4(a)),
    ports,
    selector: {},
    ...(s.waypoint ? { waypoint: gatewayFromMessage(name, s.waypoint) } : {}),
  };
}

export function authorizationFromMessage(name: string, p: AuthorizationMessage): Authorization {
  if (`${p.namespace}/${p.name}` !== name)
    bad(name, 'namespace/name', `${p.namespace}/${p.name}`, `must equal the resource name ${JSON.stringify(name)}`);
  return {
    name: p.name,
    namespace: p.namespace,
    scope: p.scope,
    action: p.action,
    dryRun: p.dry_run,
    rules: p.rules.map((r, ri) => ({
      clauses: r.clauses.map((c, ci) => ({
        matches: c.matches.map((m, mi) => matchFromMessage(name, `rules[${ri}].clauses[${ci}].matches[${mi}]`, m)),
      })),
    })),
  };
}

function matchFromMessage(name: string, at: string, m: MatchMessage): Match {
  const strs = (field: string, l: StringMatchMessage[]): StringMatch[] =>
    l.map((s, i) => {
      // The oneof's name and its field are checked together: a message naming a match it does not carry is refused.
      if (s.match_type === 'exact' && s.exact !== undefined) return { exact: s.exact };
      if (s.match_type === 'prefix' && s.prefix !== undefined) return { prefix: s.prefix };
      if (s.match_type === 'suffix' && s.suffix !== undefined) return { suffix: s.suffix };
      if (s.match_type === 'presence') return { presence: true };
      return bad(name, `${at}.${field}[${i}]`, s, 'has no match (exact, prefix, suffix or presence)');
    });
  const ips = (field: string, l: IpBlockMessage[]): IpBlock[] =>
    l.map((b, i) => {
      const address = ipText(name, `${at}.${field}[${i}].address`, b.address);
      if (b.length > b.address.length * 8)
        bad(name, `${at}.${field}[${i}].length`, b.length, `is longer than the address (${b.address.length * 8} bits)`);
      return { address, length: b.length };
    });
  const ports = (field: string, l: number[]): number[] =>
    l.map((p, i) => (p >= 1 && p <= 65535 ? p : bad(name, `${at}.${field}[${i}]`, p, 'is not a port 1..65535')));
  return {
    namespaces: strs('namespaces', m.namespaces),
    notNamespaces: strs('not_namespaces', m.not_namespaces),
    principals: strs('principals', m.principals),
    notPrincipals: strs('not_principals', m.not_principals),
    sourceIps: ips('source_ips', m.source_ips),
    notSourceIps: ips('not_source_ips', m.not_source_ips),
    destinationIps: ips('destination_ips', m.destination_ips),
    notDestinationIps: ips('not_destination_ips', m.not_destination_ips),
    destinationPorts: ports('destination_ports', m.destination_ports),
    notDestinationPorts: ports('not_destination_ports', m.not_destination_ports),
  };
}
