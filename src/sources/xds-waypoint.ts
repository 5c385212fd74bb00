// A waypoint's L7 configuration on the wire (ambit.waypoint.v1.WaypointConfig,
// proto/ambit/waypoint/v1/waypoint.proto): the control plane cuts, out of the
// compiled `routes` of its configuration, what each waypoint enforces (the
// routes of the services bound to it, the policies targeting its Gateway or
// those services) and sends it as the typed messages of waypoint.proto,
// which mirror the model in src/waypoint/types.ts field for field (snake_case
// on the wire, camelCase in the model; regular expressions as their source).
//
// The waypoint trusts none of it: every field is checked again on receipt
// (types, ranges, header names a response could not carry, regular
// expressions recompiled under the same shape rules as at the source), so a
// control plane of another version or a bug there is a NACK naming the
// field, never a waypoint that throws while serving a request.
import net from 'node:net';
import type { IpBlock, StringMatch } from '../policy/types';
import type { WaypointConfigMessage } from '../protocol/messages';
import { TYPE_WAYPOINT } from '../protocol/protos';
import type {
  ConnectionPool,
  DestinationPolicy,
  FaultInjection,
  HeaderModifier,
  L7Match,
  L7Policy,
  L7Rule,
  L7Target,
  LoadBalancer,
  OutlierDetection,
  PathMatch,
  PathModifier,
  RateLimitPolicy,
  RetryPolicy,
  RouteFilter,
  RouteMatch,
  RouteRule,
  ServiceRoutes,
  Subset,
  TrafficPolicy,
  ValueMatch,
  WaypointConfig,
  WeightedBackend,
} from '../waypoint/types';
import { RETRY_CONDITIONS, waypointKey } from '../waypoint/types';
import { compileRouteRegex } from './route-regex';
import { packResource, ResourceError, type XdsResource } from './xds-resources';

/** The meaning of the WaypointConfig messages (schema_version); a waypoint refuses any other. */
export const WAYPOINT_SCHEMA_VERSION = 1;

/** What one waypoint enforces: RouteTable's routes, L7Authorizer's policies and the DestinationRules of where it sends. */
export interface WaypointL7 {
  routes: ServiceRoutes[];
  policies: L7Policy[];
  destinations: DestinationPolicy[];
  /** HTTPLocalRateLimitPolicies of the services it serves; absent: none. */
  rateLimits?: RateLimitPolicy[];
}

/**
 * The waypoints a configuration names: those declared (Gateways of class
 * istio-waypoint) and any a binding or a policy's Gateway target names,
 * each with what it enforces.
 */
export function waypointScopes(cfg: WaypointConfig): Map<string, WaypointL7> {
  const keys = new Set<string>(cfg.waypoints.map(waypointKey));
  for (const k of cfg.bindings.services.values()) keys.add(k);
  for (const k of cfg.bindings.workloads.values()) keys.add(k);
  for (const p of cfg.policies) for (const t of p.targets) if (t.kind === 'Gateway') keys.add(`${t.namespace}/${t.name}`);
  const servedBy = (service: string): string | undefined => cfg.bindings.services.get(service);
  const scopes = new Map<string, WaypointL7>();
  for (const key of [...keys].sort()) {
    const routes = cfg.routes.filter((r) => servedBy(r.service) === key);
    // The rules of the services it serves and of every backend (or mirror) its routes send to, which it balances too.
    const sends = new Set(
      routes.flatMap((r) =>
        r.rules.flatMap((rule) => [
          ...rule.backends.map((b) => b.service),
          ...rule.filters.flatMap((f) => (f.type === 'RequestMirror' ? [f.backend.service] : [])),
        ]),
      ),
    );
    scopes.set(key, {
      routes,
      policies: cfg.policies.filter((p) =>
        p.targets.some((t) => (t.kind === 'Gateway' ? `${t.namespace}/${t.name}` === key : servedBy(t.service) === key)),
      ),
      destinations: (cfg.destinations ?? []).filter((d) => servedBy(d.service) === key || sends.has(d.service)),
      // A limit is taken where requests for the service arrive: at the waypoint that serves it.
      rateLimits: (cfg.rateLimits ?? []).filter((p) => servedBy(p.service) === key),
    });
  }
  return scopes;
}

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** The model as proto field names; a compiled RegExp is not sent (rebuilt from its source on receipt). */
function toWire(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(toWire);
  if (typeof v !== 'object' || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (k !== 'regex' && x !== undefined) out[snake(k)] = toWire(x);
  return out;
}

/**
 * A decoded message as model field names: without what the decoder adds
 * (null for an absent message, the names of set oneof members), so that
 * absent reads as absent.
 */
function fromWire(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromWire);
  if (typeof v !== 'object' || v === null || Buffer.isBuffer(v)) return v ?? undefined;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith('_') || k === 'match_kind' || x === null || x === undefined) continue;
    out[camel(k)] = fromWire(x);
  }
  return out;
}

/** An L7 rule's clauses are lists of matches: a message each on the wire (proto has no list of lists). */
const policyToWire = (p: L7Policy): unknown =>
  toWire({ ...p, rules: p.rules.map((r) => ({ clauses: r.clauses.map((matches) => ({ matches })) })) });

/** One WaypointConfig resource per waypoint the configuration names. */
export function waypointResources(cfg: WaypointConfig): Map<string, XdsResource> {
  const out = new Map<string, XdsResource>();
  for (const [key, l7] of waypointScopes(cfg)) {
    const [namespace = '', name = ''] = key.split('/');
    const message: WaypointConfigMessage = {
      namespace,
      name,
      schema_version: WAYPOINT_SCHEMA_VERSION,
      routes: l7.routes.map(toWire),
      policies: l7.policies.map(policyToWire),
      destinations: l7.destinations.map(toWire),
      rate_limits: (l7.rateLimits ?? []).map(toWire),
    };
    out.set(key, packResource(key, TYPE_WAYPOINT, message));
  }
  return out;
}

// ---- decoding: every field checked, the first problem named ----

type Check<T> = (v: unknown, at: string) => T;

class FieldError extends Error {}

function bad(at: string, v: unknown, what: string): never {
  let shown: string;
  try {
    shown = JSON.stringify(v) ?? String(v);
  } catch {
    shown = String(v);
  }
  throw new FieldError(`${at} ${shown.length > 80 ? `${shown.slice(0, 77)}...` : shown} ${what}`);
}

const str: Check<string> = (v, at) => (typeof v === 'string' ? v : bad(at, v, 'must be a string'));
const bool: Check<boolean> = (v, at) => (typeof v === 'boolean' ? v : bad(at, v, 'must be true or false'));
const int =
  (min: number, max: number): Check<number> =>
  (v, at) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : bad(at, v, `must be a whole number ${min}..${max}`);
const port = int(1, 65535);
const ms = int(0, 2 ** 31 - 1);
const lit =
  <T extends string | number>(...values: readonly T[]): Check<T> =>
  (v, at) =>
    values.includes(v as T) ? (v as T) : bad(at, v, `must be one of ${values.join(', ')}`);
const arr =
  <T>(item: Check<T>, nonEmpty = false): Check<T[]> =>
  (v, at) => {
    if (!Array.isArray(v)) return bad(at, v, 'must be a list');
    if (nonEmpty && v.length === 0) return bad(at, v, 'must not be empty');
    return v.map((x, i) => item(x, `${at}[${i}]`));
  };
const opt =
  <T>(c: Check<T>): Check<T | undefined> =>
  (v, at) =>
    v === undefined ? undefined : c(v, at);
const matching =
  (re: RegExp, what: string): Check<string> =>
  (v, at) =>
    re.test(str(v, at)) ? (v as string) : bad(at, v, what);

type Spec = Record<string, Check<unknown>>;
type Shaped<S extends Spec> = { [K in keyof S]: ReturnType<S[K]> };

/** An object with exactly the fields of spec (unknown fields are refused: they mean another model). */
function obj<S extends Spec>(spec: S): Check<Shaped<S>> {
  return (v, at) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(at, v, 'must be an object');
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!(k in spec)) bad(`${at}.${snake(k)}`, o[k], 'is not a field here');
    const out: Record<string, unknown> = {};
    for (const [k, c] of Object.entries(spec)) {
      const value = c(o[k], `${at}.${snake(k)}`);
      if (value !== undefined) out[k] = value;
    }
    return out as Shaped<S>;
  };
}

/** The variant named by the tag field. */
function tagged<T>(tag: string, variants: Record<string, Check<T>>): Check<T> {
  return (v, at) => {
    const t = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[tag] : undefined;
    const c = typeof t === 'string' && Object.hasOwn(variants, t) ? variants[t] : undefined;
    return c ? c(v, at) : bad(`${at}.${tag}`, t, `must be one of ${Object.keys(variants).join(', ')}`);
  };
}

// What Node's HTTP layer would refuse to send (it throws): refused here instead.
const headerName = matching(/^[!#$%&'*+\-.^_`|~0-9a-z]+$/, 'is not a lower-case HTTP header name');
const headerValue = matching(/^[\t\x20-\x7e\x80-\xff]*$/, 'holds a character an HTTP header value cannot');
const absPath = matching(/^\/[^\s]*$/, 'must be a path starting with /');

const regexOf = (pattern: string, at: string): RegExp => {
  const r = compileRouteRegex(pattern);
  return 'regex' in r ? r.regex : bad(at, pattern, r.why);
};

const pathMatch: Check<PathMatch> = tagged<PathMatch>('type', {
  Exact: obj({ type: lit('Exact'), value: absPath }),
  PathPrefix: obj({ type: lit('PathPrefix'), value: absPath }),
  Prefix: obj({ type: lit('Prefix'), value: absPath }),
  RegularExpression: (v, at) => {
    const m = obj({ type: lit('RegularExpression'), value: str })(v, at);
    return { ...m, regex: regexOf(m.value, `${at}.value`) };
  },
});

/** Header names are lower case (the source lowers them); query parameter names are as written. */
const valueMatch = (name: Check<string>): Check<ValueMatch> =>
  tagged<ValueMatch>('type', {
    Exact: obj({ name, type: lit('Exact'), value: str }),
    RegularExpression: (v, at) => {
      const m = obj({ name, type: lit('RegularExpression'), value: str })(v, at);
      return { ...m, regex: regexOf(m.value, `${at}.value`) };
    },
  });

const routeMatch: Check<RouteMatch> = obj({
  path: pathMatch,
  headers: arr(valueMatch(headerName)),
  queryParams: arr(valueMatch(str)),
  method: opt(matching(/^[A-Z]+$/, 'must be an upper-case HTTP method')),
});

const headerValues = arr(obj({ name: headerName, value: headerValue }));
const headerModifier: Check<HeaderModifier> = obj({ set: headerValues, add: headerValues, remove: arr(headerName) });
const pathModifier: Check<PathModifier> = tagged<PathModifier>('type', {
  ReplaceFullPath: obj({ type: lit('ReplaceFullPath'), value: absPath }),
  ReplacePrefixMatch: obj({ type: lit('ReplacePrefixMatch'), value: absPath }),
});
const subsetName = matching(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'is not a subset name');
const hostname = matching(/^[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/, 'is not a hostname');

const routeFilter: Check<RouteFilter> = tagged<RouteFilter>('type', {
  RequestHeaderModifier: obj({ type: lit('RequestHeaderModifier'), modifier: headerModifier }),
  ResponseHeaderModifier: obj({ type: lit('ResponseHeaderModifier'), modifier: headerModifier }),
  RequestRedirect: obj({
    type: lit('RequestRedirect'),
    scheme: opt(lit('http', 'https')),
    hostname: opt(hostname),
    path: opt(pathModifier),
    port: opt(port),
    statusCode: lit(301, 302, 303, 307, 308),
  }),
  URLRewrite: obj({ type: lit('URLRewrite'), hostname: opt(hostname), path: opt(pathModifier) }),
  RequestMirror: obj({
    type: lit('RequestMirror'),
    backend: obj({ service: str, port, subset: opt(subsetName) }),
    percent: (v, at) => percent(v ?? 0, at),
  }),
});

const percent: Check<number> = (v, at) =>
  typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 100 ? v : bad(at, v, 'must be a percentage 0..100');
const fault: Check<FaultInjection> = obj({
  delay: opt(obj({ ms, percent: (v, at) => percent(v ?? 0, at) })),
  abort: opt(obj({ status: int(200, 599), percent: (v, at) => percent(v ?? 0, at) })),
});

const backend: Check<WeightedBackend> = obj({
  namespace: str,
  name: str,
  service: str,
  port,
  weight: int(0, 1_000_000),
  subset: opt(subsetName),
});

const retryPolicy: Check<RetryPolicy> = obj({
  attempts: int(0, 100),
  on: arr(lit(...RETRY_CONDITIONS)),
  codes: arr(int(100, 599)),
  backoffBaseMs: ms,
  backoffMaxMs: ms,
});

const routeRule: Check<RouteRule> = (v, at) => {
  const r = obj({
    origin: obj({
      kind: lit('HTTPRoute', 'GRPCRoute', 'VirtualService'),
      namespace: str,
      name: str,
      created: str,
      order: int(0, 2 ** 31 - 1),
    }),
    index: int(0, 2 ** 31 - 1),
    matches: arr(routeMatch, true),
    filters: arr(routeFilter),
    backends: arr(backend),
    timeouts: obj({ requestMs: opt(ms), backendRequestMs: opt(ms) }),
    retry: opt(retryPolicy),
    fault: opt(fault),
  })(v, at);
  if (r.backends.length === 0 && !r.filters.some((f) => f.type === 'RequestRedirect'))
    bad(`${at}.backends`, r.backends, 'is empty, and the rule has no RequestRedirect: nothing would answer');
  return r;
};

const serviceRoutes: Check<ServiceRoutes> = obj({ service: str, port: opt(port), rules: arr(routeRule) });

const stringMatch: Check<StringMatch> = (v, at) => {
  const keys = typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.keys(v) : [];
  const [k] = keys;
  if (keys.length !== 1) return bad(at, v, 'must have exactly one of exact, prefix, suffix, presence');
  if (k === 'presence')
    return (v as { presence: unknown }).presence === true ? { presence: true } : bad(`${at}.presence`, v, 'must be true');
  if (k === 'exact') return obj({ exact: str })(v, at);
  if (k === 'prefix') return obj({ prefix: str })(v, at);
  if (k === 'suffix') return obj({ suffix: str })(v, at);
  return bad(at, v, 'must have exactly one of exact, prefix, suffix, presence');
};

const ipBlock: Check<IpBlock> = (v, at) => {
  const b = obj({ address: str, length: int(0, 128) })(v, at);
  const family = net.isIP(b.address);
  if (family === 0) bad(`${at}.address`, b.address, 'is not an IP address');
  if (b.length > (family === 4 ? 32 : 128)) bad(`${at}.length`, b.length, `is longer than the address (${family === 4 ? 32 : 128} bits)`);
  return b;
};

const strs = arr(stringMatch);
const ips = arr(ipBlock);
const l7Match: Check<L7Match> = obj({
  principals: strs,
  notPrincipals: strs,
  namespaces: strs,
  notNamespaces: strs,
  sourceIps: ips,
  notSourceIps: ips,
  hosts: strs,
  notHosts: strs,
  ports: arr(port),
  notPorts: arr(port),
  methods: strs,
  notMethods: strs,
  paths: strs,
  notPaths: strs,
  headers: arr(obj({ name: headerName, values: strs, notValues: strs })),
});

const l7Target: Check<L7Target> = tagged<L7Target>('kind', {
  Gateway: obj({ kind: lit('Gateway'), namespace: str, name: str }),
  Service: obj({ kind: lit('Service'), namespace: str, service: str }),
});

const l7Rule: Check<L7Rule> = (v, at) => ({
  clauses: obj({ clauses: arr(obj({ matches: arr(l7Match) })) })(v, at).clauses.map((c) => c.matches),
});

const l7Policy: Check<L7Policy> = obj({
  namespace: str,
  name: str,
  action: lit('ALLOW', 'DENY'),
  targets: arr(l7Target),
  rules: arr(l7Rule),
  dryRun: bool,
});

// ---- destination policies (Istio DestinationRule) ----

const uint32 = int(0, 2 ** 32 - 1);
const loadBalancer: Check<LoadBalancer> = tagged<LoadBalancer>('type', {
  ROUND_ROBIN: obj({ type: lit('ROUND_ROBIN') }),
  LEAST_REQUEST: obj({ type: lit('LEAST_REQUEST') }),
  RANDOM: obj({ type: lit('RANDOM') }),
  HASH_HEADER: obj({ type: lit('HASH_HEADER'), name: headerName }),
  HASH_COOKIE: obj({ type: lit('HASH_COOKIE'), name: matching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'is not a cookie name') }),
  HASH_SOURCE_IP: obj({ type: lit('HASH_SOURCE_IP') }),
});
const connectionPool: Check<ConnectionPool> = obj({
  maxConnections: int(1, 2 ** 32 - 1),
  maxPendingRequests: int(1, 2 ** 32 - 1),
  maxRequests: int(1, 2 ** 32 - 1),
  maxRequestsPerConnection: uint32,
  maxRetries: uint32,
});
const outlierDetection: Check<OutlierDetection> = obj({
  consecutive5xxErrors: uint32,
  consecutiveGatewayErrors: uint32,
  intervalMs: int(1, 2 ** 31 - 1),
  baseEjectionMs: int(1, 2 ** 31 - 1),
  maxEjectionPercent: int(0, 100),
});
const trafficPolicy: Check<TrafficPolicy> = obj({
  loadBalancer: opt(loadBalancer),
  connectionPool: opt(connectionPool),
  outlierDetection: opt(outlierDetection),
});
const subset: Check<Subset> = obj({
  name: matching(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'is not a subset name'),
  labels: arr(obj({ key: str, value: str })),
  trafficPolicy: (v, at) => trafficPolicy(v ?? {}, at),
});
const destinationPolicy: Check<DestinationPolicy> = (v, at) => {
  const p = obj({ namespace: str, name: str, service: str, trafficPolicy: (x, a) => trafficPolicy(x ?? {}, a), subsets: arr(subset) })(
    v,
    at,
  );
  const names = new Set<string>();
  p.subsets.forEach((s, i) => {
    if (names.has(s.name)) bad(`${at}.subsets[${i}].name`, s.name, 'names another subset of this rule too');
    names.add(s.name);
  });
  return p;
};

// ---- local rate limits (HTTPLocalRateLimitPolicy) ----

const rps = int(1, 1_000_000);
const accountName = matching(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'is not a service account or namespace name');
const rateLimitPolicy: Check<RateLimitPolicy> = obj({
  namespace: str,
  name: str,
  service: str,
  total: opt(rps),
  identity: opt(rps),
  overrides: arr(obj({ requestsPerSecond: rps, clients: arr(obj({ namespace: accountName, name: accountName }), true) })),
});

/** Decodes and checks one WaypointConfig resource; throws a ResourceError naming the resource and the field. */
export function waypointFromMessage(name: string, m: WaypointConfigMessage): WaypointL7 {
  try {
    if (`${m.namespace}/${m.name}` !== name) bad('namespace/name', `${m.namespace}/${m.name}`, `must equal the resource name`);
    if (m.schema_version !== WAYPOINT_SCHEMA_VERSION)
      bad('schema_version', m.schema_version, `is not ${WAYPOINT_SCHEMA_VERSION}, the one this waypoint reads; run matching versions`);
    const destinations = arr(destinationPolicy)(fromWire(m.destinations ?? []), 'destinations');
    const services = new Set<string>();
    destinations.forEach((d, i) => {
      if (services.has(d.service)) bad(`destinations[${i}].service`, d.service, 'has another destination policy too: one per service');
      services.add(d.service);
    });
    const rateLimits = arr(rateLimitPolicy)(fromWire(m.rate_limits ?? []), 'rate_limits');
    const limited = new Set<string>();
    rateLimits.forEach((p, i) => {
      if (limited.has(p.service)) bad(`rate_limits[${i}].service`, p.service, 'has another rate limit policy too: one per service');
      limited.add(p.service);
    });
    return {
      routes: arr(serviceRoutes)(fromWire(m.routes), 'routes'),
      policies: arr(l7Policy)(fromWire(m.policies), 'policies'),
      destinations,
      rateLimits,
    };
  } catch (err) {
    if (err instanceof FieldError) throw new ResourceError(`${name}: ${err.message}`);
    throw err;
  }
}
