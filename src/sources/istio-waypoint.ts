// Istio's ambient waypoints, read from the objects users already have: a
// waypoint is a Gateway of class istio-waypoint (istio.io/waypoint-for says
// which traffic it takes), services and workloads opt in with the
// istio.io/use-waypoint label (on themselves or their namespace), and an
// AuthorizationPolicy with targetRefs to the waypoint or a service is
// enforced there, with the HTTP attributes a node tunnel cannot see.
// Attributes ambit cannot evaluate (JWT request principals, client IPs from
// headers) are problems: dropping them would allow or deny something else
// than what was written.
import type { IpBlock, StringMatch } from '../policy/types';
import { type Service, serviceKey, type Workload } from '../state/types';
import {
  type L7Match,
  type L7Policy,
  type L7Rule,
  type L7Target,
  l7Match,
  type Waypoint,
  type WaypointBindings,
  type WaypointFor,
} from '../waypoint/types';
import { type Doc, HEADER_NAME, isObj, type Known, wildcard } from './k8s-doc';
import type { Report } from './schema';

export const GATEWAY_GROUP = 'gateway.networking.k8s.io';
export const WAYPOINT_CLASS = 'istio-waypoint';
export const USE_WAYPOINT = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE = 'istio.io/use-waypoint-namespace';
export const WAYPOINT_FOR = 'istio.io/waypoint-for';
/** Set by Kubernetes on a Gateway's pods: a waypoint's own pods never use a waypoint (no loop). */
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

/** A Gateway of class istio-waypoint; another class is ignored with a warning. */
export function gateway(d: Doc): Waypoint | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', ['gatewayClassName', 'listeners', 'addresses', 'infrastructure']) ?? {};
  if (spec.gatewayClassName !== WAYPOINT_CLASS) {
    d.warn(
      'spec.gatewayClassName',
      `${String(spec.gatewayClassName)} is not ${WAYPOINT_CLASS}; ambit serves only waypoints, so this Gateway is ignored`,
    );
    return undefined;
  }
  const listeners = d.list(spec, 'listeners', 'spec');
  const hbone = listeners.some((l) => isObj(l) && l.protocol === 'HBONE' && l.port === 15008);
  if (!hbone)
    d.problem(
      'spec.listeners',
      spec.listeners,
      'a waypoint needs a listener { name: mesh, port: 15008, protocol: HBONE }: the node tunnel reaches it over HBONE',
    );
  const f = d.labels[WAYPOINT_FOR] ?? 'service';
  if (!['service', 'workload', 'all', 'none'].includes(f))
    d.problem(`metadata.labels.${WAYPOINT_FOR}`, f, 'must be service (the default), workload, all or none');
  return d.problems === 0 ? { namespace: d.namespace, name: d.name, for: f as WaypointFor } : undefined;
}

export interface LabelSource {
  at: string;
  labels: Record<string, string>;
  namespace: string;
}

const covers = (w: Waypoint, what: 'service' | 'workload'): boolean => w.for === what || w.for === 'all';

/** The waypoint an object's labels choose, the namespace's when its own say nothing; undefined for none. */
function chosen(own: LabelSource, ns: LabelSource | undefined): LabelSource | undefined {
  if (own.labels[USE_WAYPOINT] !== undefined) return own;
  return ns?.labels[USE_WAYPOINT] !== undefined ? ns : undefined;
}

/**
 * Which waypoint each service and workload uses: its own istio.io/use-waypoint
 * label, else its namespace's; "none" opts out. A name no waypoint answers
 * to is a problem; a waypoint not for that kind of traffic (istio.io/
 * waypoint-for) a warning on an explicit label.
 */
export function bindings(
  waypoints: Map<string, Waypoint>,
  namespaces: Map<string, LabelSource>,
  services: Map<string, LabelSource>,
  known: { services: readonly Service[]; workloads: readonly Workload[] },
  report: Report,
  warnings: string[],
): WaypointBindings {
  const out: WaypointBindings = { services: new Map(), workloads: new Map() };
  const reported = new Set<string>();
  const resolve = (src: LabelSource, what: 'service' | 'workload', subject: string): string | undefined => {
    const name = src.labels[USE_WAYPOINT] ?? '';
    if (name === 'none' || name === '') return undefined;
    const ns = src.labels[USE_WAYPOINT_NAMESPACE] ?? src.namespace;
    const key = `${ns}/${name}`;
    const w = waypoints.get(key);
    if (!w) {
      if (!reported.has(src.at))
        report(
          `${src.at}.${USE_WAYPOINT}`,
          name,
          `names waypoint ${key}, which no Gateway of class ${WAYPOINT_CLASS} declares; declare it or fix the label`,
        );
      reported.add(src.at);
      return undefined;
    }
    if (!covers(w, what)) {
      if (src.labels === namespaces.get(src.namespace)?.labels) return undefined; // a namespace label covers both kinds; the waypoint takes one
      warnings.push(`${src.at}.${USE_WAYPOINT}: waypoint ${key} is for ${w.for} traffic (${WAYPOINT_FOR}), so ${subject} does not use it`);
      return undefined;
    }
    return key;
  };
  for (const s of known.services) {
    const src = chosen(
      services.get(`${s.namespace}/${s.name}`) ?? { at: '', labels: {}, namespace: s.namespace },
      namespaces.get(s.namespace),
    );
    const w = src && resolve(src, 'service', `service ${s.namespace}/${s.name}`);
    if (w) out.services.set(serviceKey(s), w);
  }
  known.workloads.forEach((wl, i) => {
    if (wl.labels[GATEWAY_NAME_LABEL] !== undefined) return; // a waypoint's own pod: its traffic must not loop back to a waypoint
    const src = chosen(
      { at: `workloads[${i}] (${wl.uid}) labels`, labels: wl.labels, namespace: wl.namespace },
      namespaces.get(wl.namespace),
    );
    const w = src && resolve(src, 'workload', `workload ${wl.uid}`);
    if (w) out.workloads.set(wl.uid, w);
  });
  return out;
}

function blocks(d: Doc, values: string[], at: string): IpBlock[] {
  return values.flatMap((s, i) => {
    const [address = '', len, extra] = s.split('/');
    const v = address.includes(':') ? 6 : /^\d+\.\d+\.\d+\.\d+$/.test(address) ? 4 : 0;
    const length = len === undefined ? (v === 6 ? 128 : 32) : /^\d+$/.test(len) ? Number(len) : -1;
    if (v === 0 || extra !== undefined || length < 0 || length > (v === 6 ? 128 : 32)) {
      d.problem(`${at}[${i}]`, s, 'must be an IPv4/IPv6 address or CIDR such as 10.0.0.0/8');
      return [];
    }
    return [{ address, length }];
  });
}

function portList(d: Doc, values: string[], at: string): number[] {
  return values.flatMap((p, i) => {
    const n = /^\d+$/.test(p) ? Number(p) : NaN;
    if (n >= 1 && n <= 65535) return [n];
    d.problem(`${at}[${i}]`, p, 'must be a port number 1..65535');
    return [];
  });
}

const SOURCE = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks'];
const OPERATION = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'];
const UNSUPPORTED = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'];

function l7Entry(d: Doc, v: unknown, rel: string, key: 'source' | 'operation'): L7Match | undefined {
  const outer = d.obj(v, rel, `must be { ${key}: { … } }`, [key]);
  const fields = key === 'source' ? SOURCE : OPERATION;
  const at = `${rel}.${key}`;
  const o =
    outer &&
    d.obj(outer[key], at, `must be a map with some of ${fields.join(', ')}`, key === 'source' ? [...SOURCE, ...UNSUPPORTED] : OPERATION);
  if (!o || Object.keys(o).length === 0) {
    if (outer) d.problem(at, outer[key], `must set at least one of ${fields.join(', ')}`);
    return undefined;
  }
  for (const k of UNSUPPORTED)
    if (o[k] !== undefined)
      d.problem(`${at}.${k}`, o[k], 'is not supported: ambit has no RequestAuthentication (JWT) nor trusted client-IP headers');
  const str = (k: string, lower = false): StringMatch[] => d.strings(o, k, at).flatMap((s, i) => wildcard(d, s, `${at}.${k}[${i}]`, lower));
  const m = l7Match();
  if (key === 'source') {
    Object.assign(m, {
      principals: str('principals'),
      notPrincipals: str('notPrincipals'),
      namespaces: str('namespaces'),
      notNamespaces: str('notNamespaces'),
      sourceIps: blocks(d, d.strings(o, 'ipBlocks', at), `${at}.ipBlocks`),
      notSourceIps: blocks(d, d.strings(o, 'notIpBlocks', at), `${at}.notIpBlocks`),
    });
  } else {
    Object.assign(m, {
      hosts: str('hosts', true),
      notHosts: str('notHosts', true),
      ports: portList(d, d.strings(o, 'ports', at), `${at}.ports`),
      notPorts: portList(d, d.strings(o, 'notPorts', at), `${at}.notPorts`),
      methods: str('methods'),
      notMethods: str('notMethods'),
      paths: str('paths'),
      notPaths: str('notPaths'),
    });
  }
  return m;
}

function l7Condition(d: Doc, v: unknown, rel: string): L7Match | undefined {
  const c = d.obj(v, rel, 'must be { key, values or notValues }', ['key', 'values', 'notValues']);
  if (!c) return undefined;
  const yes = d.strings(c, 'values', rel);
  const no = d.strings(c, 'notValues', rel);
  if (yes.length === 0 && no.length === 0) d.problem(rel, c, 'needs values or notValues');
  const list = (vals: string[], k: string): StringMatch[] => vals.flatMap((s, i) => wildcard(d, s, `${rel}.${k}[${i}]`));
  const key = typeof c.key === 'string' ? c.key : '';
  const m = l7Match();
  const hdr = /^request\.headers\[([^\]]+)\]$/.exec(key);
  if (hdr?.[1] && HEADER_NAME.test(hdr[1]))
    m.headers = [{ name: hdr[1].toLowerCase(), values: list(yes, 'values'), notValues: list(no, 'notValues') }];
  else if (key === 'source.principal') Object.assign(m, { principals: list(yes, 'values'), notPrincipals: list(no, 'notValues') });
  else if (key === 'source.namespace') Object.assign(m, { namespaces: list(yes, 'values'), notNamespaces: list(no, 'notValues') });
  else if (key === 'source.ip')
    Object.assign(m, { sourceIps: blocks(d, yes, `${rel}.values`), notSourceIps: blocks(d, no, `${rel}.notValues`) });
  else if (key === 'destination.port')
    Object.assign(m, { ports: portList(d, yes, `${rel}.values`), notPorts: portList(d, no, `${rel}.notValues`) });
  else {
    d.problem(`${rel}.key`, c.key, 'must be request.headers[<name>], source.principal, source.namespace, source.ip or destination.port');
    return undefined;
  }
  return m;
}

function l7Rule(d: Doc, v: unknown, rel: string): L7Rule | undefined {
  const r = d.obj(v ?? {}, rel, 'must be a map with from, to and when', ['from', 'to', 'when']);
  if (!r) return undefined;
  const clauses: L7Match[][] = [];
  const from = d.list(r, 'from', rel).flatMap((f, i) => l7Entry(d, f, `${rel}.from[${i}]`, 'source') ?? []);
  if (from.length > 0) clauses.push(from);
  const to = d.list(r, 'to', rel).flatMap((t, i) => l7Entry(d, t, `${rel}.to[${i}]`, 'operation') ?? []);
  if (to.length > 0) clauses.push(to);
  d.list(r, 'when', rel).forEach((c, i) => {
    const m = l7Condition(d, c, `${rel}.when[${i}]`);
    if (m) clauses.push([m]);
  });
  return { clauses };
}

/** An AuthorizationPolicy with targetRefs (the others are the node tunnel's: src/sources/istio-crd.ts). */
export function l7Policy(d: Doc, known: Known, waypoints: Map<string, Waypoint>): L7Policy | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules']) ?? {};
  const refs =
    spec.targetRefs !== undefined ? d.list(spec, 'targetRefs', 'spec') : spec.targetRef !== undefined ? [spec.targetRef] : undefined;
  if (!refs) return undefined;
  const refsAt = spec.targetRefs !== undefined ? 'spec.targetRefs' : 'spec.targetRef';
  if (spec.selector !== undefined)
    d.problem(
      'spec.selector',
      spec.selector,
      'does not go with targetRefs: a policy selects workloads or targets a waypoint or service, not both',
    );
  const action = spec.action ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY')
    d.problem('spec.action', action, "must be ALLOW (the default) or DENY; AUDIT and CUSTOM are not enforced by ambit's waypoint");
  const targets = refs.flatMap((t, i): L7Target[] => {
    const at = spec.targetRefs !== undefined ? `${refsAt}[${i}]` : refsAt;
    const o = d.obj(t, at, 'must be { group, kind, name }', ['group', 'kind', 'name', 'namespace']);
    if (!o) return [];
    const name = d.str(o, 'name', at, 'the waypoint Gateway or the Service');
    if (o.namespace !== undefined && o.namespace !== d.namespace)
      d.problem(`${at}.namespace`, o.namespace, `must be the policy's namespace ${d.namespace}`);
    if (!name) return [];
    if (o.kind === 'Gateway' && o.group === GATEWAY_GROUP) {
      if (!waypoints.has(`${d.namespace}/${name}`))
        d.problem(`${at}.name`, name, `names no waypoint in ${d.namespace} (a Gateway of class ${WAYPOINT_CLASS})`);
      return [{ kind: 'Gateway', namespace: d.namespace, name }];
    }
    if (o.kind === 'Service' && (o.group === '' || o.group === 'core' || o.group === undefined)) {
      const svc = known.byName.get(`${d.namespace}/${name}`);
      if (!svc) d.problem(`${at}.name`, name, `names no known service (${known.namesIn(d.namespace)})`);
      return svc ? [{ kind: 'Service', namespace: d.namespace, service: serviceKey(svc) }] : [];
    }
    d.problem(
      at,
      { group: o.group, kind: o.kind },
      `must be a waypoint (kind: Gateway, group: ${GATEWAY_GROUP}) or a Service (kind: Service, group: "")`,
    );
    return [];
  });
  if (refs.length === 0) d.problem(refsAt, spec[refsAt.slice(5)], 'must name at least one waypoint or service');
  const dry = d.annotations['istio.io/dry-run'];
  if (dry !== undefined && dry !== 'true' && dry !== 'false')
    d.problem('metadata.annotations.istio.io/dry-run', dry, 'must be "true" or "false"');
  const rules = d.list(spec, 'rules', 'spec').flatMap((r, i) => l7Rule(d, r, `spec.rules[${i}]`) ?? []);
  return { namespace: d.namespace, name: d.name, action: action as L7Policy['action'], targets, rules, dryRun: dry === 'true' };
}
