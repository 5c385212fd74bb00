// Istio's AuthorizationPolicy and PeerAuthentication, as written in the
// standalone YAML, converted to L4 Authorizations the way istiod converts
// them for ztunnel. A node tunnel sees only L4, hence:
// - HTTP attributes: an ALLOW rule using one is dropped (it could never be
//   shown to match); a DENY only loses that field or condition, which widens
//   the deny. Both warn, naming the field.
//   When the workloads a policy with such a rule applies to sit behind a
//   waypoint, the warning says to attach it to the waypoint with targetRefs
//   instead (Istio's advice), since the waypoint sees HTTP.
// - An AuthorizationPolicy with targetRef(s) (a waypoint Gateway or a
//   Service) is an L7 policy of the waypoint, which reads and enforces it
//   (src/sources/istio-waypoint.ts): it is not converted here and not
//   checked twice, only noted. AUDIT and CUSTOM actions are skipped with a
//   warning.
// - Each rule's `from` and `to` become one clause each (one match per entry);
//   each `when` condition its own clause.
// - Unknown fields are problems, with the field probably meant: a misspelt
//   `from` would turn an ALLOW rule into "allow everything", a misspelt
//   `selector` widen a policy to the whole namespace. metadata takes every
//   field Kubernetes defines, so exported objects (kubectl get -o yaml) load.
// - PeerAuthentication: the effective mode of each workload (selector >
//   namespace > mesh; UNSET inherits; DISABLE acts as PERMISSIVE) becomes,
//   like istiod's STRICT, a DENY of peers without identity; port-level modes
//   narrow it. One policy per deciding PeerAuthentication, named
//   ambit-peerauthn-<name> in its namespace, selected by the workloads it
//   governs. Among rivals at one level the oldest (creationTimestamp, then
//   document order) wins.
import net from 'node:net';
import { matchOf } from '../policy/engine';
import {
  type Authorization,
  type Clause,
  type IpBlock,
  type Match,
  type PolicyAction,
  policyKey,
  type Rule,
  type StringMatch,
} from '../policy/types';
import { type GatewayAddress, type MeshWaypoint, type Service, serviceKey, type Workload } from '../state/types';
import { DNS, isObj, METADATA, type Obj, wildcard } from './k8s-doc';
import { unknownKeyHint } from './schema';

type Report = (at: string, value: unknown, what: string) => void;
type Mode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface IstioOptions {
  rootNamespace: string;
  at?: string;
  /** The waypoints resolved for these workloads, and the services (with their `waypoint`), to tell who sits behind one. */
  waypoints?: readonly MeshWaypoint[];
  services?: readonly Service[];
}
export interface IstioPolicies {
  policies: Authorization[];
  warnings: string[];
  /** What is fine but worth knowing (a policy the waypoint enforces instead), to log at info level. */
  notes: string[];
}

const API_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'];
const KINDS = ['AuthorizationPolicy', 'PeerAuthentication'];
const MODES: Mode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];
const L4_ONLY = 'a node tunnel sees only L4';
const PA_PREFIX = 'ambit-peerauthn-';

/** One document: where it is, for problems (full paths) and warnings (with its name). */
class Doc {
  problems = 0;
  name = '';
  namespace = '';
  created = '';
  spec: Obj = {};
  annotations: Obj = {};
  constructor(
    readonly at: string,
    readonly order: number,
    private readonly report: Report,
    private readonly warnings: string[],
  ) {}
  get label(): string {
    return `${this.at} (${this.namespace}/${this.name})`;
  }
  problem(rel: string, value: unknown, what: string): void {
    this.problems++;
    this.report(rel ? `${this.at}.${rel}` : this.at, value, what);
  }
  warn(rel: string, what: string): void {
    this.warnings.push(`${this.label} ${rel}: ${what}`);
  }

  /** A map or nothing; `keys` lists its fields when they are fixed. */
  obj(v: unknown, rel: string, what: string, keys?: string[]): Obj | undefined {
    if (v === undefined) return undefined;
    if (!isObj(v)) {
      this.problem(rel, v, what);
      return undefined;
    }
    for (const k of Object.keys(v)) {
      if (keys && !keys.includes(k)) this.problem(rel ? `${rel}.${k}` : k, v[k], unknownKeyHint(k, keys));
    }
    return v;
  }

  list(o: Obj, key: string, rel: string): unknown[] {
    const v = o[key];
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.problem(`${rel}.${key}`, v, 'must be a list');
    return [];
  }

  strings(o: Obj, key: string, rel: string): string[] {
    return this.list(o, key, rel).flatMap((s, i) => {
      if (typeof s === 'string' && s !== '') return [s];
      if (typeof s === 'number' && Number.isFinite(s)) return [String(s)];
      this.problem(`${rel}.${key}[${i}]`, s, 'must be a non-empty string');
      return [];
    });
  }
}

const matchList = (d: Doc, values: string[], at: string): StringMatch[] => values.flatMap((s, i) => wildcard(d, s, `${at}[${i}]`));

function ipBlocks(d: Doc, values: string[], at: string): IpBlock[] {
  return values.flatMap((s, i) => {
    const [address = '', len, extra] = s.split('/');
    const v = net.isIP(address);
    const length = len === undefined ? (v === 6 ? 128 : 32) : /^\d+$/.test(len) ? Number(len) : -1;
    if (v === 0 || extra !== undefined || length < 0 || length > (v === 6 ? 128 : 32)) {
      d.problem(`${at}[${i}]`, s, 'must be an IPv4/IPv6 address or CIDR such as 10.0.0.0/8');
      return [];
    }
    return [{ address, length }];
  });
}

function ports(d: Doc, values: unknown[], at: string): number[] {
  return values.flatMap((p, i) => {
    const n = typeof p === 'number' ? p : typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : NaN;
    if (Number.isInteger(n) && n >= 1 && n <= 65535) return [n];
    d.problem(`${at}[${i}]`, p, 'must be a port number 1..65535, e.g. 8080 or "8080"');
    return [];
  });
}

function matchLabels(d: Doc, v: unknown, rel: string): Record<string, string> | undefined {
  const sel = d.obj(v, rel, 'must be { matchLabels: { key: value } }', ['matchLabels']);
  const ml = sel && d.obj(sel.matchLabels, `${rel}.matchLabels`, 'must be a map of label to value, e.g. { app: echo }');
  if (!ml || Object.keys(ml).length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(ml)) {
    if (typeof val === 'string' || typeof val === 'number' || typeof val === 'boolean') out[k] = String(val);
    else d.problem(`${rel}.matchLabels.${k}`, val, 'label values must be strings');
  }
  return out;
}

const selects = (labels: Record<string, string>, w: Workload): boolean => Object.entries(labels).every(([k, v]) => w.labels[k] === v);

/** Reports an HTTP-only attribute; for ALLOW it makes the whole rule unusable. */
type HttpSeen = (rel: string, what: string) => void;

const SOURCE = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks'];
const SOURCE_HTTP = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'];
const OPERATION_HTTP = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];

function entry(d: Doc, v: unknown, rel: string, key: 'source' | 'operation', fields: string[], http: HttpSeen): Obj | undefined {
  const outer = d.obj(v, rel, `must be { ${key}: { … } }`, [key]);
  if (!outer) return undefined;
  const at = `${rel}.${key}`;
  const inner = d.obj(outer[key] ?? {}, at, `must be a map with some of ${fields.join(', ')}`, fields);
  if (inner && Object.keys(inner).length === 0) d.problem(at, outer[key], `must set at least one of ${fields.join(', ')}`);
  if (!inner || Object.keys(inner).length === 0) return undefined;
  for (const k of fields)
    if (inner[k] !== undefined && (SOURCE_HTTP.includes(k) || OPERATION_HTTP.includes(k))) http(`${at}.${k}`, 'HTTP attribute');
  return inner;
}

function source(d: Doc, v: unknown, rel: string, http: HttpSeen): Match {
  const s = entry(d, v, rel, 'source', [...SOURCE, ...SOURCE_HTTP], http);
  if (!s) return matchOf();
  const at = `${rel}.source`;
  const str = (k: string): StringMatch[] => matchList(d, d.strings(s, k, at), `${at}.${k}`);
  return matchOf({
    principals: str('principals'),
    notPrincipals: str('notPrincipals'),
    namespaces: str('namespaces'),
    notNamespaces: str('notNamespaces'),
    sourceIps: ipBlocks(d, d.strings(s, 'ipBlocks', at), `${at}.ipBlocks`),
    notSourceIps: ipBlocks(d, d.strings(s, 'notIpBlocks', at), `${at}.notIpBlocks`),
  });
}

function operation(d: Doc, v: unknown, rel: string, http: HttpSeen): Match {
  const o = entry(d, v, rel, 'operation', ['ports', 'notPorts', ...OPERATION_HTTP], http);
  if (!o) return matchOf();
  const at = `${rel}.operation`;
  return matchOf({
    destinationPorts: ports(d, d.list(o, 'ports', at), `${at}.ports`),
    notDestinationPorts: ports(d, d.list(o, 'notPorts', at), `${at}.notPorts`),
  });
}

function condition(d: Doc, v: unknown, rel: string, http: HttpSeen): Match | undefined {
  const c = d.obj(v, rel, 'must be { key, values or notValues }', ['key', 'values', 'notValues']);
  if (!c) return undefined;
  if (typeof c.key !== 'string' || c.key === '') {
    d.problem(`${rel}.key`, c.key, 'must be an attribute such as source.ip or destination.port');
    return undefined;
  }
  const yes = d.strings(c, 'values', rel);
  const no = d.strings(c, 'notValues', rel);
  if (yes.length === 0 && no.length === 0) d.problem(rel, c, 'needs values or notValues');
  const [y, n] = [`${rel}.values`, `${rel}.notValues`];
  switch (c.key) {
    case 'source.ip':
      return matchOf({ sourceIps: ipBlocks(d, yes, y), notSourceIps: ipBlocks(d, no, n) });
    case 'source.namespace':
      return matchOf({ namespaces: matchList(d, yes, y), notNamespaces: matchList(d, no, n) });
    case 'source.principal':
      return matchOf({ principals: matchList(d, yes, y), notPrincipals: matchList(d, no, n) });
    case 'destination.ip':
      return matchOf({ destinationIps: ipBlocks(d, yes, y), notDestinationIps: ipBlocks(d, no, n) });
    case 'destination.port':
      return matchOf({ destinationPorts: ports(d, yes, y), notDestinationPorts: ports(d, no, n) });
    default:
      http(
        `${rel}.key`,
        c.key.startsWith('request.')
          ? `${c.key} is an HTTP attribute`
          : `${c.key} is not an L4 attribute (source.ip, source.namespace, source.principal, destination.ip, destination.port)`,
      );
      return undefined;
  }
}

function rule(d: Doc, v: unknown, rel: string, action: PolicyAction, advice: () => string): Rule | undefined {
  const r = d.obj(v ?? {}, rel, 'must be a map with from, to and when', ['from', 'to', 'when']);
  if (!r) return undefined;
  let usable = true;
  const http: HttpSeen = (at, what) => {
    if (action === 'ALLOW') usable = false;
    d.warn(
      at,
      `${what}; ${L4_ONLY}, so ${action === 'ALLOW' ? 'this ALLOW rule is ignored' : 'this DENY ignores it and applies more widely'}${advice()}`,
    );
  };
  const clauses: Clause[] = [];
  const from = d.list(r, 'from', rel).map((f, i) => source(d, f, `${rel}.from[${i}]`, http));
  if (from.length > 0) clauses.push({ matches: from });
  const to = d.list(r, 'to', rel).map((t, i) => operation(d, t, `${rel}.to[${i}]`, http));
  if (to.length > 0) clauses.push({ matches: to });
  d.list(r, 'when', rel).forEach((c, i) => {
    const m = condition(d, c, `${rel}.when[${i}]`, http);
    if (m) clauses.push({ matches: [m] });
  });
  return usable ? { clauses } : undefined;
}

/**
 * The workloads a policy applies to (selector, else its namespace, else the
 * whole mesh from the root namespace).
 */
function appliesTo(
  workloads: readonly Workload[],
  ns: string,
  rootNamespace: string,
  selector: Record<string, string> | undefined,
): Workload[] {
  return workloads.filter((w) => (w.namespace === ns || ns === rootNamespace) && (!selector || selects(selector, w)));
}

/**
 * Which waypoint a workload's traffic goes through, as "namespace/name":
 * its own, or that of a service it backs (by `services` or by selector).
 */
function waypointBehind(opts: IstioOptions): (w: Workload) => string | undefined {
  const byIp = new Map<string, string>();
  for (const wp of opts.waypoints ?? [])
    if (wp.address.destination.kind === 'address') byIp.set(wp.address.destination.ip, `${wp.namespace}/${wp.name}`);
  const name = (g: GatewayAddress | undefined): string | undefined =>
    g === undefined
      ? undefined
      : g.destination.kind === 'address'
        ? (byIp.get(g.destination.ip) ?? `at ${g.destination.ip}`)
        : `${g.destination.namespace}/${g.destination.hostname}`;
  const services = (opts.services ?? []).filter((s) => s.waypoint !== undefined);
  return (w) => {
    const own = name(w.waypoint);
    if (own) return own;
    for (const s of services) {
      const backs =
        w.services?.includes(serviceKey(s)) ||
        (s.namespace === w.namespace && Object.keys(s.selector).length > 0 && selects(s.selector, w));
      if (backs) return name(s.waypoint);
    }
    return undefined;
  };
}

/** The advice added to an HTTP-attribute warning when the policy's workloads sit behind a waypoint; '' when none does. */
function waypointAdvice(workloads: Workload[], behind: (w: Workload) => string | undefined): string {
  for (const w of workloads) {
    const wp = behind(w);
    if (wp)
      return (
        `; workload ${w.uid} sits behind waypoint ${wp}, which sees HTTP: attach the policy to the waypoint instead ` +
        '(spec.targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: <waypoint> }] or a Service, no selector)'
      );
  }
  return '';
}

function authorizationPolicy(
  d: Doc,
  rootNamespace: string,
  advice: (selector: Record<string, string> | undefined) => string,
): { policy: Authorization; selector?: Record<string, string> } | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules']) ?? {};
  const selector = matchLabels(d, spec.selector, 'spec.selector');
  const action = spec.action ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY') {
    if (action === 'AUDIT' || action === 'CUSTOM')
      d.warn('spec.action', `${action} is not enforced by a node tunnel; the policy is skipped`);
    else d.problem('spec.action', action, 'must be ALLOW (the default), DENY, AUDIT or CUSTOM');
    return undefined;
  }
  const dry = d.annotations['istio.io/dry-run'];
  if (dry !== undefined && !['true', 'false', true, false].includes(dry as string))
    d.problem('metadata.annotations.istio.io/dry-run', dry, 'must be "true" or "false"');
  // Only a policy with an HTTP attribute needs it: looking through every workload for each policy would be waste.
  let why: string | undefined;
  const once = (): string => {
    why ??= advice(selector);
    return why;
  };
  const rules = d.list(spec, 'rules', 'spec').flatMap((r, i) => rule(d, r, `spec.rules[${i}]`, action, once) ?? []);
  const scope = selector ? 'WORKLOAD_SELECTOR' : d.namespace === rootNamespace ? 'GLOBAL' : 'NAMESPACE';
  return { policy: { name: d.name, namespace: d.namespace, scope, action, rules, dryRun: dry === true || dry === 'true' }, selector };
}

interface PeerAuthn {
  doc: Doc;
  selector?: Record<string, string>;
  mode: Mode;
  ports: Map<number, Mode>;
}

function mode(d: Doc, v: unknown, rel: string): Mode {
  const o = d.obj(v, rel, 'must be { mode: STRICT }', ['mode']);
  const m = o?.mode ?? 'UNSET';
  if (MODES.includes(m as Mode)) {
    if (m === 'DISABLE')
      d.warn(`${rel}.mode`, 'DISABLE acts as PERMISSIVE for a node tunnel: plaintext is accepted and mesh peers still use mTLS');
    return m as Mode;
  }
  d.problem(`${rel}.mode`, m, `must be one of ${MODES.join(', ')}`);
  return 'UNSET';
}

function peerAuthentication(d: Doc): PeerAuthn {
  const spec = d.obj(d.spec, 'spec', 'must be a map', ['selector', 'mtls', 'portLevelMtls']) ?? {};
  const selector = matchLabels(d, spec.selector, 'spec.selector');
  const pa: PeerAuthn = { doc: d, selector, mode: mode(d, spec.mtls, 'spec.mtls'), ports: new Map() };
  const levels = spec.portLevelMtls;
  if (levels !== undefined && !selector) {
    d.warn('spec.portLevelMtls', 'counts only on a PeerAuthentication with a selector; ignored');
    return pa;
  }
  const pl = d.obj(levels, 'spec.portLevelMtls', 'must be a map of port to { mode }, e.g. { 8080: { mode: PERMISSIVE } }');
  for (const [k, v] of Object.entries(pl ?? {})) {
    const port = /^\d+$/.test(k) ? Number(k) : 0;
    if (port >= 1 && port <= 65535) pa.ports.set(port, mode(d, v, `spec.portLevelMtls.${k}`));
    else d.problem(`spec.portLevelMtls.${k}`, k, 'keys must be port numbers 1..65535');
  }
  return pa;
}

const strict = (m: Mode): boolean => m === 'STRICT';

/** The DENY that enforces a PeerAuthentication on the workloads it decides for, or nothing. */
function denyPlaintext(pa: PeerAuthn, base: boolean): Authorization | undefined {
  const flipped = [...pa.ports]
    .filter(([, m]) => m !== 'UNSET' && strict(m) !== base)
    .map(([p]) => p)
    .sort((a, b) => a - b);
  if (!base && flipped.length === 0) return undefined;
  const m = matchOf({ notPrincipals: [{ presence: true }], ...(base ? { notDestinationPorts: flipped } : { destinationPorts: flipped }) });
  return {
    name: PA_PREFIX + pa.doc.name,
    namespace: pa.doc.namespace,
    scope: 'WORKLOAD_SELECTOR',
    action: 'DENY',
    rules: [{ clauses: [{ matches: [m] }] }],
    dryRun: false,
  };
}

/** The first (oldest) wins; the others are named in a warning. */
function oldest(pas: PeerAuthn[], what: string, warnings: Set<string>): PeerAuthn | undefined {
  const [first, ...others] = pas;
  if (!first) return undefined;
  for (const pa of others)
    warnings.add(`${pa.doc.label} spec: ${what}, like the older ${policyKey(first.doc)}, which wins; this one is ignored`);
  return first;
}

function compilePeerAuthn(
  pas: PeerAuthn[],
  workloads: Workload[],
  root: string,
  warnings: Set<string>,
  assign: (w: Workload, key: string) => void,
): Authorization[] {
  pas.sort((a, b) =>
    a.doc.created && b.doc.created && a.doc.created !== b.doc.created
      ? a.doc.created < b.doc.created
        ? -1
        : 1
      : a.doc.order - b.doc.order,
  );
  const wide = (ns: string): PeerAuthn | undefined =>
    oldest(
      pas.filter((p) => !p.selector && p.doc.namespace === ns),
      `applies to all of namespace ${ns}`,
      warnings,
    );
  const out = new Map<PeerAuthn, Authorization | undefined>();
  for (const w of workloads) {
    const levels = [wide(w.namespace), wide(root)].filter((p): p is PeerAuthn => p !== undefined && p.mode !== 'UNSET');
    const inherited = levels[0];
    const own = oldest(
      pas.filter((p) => p.selector && p.doc.namespace === w.namespace && selects(p.selector, w)),
      `selects workload ${w.uid}`,
      warnings,
    );
    const base = own && own.mode !== 'UNSET' ? strict(own.mode) : inherited !== undefined && strict(inherited.mode);
    const decides =
      own && (own.mode !== 'UNSET' || [...own.ports.values()].some((m) => m !== 'UNSET' && strict(m) !== base)) ? own : inherited;
    if (!decides) continue;
    if (!out.has(decides)) out.set(decides, denyPlaintext(decides, base));
    const policy = out.get(decides);
    if (policy) assign(w, policyKey(policy));
  }
  return [...out.values()].filter((p): p is Authorization => p !== undefined);
}

function header(raw: unknown, at: string, order: number, report: Report, warnings: string[]): { doc: Doc; kind: string } | undefined {
  const d = new Doc(at, order, report, warnings);
  const o = d.obj(raw, '', 'must be a Kubernetes object with apiVersion, kind, metadata and spec', [
    'apiVersion',
    'kind',
    'metadata',
    'spec',
    'status',
  ]);
  if (!o) return undefined;
  if (!API_VERSIONS.includes(o.apiVersion as string)) d.problem('apiVersion', o.apiVersion, `must be ${API_VERSIONS.join(' or ')}`);
  if (!KINDS.includes(o.kind as string)) d.problem('kind', o.kind, `must be ${KINDS.join(' or ')}`);
  const meta = d.obj(o.metadata, 'metadata', 'must be a map with name and namespace', METADATA) ?? {};
  for (const k of ['name', 'namespace'] as const) {
    if (typeof meta[k] === 'string' && DNS.test(meta[k] as string)) d[k] = meta[k] as string;
    else d.problem(`metadata.${k}`, meta[k], 'is required: lower-case letters, digits, - and .');
  }
  d.annotations = d.obj(meta.annotations, 'metadata.annotations', 'must be a map of string to string') ?? {};
  d.obj(meta.labels, 'metadata.labels', 'must be a map of string to string');
  d.created = typeof meta.creationTimestamp === 'string' ? meta.creationTimestamp : '';
  d.spec = o.spec === undefined || o.spec === null ? {} : (o.spec as Obj);
  return d.problems === 0 ? { doc: d, kind: o.kind as string } : undefined;
}

/**
 * Converts Istio documents to Authorizations, reporting invalid structure
 * through `problem` and what a node tunnel cannot enforce as warnings. Sets
 * `authorizationPolicies` on the workloads a selector policy picks.
 */
export function compileIstioPolicies(docs: unknown[], workloads: Workload[], opts: IstioOptions, problem: Report): IstioPolicies {
  const prefix = opts.at ?? 'policies';
  const warnings: string[] = [];
  const policies: Authorization[] = [];
  const peerAuthns: PeerAuthn[] = [];
  const assigned = new Map<Workload, Set<string>>();
  const assign = (w: Workload, key: string): void => {
    assigned.set(w, (assigned.get(w) ?? new Set()).add(key));
  };
  const notes: string[] = [];
  const behind = waypointBehind(opts);
  // The waypoint's reader checks its own policies (targetRefs) and their duplicates; a clash with one of ours is checked here.
  const seen = new Map<string, { at: string; waypoint: boolean }>();
  docs.forEach((raw, i) => {
    const at = `${prefix}[${i}]`;
    const ref = waypointPolicy(raw);
    if (ref) {
      const id = `AuthorizationPolicy ${ref.namespace}/${ref.name}`;
      const earlier = seen.get(id);
      if (earlier && !earlier.waypoint)
        problem(`${at}.metadata.name`, ref.name, `duplicates ${earlier.at}; names must be unique per kind and namespace`);
      else if (!earlier) seen.set(id, { at, waypoint: true });
      notes.push(
        `${at} (${ref.namespace}/${ref.name}) ${ref.field}: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel`,
      );
      return;
    }
    const h = header(raw, at, i, problem, warnings);
    if (!h) return;
    const d = h.doc;
    const id = `${h.kind} ${policyKey(d)}`;
    const earlier = seen.get(id);
    if (earlier) {
      d.problem('metadata.name', d.name, `duplicates ${earlier.at}; names must be unique per kind and namespace`);
      return;
    }
    seen.set(id, { at: d.at, waypoint: false });
    if (h.kind === 'PeerAuthentication') {
      const pa = peerAuthentication(d);
      if (d.problems === 0) peerAuthns.push(pa);
      return;
    }
    if (d.name.startsWith(PA_PREFIX))
      d.problem('metadata.name', d.name, `names starting with ${PA_PREFIX} are reserved for converted PeerAuthentications`);
    const c = authorizationPolicy(d, opts.rootNamespace, (sel) =>
      waypointAdvice(appliesTo(workloads, d.namespace, opts.rootNamespace, sel), behind),
    );
    if (!c || d.problems > 0) return;
    policies.push(c.policy);
    const sel = c.selector;
    if (!sel) return;
    for (const w of workloads) {
      if ((w.namespace === d.namespace || d.namespace === opts.rootNamespace) && selects(sel, w)) assign(w, policyKey(c.policy));
    }
  });
  const paWarnings = new Set<string>();
  policies.push(...compilePeerAuthn(peerAuthns, workloads, opts.rootNamespace, paWarnings, assign));
  warnings.push(...paWarnings);
  for (const [w, keys] of assigned) w.authorizationPolicies = [...new Set([...w.authorizationPolicies, ...keys])].sort();
  return { policies, warnings, notes };
}

/**
 * An AuthorizationPolicy with targetRef(s): the waypoint's (its reader,
 * compileWaypointConfig, checks it and reports its problems). Its name for
 * the note, or undefined for every other document.
 */
export function waypointPolicy(raw: unknown): { namespace: string; name: string; field: string } | undefined {
  if (!isObj(raw) || raw.kind !== 'AuthorizationPolicy' || !isObj(raw.spec)) return undefined;
  const field = raw.spec.targetRefs !== undefined ? 'spec.targetRefs' : raw.spec.targetRef !== undefined ? 'spec.targetRef' : '';
  if (!field) return undefined;
  const meta = isObj(raw.metadata) ? raw.metadata : {};
  return { namespace: String(meta.namespace ?? ''), name: String(meta.name ?? ''), field };
}
