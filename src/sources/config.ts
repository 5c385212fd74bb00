// The standalone configuration: one YAML file that describes the mesh.
// Validation collects every problem, each naming the path, the value and
// the fix, so an operator corrects a file in one pass. Unknown keys are
// problems too (a typo must not silently change what the mesh allows), and
// the rules across entries are checked here, before anything is applied.
import net from 'node:net';
import { AmbitError } from '../errors';
import type { Dataplane, MeshConfig, MeshNode, NodeToken, Service, ServicePort, TunnelProtocol, Workload } from '../state/types';
import type { WaypointConfig } from '../waypoint/types';
import { checkCrossFields, checkWaypointTokens } from './cross-checks';
import { readTextFile } from './file-source';
import { compileIstioPolicies } from './istio-crd';
import { checkKeys, join, KEYS } from './schema';
import { type NamespaceLabels, resolveWaypoints } from './standalone-waypoints';
import { parseYamlBounded } from './yaml-bounded';

type Obj = Record<string, unknown>;

/** Values are quoted up to this length: a misspelt `polices:` must not paste the whole list into the log. */
const QUOTE_MAX = 120;

/** Problems listed in one error; the count of the rest follows. */
const MAX_LISTED = 100;

class Problems {
  readonly list: string[] = [];
  add(at: string, value: unknown, what: string): void {
    let got: string;
    try {
      got = JSON.stringify(value) ?? 'nothing';
    } catch {
      got = 'a value that cannot be shown'; // parseYamlBounded refuses cycles; a caller's object may still have one
    }
    if (got.length > QUOTE_MAX) got = `${got.slice(0, QUOTE_MAX)}…`;
    this.list.push(`${at}: ${what} (got ${got})`);
  }
  readonly report = (at: string, value: unknown, what: string): void => this.add(at, value, what);
}

/** o's fields, with unknown ones reported; undefined when v is not a map (reported as `what`). */
function fields(p: Problems, v: unknown, at: string, known: readonly string[], what: string): Obj | undefined {
  if (!isObj(v)) {
    p.add(at, v, what);
    return undefined;
  }
  checkKeys(p.report, v, known, at);
  return v;
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const DNS_LABELS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A Kubernetes port name or appProtocol value. */
const PORT_NAME = /^[a-z0-9]([a-z0-9./-]{0,61}[a-z0-9])?$/;

function str(p: Problems, o: Obj, key: string, at: string, opts: { optional?: boolean; pattern?: RegExp; fix?: string } = {}): string {
  const v = o[key];
  if (v === undefined && opts.optional) return '';
  if (typeof v !== 'string' || v === '') {
    p.add(join(at, key), v, `must be a non-empty string${opts.fix ? `; ${opts.fix}` : ''}`);
    return '';
  }
  if (opts.pattern && !opts.pattern.test(v)) p.add(join(at, key), v, opts.fix ?? `must match ${opts.pattern}`);
  return v;
}

function list(p: Problems, o: Obj, key: string, at: string, optional = true): unknown[] {
  const v = o[key];
  if (v === undefined && optional) return [];
  if (!Array.isArray(v)) {
    p.add(join(at, key), v, 'must be a list');
    return [];
  }
  return v;
}

function labels(p: Problems, o: Obj, key: string, at: string): Record<string, string> {
  const v = o[key];
  if (v === undefined) return {};
  if (!isObj(v)) {
    p.add(`${at}.${key}`, v, 'must be a map of string to string, e.g. { app: echo }');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean')
      p.add(`${at}.${key}.${k}`, val, 'label values must be strings');
    else out[k] = String(val);
  }
  return out;
}

function port(p: Problems, v: unknown, at: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    p.add(at, v, 'must be a port number 1..65535');
    return 0;
  }
  return v;
}

function node(p: Problems, v: unknown, at: string): MeshNode {
  if (!fields(p, v, at, KEYS.node, 'must be a map with name and address') || !isObj(v)) return { name: '', address: '' };
  const address = str(p, v, 'address', at);
  if (address && !net.isIP(address)) p.add(`${at}.address`, address, 'must be an IP address');
  return { name: str(p, v, 'name', at), address };
}

function workload(p: Problems, v: unknown, at: string): Workload {
  const o = fields(p, v, at, KEYS.workload, 'must be a map') ?? {};
  const protocol = (o.protocol ?? 'HBONE') as TunnelProtocol;
  if (protocol !== 'HBONE' && protocol !== 'NONE')
    p.add(`${at}.protocol`, o.protocol, 'must be HBONE (in the mesh) or NONE (plain TCP peer)');
  const dataplane = (o.dataplane ?? 'ambient') as Dataplane;
  if (dataplane !== 'ambient' && dataplane !== 'sidecar')
    p.add(`${at}.dataplane`, o.dataplane, 'must be ambient (the node agent captures it) or sidecar (`ambit sidecar` runs in the pod)');
  const addresses = list(p, o, 'addresses', at, false).map((a, i) => {
    if (typeof a !== 'string' || !net.isIPv4(a)) p.add(`${at}.addresses[${i}]`, a, 'must be an IPv4 address such as 10.200.0.10');
    return typeof a === 'string' ? a : ''; // not String(a): { toString: {} } throws
  });
  if (addresses.length === 0 && Array.isArray(o.addresses)) p.add(`${at}.addresses`, o.addresses, 'needs at least one address');
  if (o.authorizationPolicies !== undefined && !(Array.isArray(o.authorizationPolicies) && o.authorizationPolicies.length === 0)) {
    p.add(
      `${at}.authorizationPolicies`,
      o.authorizationPolicies,
      "is computed from the policies' selectors (spec.selector.matchLabels against labels); remove it and select the workload from the policy",
    );
  }
  return {
    uid: str(p, o, 'uid', at, { fix: 'a unique id such as default/pod-a' }),
    name: str(p, o, 'name', at),
    namespace: str(p, o, 'namespace', at, { pattern: DNS_LABELS, fix: 'a Kubernetes namespace name: lower-case letters, digits and -' }),
    serviceAccount: str(p, o, 'serviceAccount', at, {
      pattern: DNS_LABELS,
      fix: 'a service account name: lower-case letters, digits, - and .',
    }),
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
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    p.add(at, v, 'must be a whole number >= 0 (0 takes the endpoint out of rotation)');
    return 1;
  }
  return v;
}

function service(p: Problems, v: unknown, at: string): Service {
  const o = fields(p, v, at, KEYS.service, 'must be a map') ?? {};
  const addresses = list(p, o, 'addresses', at, false).map((a, i) => {
    if (typeof a !== 'string' || !net.isIPv4(a)) p.add(`${at}.addresses[${i}]`, a, 'must be an IPv4 virtual IP such as 10.96.0.10');
    return typeof a === 'string' ? a : ''; // not String(a): { toString: {} } throws
  });
  const ports: ServicePort[] = list(p, o, 'ports', at, false).map((x, i) => {
    if (!fields(p, x, `${at}.ports[${i}]`, KEYS.servicePort, 'must be { port, targetPort }') || !isObj(x))
      return { port: 0, targetPort: 0 };
    const svcPort = port(p, x.port, `${at}.ports[${i}].port`);
    const targetPort = x.targetPort === undefined ? svcPort : port(p, x.targetPort, `${at}.ports[${i}].targetPort`);
    // name and appProtocol tell a waypoint whether the port speaks HTTP (Istio's rule).
    const portName = str(p, x, 'name', `${at}.ports[${i}]`, { optional: true, pattern: PORT_NAME, fix: 'a port name such as http-web' });
    const appProtocol = str(p, x, 'appProtocol', `${at}.ports[${i}]`, {
      optional: true,
      pattern: PORT_NAME,
      fix: 'such as http, http2 or grpc',
    });
    return { port: svcPort, targetPort, ...(portName ? { name: portName } : {}), ...(appProtocol ? { appProtocol } : {}) };
  });
  return {
    name: str(p, o, 'name', at),
    namespace: str(p, o, 'namespace', at, { pattern: DNS_LABELS, fix: 'a Kubernetes namespace name' }),
    hostname: str(p, o, 'hostname', at, { pattern: DNS_LABELS, fix: 'a DNS name such as echo.default.svc.cluster.local' }),
    addresses,
    ports,
    selector: labels(p, o, 'selector', at),
    ...(o.labels === undefined ? {} : { labels: labels(p, o, 'labels', at) }),
  };
}

function namespace(p: Problems, v: unknown, at: string): NamespaceLabels {
  const o = fields(p, v, at, KEYS.namespace, 'must be a map such as { name: default, labels: { istio.io/use-waypoint: waypoint } }') ?? {};
  return {
    name: str(p, o, 'name', at, { pattern: DNS_LABELS, fix: 'a Kubernetes namespace name' }),
    labels: labels(p, o, 'labels', at),
  };
}

/**
 * The standalone file's mesh model, with the waypoint's route model beside
 * it: `ambit waypoint` reads the same file and serves `routes`.
 */
export interface StandaloneConfig extends MeshConfig {
  /** routes: compiled (HTTPRoutes, GRPCRoutes, waypoints, their bindings, targeted AuthorizationPolicies). */
  routes: WaypointConfig;
}

function tokens(p: Problems, v: unknown, at: string): NodeToken[] {
  if (v === undefined) return [];
  const cp = fields(p, v, at, KEYS.controlPlane, 'must be a map with tokens: [{ node | waypoint, sha256 }]');
  if (!cp) return [];
  return list(p, cp, 'tokens', at).map((t, i): NodeToken => {
    const here = `${at}.tokens[${i}]`;
    const o = fields(p, t, here, KEYS.token, 'must be { node, sha256 } or { waypoint, sha256 }') ?? {};
    const sha256 = str(p, o, 'sha256', here, {
      pattern: /^[0-9a-f]{64}$/,
      fix: 'the SHA-256 of the token in hex: sha256sum < TOKENFILE',
    });
    // A token speaks for one party: with both, a waypoint's token could act as a node.
    if (o.node !== undefined && o.waypoint !== undefined)
      p.add(join(here, 'waypoint'), o.waypoint, "a token is either a node's or a waypoint's: keep node or waypoint, not both");
    if (o.waypoint !== undefined && o.node === undefined)
      return {
        waypoint: str(p, o, 'waypoint', here, {
          pattern: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/,
          fix: 'must be <namespace>/<name> of the waypoint Gateway this token authenticates',
        }),
        sha256,
      };
    return {
      node: str(p, o, 'node', here, { fix: 'the node name this token authenticates (or waypoint: <namespace>/<name> for a waypoint)' }),
      sha256,
    };
  });
}

/** Parses and validates; throws AMBIT_E_CONFIG listing every problem. */
export function parseConfig(text: string, source = 'config'): StandaloneConfig {
  const doc = parseYamlBounded(text, source);
  const p = new Problems();
  const o: Obj = isObj(doc) ? doc : {};
  if (o !== doc) p.add('(top level)', doc, 'must be a map with trustDomain, nodes, workloads, services');
  checkKeys(p.report, o, KEYS.top, '');
  const ca = o.ca === undefined ? {} : (fields(p, o.ca, 'ca', KEYS.ca, 'must be a map such as { dir: /var/lib/ambit/ca }') ?? {});
  const cfg: MeshConfig = {
    trustDomain: str(p, o, 'trustDomain', '', { pattern: DNS_LABELS, fix: 'a DNS-like name such as cluster.local' }),
    ca: {
      dir: ca.dir === undefined ? '/var/lib/ambit/ca' : str(p, ca, 'dir', 'ca', { fix: "the CA's directory, e.g. /var/lib/ambit/ca" }),
    },
    nodes: list(p, o, 'nodes', '').map((n, i) => node(p, n, `nodes[${i}]`)),
    workloads: list(p, o, 'workloads', '').map((w, i) => workload(p, w, `workloads[${i}]`)),
    services: list(p, o, 'services', '').map((s, i) => service(p, s, `services[${i}]`)),
    policies: [],
    rootNamespace:
      o.rootNamespace === undefined
        ? 'istio-system'
        : str(p, o, 'rootNamespace', '', {
            pattern: DNS_LABELS,
            fix: 'a namespace name; policies there without a selector apply mesh-wide',
          }),
    warnings: [],
    controlPlane: { tokens: tokens(p, o.controlPlane, 'controlPlane') },
  };
  checkCrossFields(cfg, p.report);
  cfg.policyDocs = list(p, o, 'policies', '');
  // Waypoints first: the policies' conversion tells who sits behind one, and those with targetRefs are the waypoint's.
  const namespaces = list(p, o, 'namespaces', '').map((n, i) => namespace(p, n, `namespaces[${i}]`));
  const routes = resolveWaypoints(cfg, list(p, o, 'routes', ''), namespaces, p.report, cfg.policyDocs);
  checkWaypointTokens(cfg.controlPlane.tokens, routes.waypoints, p.report);
  // Istio's AuthorizationPolicy and PeerAuthentication objects, converted as istiod does for a node tunnel.
  const compiled = compileIstioPolicies(
    cfg.policyDocs,
    cfg.workloads,
    { rootNamespace: cfg.rootNamespace || 'istio-system', waypoints: cfg.waypoints, services: cfg.services },
    p.report,
  );
  cfg.policies = compiled.policies;
  cfg.warnings = [...compiled.warnings, ...routes.warnings];
  cfg.notes = compiled.notes;
  if (p.list.length) {
    // A file of 25,000 workloads with one typo each would otherwise be a multi-megabyte log line.
    const shown = p.list.slice(0, MAX_LISTED);
    if (p.list.length > MAX_LISTED) shown.push(`… and ${p.list.length - MAX_LISTED} more problems of the same kinds`);
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `${source} is invalid:\n  - ${shown.join('\n  - ')}`,
      'fix the fields named above; nothing was applied',
    );
  }
  return { ...cfg, routes };
}

export function loadConfigFile(file: string): StandaloneConfig {
  return parseConfig(readTextFile(file, '--config'), file);
}
