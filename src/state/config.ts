// The standalone configuration: one YAML file that describes the mesh.
// Validation collects every problem, each naming the path, the value and
// the fix, so an operator corrects a file in one pass.
import net from 'node:net';
import YAML from 'yaml';
import { AmbitError } from '../errors';
import { compileIstioPolicies } from '../policy/istio-crd';
import { readTextFile } from './file-source';
import type { Dataplane, MeshConfig, MeshNode, NodeToken, Service, ServicePort, TunnelProtocol, Workload } from './types';

type Obj = Record<string, unknown>;

class Problems {
  readonly list: string[] = [];
  add(at: string, value: unknown, what: string): void {
    this.list.push(`${at}: ${what} (got ${JSON.stringify(value) ?? 'nothing'})`);
  }
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const DNS_LABELS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function str(p: Problems, o: Obj, key: string, at: string, opts: { optional?: boolean; pattern?: RegExp; fix?: string } = {}): string {
  const v = o[key];
  if (v === undefined && opts.optional) return '';
  if (typeof v !== 'string' || v === '') {
    p.add(`${at}.${key}`, v, `must be a non-empty string${opts.fix ? `; ${opts.fix}` : ''}`);
    return '';
  }
  if (opts.pattern && !opts.pattern.test(v)) p.add(`${at}.${key}`, v, opts.fix ?? `must match ${opts.pattern}`);
  return v;
}

function list(p: Problems, o: Obj, key: string, at: string, optional = true): unknown[] {
  const v = o[key];
  if (v === undefined && optional) return [];
  if (!Array.isArray(v)) { p.add(`${at}.${key}`, v, 'must be a list'); return []; }
  return v;
}

function labels(p: Problems, o: Obj, key: string, at: string): Record<string, string> {
  const v = o[key];
  if (v === undefined) return {};
  if (!isObj(v)) { p.add(`${at}.${key}`, v, 'must be a map of string to string, e.g. { app: echo }'); return {}; }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean') p.add(`${at}.${key}.${k}`, val, 'label values must be strings');
    else out[k] = String(val);
  }
  return out;
}

function port(p: Problems, v: unknown, at: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) { p.add(at, v, 'must be a port number 1..65535'); return 0; }
  return v;
}

function node(p: Problems, v: unknown, at: string): MeshNode {
  if (!isObj(v)) { p.add(at, v, 'must be a map with name and address'); return { name: '', address: '' }; }
  const address = str(p, v, 'address', at);
  if (address && !net.isIP(address)) p.add(`${at}.address`, address, 'must be an IP address');
  return { name: str(p, v, 'name', at), address };
}

function workload(p: Problems, v: unknown, at: string): Workload {
  const o = isObj(v) ? v : (p.add(at, v, 'must be a map'), {} as Obj);
  const protocol = (o.protocol ?? 'HBONE') as TunnelProtocol;
  if (protocol !== 'HBONE' && protocol !== 'NONE') p.add(`${at}.protocol`, o.protocol, 'must be HBONE (in the mesh) or NONE (plain TCP peer)');
  const dataplane = (o.dataplane ?? 'ambient') as Dataplane;
  if (dataplane !== 'ambient' && dataplane !== 'sidecar') p.add(`${at}.dataplane`, o.dataplane, 'must be ambient (the node agent captures it) or sidecar (`ambit sidecar` runs in the pod)');
  const addresses = list(p, o, 'addresses', at, false).map((a, i) => {
    if (typeof a !== 'string' || !net.isIPv4(a)) p.add(`${at}.addresses[${i}]`, a, 'must be an IPv4 address such as 10.200.0.10');
    return String(a);
  });
  if (addresses.length === 0 && Array.isArray(o.addresses)) p.add(`${at}.addresses`, o.addresses, 'needs at least one address');
  return {
    uid: str(p, o, 'uid', at, { fix: 'a unique id such as default/pod-a' }),
    name: str(p, o, 'name', at),
    namespace: str(p, o, 'namespace', at, { pattern: DNS_LABELS, fix: 'a Kubernetes namespace name: lower-case letters, digits and -' }),
    serviceAccount: str(p, o, 'serviceAccount', at, { pattern: DNS_LABELS, fix: 'a service account name: lower-case letters, digits, - and .' }),
    node: str(p, o, 'node', at, { fix: 'the name of an entry of nodes:' }),
    addresses,
    protocol,
    dataplane,
    netns: str(p, o, 'netns', at, { optional: true }) || undefined,
    cgroup: str(p, o, 'cgroup', at, { optional: true }) || undefined,
    labels: labels(p, o, 'labels', at),
    capacity: capacity(p, o.capacity, `${at}.capacity`),
    authorizationPolicies: [],
  };
}

function capacity(p: Problems, v: unknown, at: string): number {
  if (v === undefined) return 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) { p.add(at, v, 'must be a whole number >= 0 (0 takes the endpoint out of rotation)'); return 1; }
  return v;
}

function service(p: Problems, v: unknown, at: string): Service {
  const o = isObj(v) ? v : (p.add(at, v, 'must be a map'), {} as Obj);
  const addresses = list(p, o, 'addresses', at, false).map((a, i) => {
    if (typeof a !== 'string' || !net.isIPv4(a)) p.add(`${at}.addresses[${i}]`, a, 'must be an IPv4 virtual IP such as 10.96.0.10');
    return String(a);
  });
  const ports: ServicePort[] = list(p, o, 'ports', at, false).map((x, i) => {
    if (!isObj(x)) { p.add(`${at}.ports[${i}]`, x, 'must be { port, targetPort }'); return { port: 0, targetPort: 0 }; }
    const svcPort = port(p, x.port, `${at}.ports[${i}].port`);
    return { port: svcPort, targetPort: x.targetPort === undefined ? svcPort : port(p, x.targetPort, `${at}.ports[${i}].targetPort`) };
  });
  return {
    name: str(p, o, 'name', at),
    namespace: str(p, o, 'namespace', at, { pattern: DNS_LABELS, fix: 'a Kubernetes namespace name' }),
    hostname: str(p, o, 'hostname', at, { pattern: DNS_LABELS, fix: 'a DNS name such as echo.default.svc.cluster.local' }),
    addresses,
    ports,
    selector: labels(p, o, 'selector', at),
  };
}

function tokens(p: Problems, v: unknown, at: string): NodeToken[] {
  if (v === undefined) return [];
  if (!isObj(v)) { p.add(at, v, 'must be a map with tokens: [{ node, sha256 }]'); return []; }
  return list(p, v, 'tokens', at).map((t, i) => {
    const o = isObj(t) ? t : (p.add(`${at}.tokens[${i}]`, t, 'must be { node, sha256 }'), {} as Obj);
    return {
      node: str(p, o, 'node', `${at}.tokens[${i}]`, { fix: 'the node name this token authenticates' }),
      sha256: str(p, o, 'sha256', `${at}.tokens[${i}]`, { pattern: /^[0-9a-f]{64}$/, fix: 'the SHA-256 of the token in hex: sha256sum < TOKENFILE' }),
    };
  });
}

/** Parses and validates; throws AMBIT_E_CONFIG listing every problem. */
export function parseConfig(text: string, source = 'config'): MeshConfig {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new AmbitError('AMBIT_E_CONFIG', `${source} is not valid YAML: ${(err as Error).message}`);
  }
  const p = new Problems();
  const o = isObj(doc) ? doc : (p.add('(top level)', doc, 'must be a map with trustDomain, nodes, workloads, services'), {} as Obj);
  const ca = isObj(o.ca) ? o.ca : {};
  const cfg: MeshConfig = {
    trustDomain: str(p, o, 'trustDomain', '', { pattern: DNS_LABELS, fix: 'a DNS-like name such as cluster.local' }),
    ca: { dir: typeof ca.dir === 'string' ? ca.dir : '/var/lib/ambit/ca' },
    nodes: list(p, o, 'nodes', '').map((n, i) => node(p, n, `nodes[${i}]`)),
    workloads: list(p, o, 'workloads', '').map((w, i) => workload(p, w, `workloads[${i}]`)),
    services: list(p, o, 'services', '').map((s, i) => service(p, s, `services[${i}]`)),
    policies: [],
    rootNamespace: o.rootNamespace === undefined ? 'istio-system' : str(p, o, 'rootNamespace', '', { pattern: DNS_LABELS, fix: 'a namespace name; policies there without a selector apply mesh-wide' }),
    warnings: [],
    controlPlane: { tokens: tokens(p, o.controlPlane, 'controlPlane') },
  };

  const nodeNames = new Set(cfg.nodes.map((n) => n.name));
  const uids = new Map<string, number>();
  const owners = new Map<string, string>();
  cfg.workloads.forEach((w, i) => {
    if (uids.has(w.uid)) p.add(`workloads[${i}].uid`, w.uid, `duplicates workloads[${uids.get(w.uid)}].uid; uids must be unique`);
    uids.set(w.uid, i);
    if (w.node && !nodeNames.has(w.node)) p.add(`workloads[${i}].node`, w.node, `is not among nodes: (${[...nodeNames].join(', ') || 'none'}); add it there or fix the name`);
    for (const a of w.addresses) {
      if (owners.has(a)) p.add(`workloads[${i}].addresses`, a, `is already the address of ${owners.get(a)}; pod addresses must be unique`);
      owners.set(a, w.uid);
    }
  });
  // Istio's AuthorizationPolicy and PeerAuthentication objects, converted as istiod does for a node tunnel.
  cfg.policyDocs = list(p, o, 'policies', '');
  const compiled = compileIstioPolicies(cfg.policyDocs, cfg.workloads, { rootNamespace: cfg.rootNamespace || 'istio-system' }, (at, v, what) => p.add(at, v, what));
  cfg.policies = compiled.policies;
  cfg.warnings = compiled.warnings;
  if (p.list.length) {
    throw new AmbitError('AMBIT_E_CONFIG', `${source} is invalid:\n  - ${p.list.join('\n  - ')}`, 'fix the fields named above; nothing was applied');
  }
  return cfg;
}

export function loadConfigFile(file: string): MeshConfig {
  return parseConfig(readTextFile(file, '--config'), file);
}
