// Gateway API routes (HTTPRoute, GRPCRoute v1 attached to a Service: the
// mesh pattern), Istio's waypoints (a Gateway of class istio-waypoint and
// the istio.io/use-waypoint labels) and Istio AuthorizationPolicies that
// target a waypoint or a service, turned into the waypoint's model
// (src/waypoint/types.ts). As with the rest of the configuration, every
// problem is collected, each naming the object (kind namespace/name), the
// field, the value and the fix, and nothing is applied while one remains.
// Choices (docs/waypoint.md):
// - Only what ambit's waypoint enforces is accepted: an unsupported filter,
//   field or attribute is a problem, never silently dropped, since dropping
//   it would route or allow something else than what was written.
// - Producer routes only: a parentRef names a Service of the route's own
//   namespace, and backendRefs too (ReferenceGrant is not read).
// - Regular expressions are compiled here and refused when they use what
//   RE2 (Envoy's engine) lacks or have a shape that backtracks badly.
// - HTTPRoutes and GRPCRoutes are not merged (Gateway API): when both
//   attach to one service, the kind of the oldest route wins and the
//   others are ignored with a warning.
import { AmbitError } from '../errors';
import { type Service, serviceKey, type Workload } from '../state/types';
import type {
  HeaderModifier,
  PathMatch,
  PathModifier,
  RetryPolicy,
  RouteFilter,
  RouteMatch,
  RouteOrigin,
  RouteRule,
  RouteTimeouts,
  ServiceRoutes,
  ValueMatch,
  Waypoint,
  WaypointConfig,
  WeightedBackend,
} from '../waypoint/types';
import { DEFAULT_RETRY_ON } from '../waypoint/types';
import { DESTINATION_RULE_VERSIONS, destinationRule, onePerService } from './destination-rule';
import { bindings, GATEWAY_GROUP, gateway, type LabelSource, l7Policy } from './istio-waypoint';
import { DNS, type Doc, HEADER_NAME, type Kinds, Known, type Obj, readObject } from './k8s-doc';
import { onePolicyPerService, RATE_LIMIT_VERSIONS, rateLimitPolicy } from './rate-limit-policy';
import { closest, type Report } from './schema';
import { VIRTUAL_SERVICE_VERSIONS, virtualService } from './virtual-service';

const GATEWAY_API = 'gateway.networking.k8s.io/v1';
const KINDS: Kinds = {
  HTTPRoute: [GATEWAY_API],
  GRPCRoute: [GATEWAY_API],
  Gateway: [GATEWAY_API],
  Namespace: ['v1'],
  Service: ['v1'],
  AuthorizationPolicy: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
  DestinationRule: DESTINATION_RULE_VERSIONS,
  HTTPLocalRateLimitPolicy: RATE_LIMIT_VERSIONS,
  VirtualService: VIRTUAL_SERVICE_VERSIONS,
};
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
/** Gateway API Duration (GEP-2257): up to four <1-5 digits><unit> groups. */
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
/** Gateway API's syntax for Exact and PathPrefix values. */
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;
const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;
const MAX_WEIGHT = 1_000_000;

/** Milliseconds of a Gateway API duration, or undefined when it is not one. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v !== 'string' || !DURATION.test(v)) return undefined;
  let ms = 0;
  for (const m of v.matchAll(/([0-9]+)(ms|h|m|s)/g)) ms += Number(m[1]) * (UNIT_MS[m[2] ?? 's'] ?? 0);
  return ms;
}

/** A Service a route refers to, in the route's namespace, with a port of it when `port` is given. */
function serviceRef(d: Doc, known: Known, ref: Obj, rel: string, what: 'parentRef' | 'backendRef'): Service | undefined {
  const group = ref.group ?? (what === 'parentRef' ? GATEWAY_GROUP : '');
  const kind = ref.kind ?? (what === 'parentRef' ? 'Gateway' : 'Service');
  if (kind !== 'Service' || (group !== '' && group !== 'core')) {
    d.problem(
      rel,
      { group, kind },
      `must be a Service (kind: Service, group: ""): ambit's waypoint serves routes attached to services (the mesh pattern)`,
    );
    return undefined;
  }
  const name = d.str(ref, 'name', rel, 'the name of a Service in the namespace of the route');
  const ns = ref.namespace ?? d.namespace;
  if (ns !== d.namespace) {
    d.problem(
      `${rel}.namespace`,
      ns,
      `must be the route's namespace ${d.namespace}: routes and backends across namespaces are not supported; put the route in ${String(ns)}`,
    );
    return undefined;
  }
  if (!name) return undefined;
  const svc = known.byName.get(`${ns}/${name}`);
  if (!svc) d.problem(`${rel}.name`, name, `names no known service (${known.namesIn(d.namespace)})`);
  return svc;
}

function servicePort(d: Doc, svc: Service, v: unknown, rel: string, required: boolean): number | undefined {
  if (v === undefined && !required) return undefined;
  const ports = svc.ports.map((p) => p.port);
  if (typeof v === 'number' && ports.includes(v)) return v;
  d.problem(rel, v, `${required ? 'is required and ' : ''}must be a port of service ${svc.namespace}/${svc.name}: ${ports.join(', ')}`);
  return undefined;
}

interface Attachment {
  service: Service;
  port?: number;
}

function parentRefs(d: Doc, known: Known): Attachment[] {
  const refs = d.list(d.spec, 'parentRefs', 'spec');
  if (refs.length === 0)
    d.problem(
      'spec.parentRefs',
      d.spec.parentRefs,
      'must name the Service the route applies to, e.g. [{ kind: Service, group: "", name: reviews }]',
    );
  const attached = refs.flatMap((r, i): Attachment[] => {
    const rel = `spec.parentRefs[${i}]`;
    const ref = d.obj(r, rel, 'must be a map', ['group', 'kind', 'namespace', 'name', 'sectionName', 'port']);
    if (!ref) return [];
    const service = serviceRef(d, known, ref, rel, 'parentRef');
    if (!service) return [];
    const port = servicePort(d, service, ref.port, `${rel}.port`, false);
    if (ref.sectionName === undefined) return [{ service, port }];
    const section = sectionPort(d, service, ref.sectionName, `${rel}.sectionName`);
    if (section === undefined) return [];
    if (port !== undefined && port !== section.port) {
      d.problem(
        `${rel}.port`,
        ref.port,
        `names another port than sectionName ${section.name} (port ${section.port}) of service ${service.namespace}/${service.name}; keep one of them or make them agree`,
      );
      return [];
    }
    return [{ service, port: section.port }];
  });
  // sectionName and port may name one port twice, or a port of a service the route also takes whole:
  // the rules attach once, or they would stand twice among the port's candidates.
  const whole = new Set(attached.filter((a) => a.port === undefined).map((a) => serviceKey(a.service)));
  const seen = new Set<string>();
  return attached.filter((a) => {
    const k = `${serviceKey(a.service)}|${a.port ?? ''}`;
    if (seen.has(k) || (a.port !== undefined && whole.has(serviceKey(a.service)))) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The service port a parentRef's sectionName names: on a Service parent
 * (the mesh pattern) the section is a port's name, as Istio reads it.
 */
function sectionPort(d: Doc, svc: Service, v: unknown, rel: string): { name: string; port: number } | undefined {
  const named = svc.ports.flatMap((p) => (p.name ? [{ name: p.name, port: p.port }] : []));
  const hit = typeof v === 'string' ? named.find((p) => p.name === v) : undefined;
  if (hit) return hit;
  const id = `service ${svc.namespace}/${svc.name}`;
  if (named.length === 0) {
    d.problem(rel, v, `must be the name of a port of ${id}, whose ports have no names; name the port in the Service, or use port: instead`);
    return undefined;
  }
  const near =
    typeof v === 'string'
      ? closest(
          v,
          named.map((p) => p.name),
        )
      : undefined;
  const names = named.map((p) => `${p.name} (${p.port})`).join(', ');
  d.problem(rel, v, `must be the name of a port of ${id}: ${names}${near ? `; did you mean ${near}?` : ''}`);
  return undefined;
}

// ---- matches ----

function valueMatches(d: Doc, m: Obj, key: 'headers' | 'queryParams', rel: string): ValueMatch[] {
  const seen = new Set<string>();
  return d.list(m, key, rel).flatMap((h, i): ValueMatch[] => {
    const at = `${rel}.${key}[${i}]`;
    const o = d.obj(h, at, 'must be { name, value, type }', ['name', 'value', 'type']);
    if (!o) return [];
    const rawName = d.str(o, 'name', at, key === 'headers' ? 'a header name such as x-version' : 'a query parameter name');
    const value = d.str(o, 'value', at, 'the value to match');
    const type = o.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') d.problem(`${at}.type`, type, 'must be Exact (the default) or RegularExpression');
    if (rawName && key === 'headers' && !HEADER_NAME.test(rawName))
      d.problem(`${at}.name`, rawName, 'must be an HTTP header name (token characters; no ":" pseudo-headers)');
    if (!rawName || value === undefined) return [];
    const name = key === 'headers' ? rawName.toLowerCase() : rawName;
    if (seen.has(name)) {
      d.warn(`${at}.name`, `${rawName} is matched by an earlier entry; Gateway API ignores this one`);
      return [];
    }
    seen.add(name);
    if (type === 'RegularExpression') {
      const regex = d.regex(value, `${at}.value`);
      return regex ? [{ name, type, value, regex }] : [];
    }
    return type === 'Exact' ? [{ name, type, value }] : [];
  });
}

function pathMatch(d: Doc, v: unknown, rel: string): PathMatch | undefined {
  const p = d.obj(v, rel, 'must be { type, value }', ['type', 'value']);
  if (!p) return { type: 'PathPrefix', value: '/' };
  const type = p.type ?? 'PathPrefix';
  const value = p.value ?? '/';
  if (typeof value !== 'string' || value === '' || value.length > 1024) {
    d.problem(`${rel}.value`, value, 'must be a path of 1..1024 characters, e.g. /api');
    return undefined;
  }
  if (type === 'RegularExpression') {
    const regex = d.regex(value, `${rel}.value`);
    return regex ? { type, value, regex } : undefined;
  }
  if (type !== 'Exact' && type !== 'PathPrefix') {
    d.problem(`${rel}.type`, type, 'must be Exact, PathPrefix (the default) or RegularExpression');
    return undefined;
  }
  const bad = !value.startsWith('/')
    ? 'must start with /'
    : value.includes('//')
      ? 'must not contain //'
      : /\/\.\.?(\/|$)/.test(value)
        ? 'must not contain /./ or /../ segments'
        : /%2f/i.test(value)
          ? 'must not contain %2F'
          : !PATH_CHARS.test(value)
            ? 'must only contain URL path characters (percent-encode the others)'
            : undefined;
  if (bad) {
    d.problem(`${rel}.value`, value, bad);
    return undefined;
  }
  return { type, value };
}

function httpMatch(d: Doc, v: unknown, rel: string): RouteMatch | undefined {
  const m = d.obj(v, rel, 'must be a map with path, headers, queryParams, method', ['path', 'headers', 'queryParams', 'method']);
  if (!m) return undefined;
  const before = d.problems;
  const path = pathMatch(d, m.path, `${rel}.path`);
  const headers = valueMatches(d, m, 'headers', rel);
  const queryParams = valueMatches(d, m, 'queryParams', rel);
  if (m.method !== undefined && !METHODS.includes(m.method as string))
    d.problem(`${rel}.method`, m.method, `must be one of ${METHODS.join(', ')}`);
  if (!path || d.problems > before) return undefined;
  return { path, headers, queryParams, ...(m.method === undefined ? {} : { method: m.method as string }) };
}

/** A GRPCRoute match as the HTTP request gRPC sends: POST /<service>/<method>. */
function grpcMatch(d: Doc, v: unknown, rel: string): RouteMatch | undefined {
  const m = d.obj(v, rel, 'must be a map with method and headers', ['method', 'headers']);
  if (!m) return undefined;
  const before = d.problems;
  const headers = valueMatches(d, m, 'headers', rel);
  const at = `${rel}.method`;
  const mm = d.obj(m.method, at, 'must be { type, service, method }', ['type', 'service', 'method']);
  let path: PathMatch = { type: 'PathPrefix', value: '/' };
  if (mm) {
    const type = mm.type ?? 'Exact';
    const svc = d.str(mm, 'service', at, 'a gRPC service such as helloworld.Greeter', true);
    const method = d.str(mm, 'method', at, 'a gRPC method such as SayHello', true);
    if (svc === undefined && method === undefined) d.problem(at, mm, 'needs service, method or both');
    if (type === 'Exact') {
      if (svc !== undefined && !GRPC_SERVICE.test(svc))
        d.problem(`${at}.service`, svc, 'must be a gRPC service name such as helloworld.Greeter');
      if (method !== undefined && !GRPC_METHOD.test(method))
        d.problem(`${at}.method`, method, 'must be a gRPC method name such as SayHello');
      if (d.problems > before) return undefined;
      if (svc !== undefined && method !== undefined) path = { type: 'Exact', value: `/${svc}/${method}` };
      else if (svc !== undefined) path = { type: 'PathPrefix', value: `/${svc}` };
      else if (method !== undefined)
        path = { type: 'RegularExpression', value: `/[^/]+/${method}`, regex: new RegExp(`^/[^/]+/${method}$`) };
    } else if (type === 'RegularExpression') {
      const s = svc === undefined ? '[^/]+' : svc;
      const me = method === undefined ? '[^/]+' : method;
      if (svc !== undefined) d.regex(svc, `${at}.service`);
      if (method !== undefined) d.regex(method, `${at}.method`);
      const regex = d.problems === before ? d.regex(`/(?:${s})/(?:${me})`, at) : undefined;
      if (!regex) return undefined;
      path = { type: 'RegularExpression', value: `/(?:${s})/(?:${me})`, regex };
    } else {
      d.problem(`${at}.type`, type, 'must be Exact (the default) or RegularExpression');
    }
  }
  return d.problems > before ? undefined : { path, headers, queryParams: [], method: 'POST' };
}

// ---- filters ----

function headerModifier(d: Doc, v: unknown, rel: string): HeaderModifier | undefined {
  const o = d.obj(v, rel, 'must be { set, add, remove }', ['set', 'add', 'remove']);
  if (!o) {
    d.problem(rel, v, 'is required for this filter type');
    return undefined;
  }
  const names = new Map<string, string>();
  const claim = (name: string, at: string): boolean => {
    const lower = name.toLowerCase();
    const earlier = names.get(lower);
    if (earlier) d.problem(at, name, `already has an action at ${earlier}; Gateway API allows one action per header name`);
    else if (!HEADER_NAME.test(name)) d.problem(at, name, 'must be an HTTP header name');
    else names.set(lower, at);
    return !earlier && HEADER_NAME.test(name);
  };
  const pairs = (key: 'set' | 'add') =>
    d.list(o, key, rel).flatMap((h, i) => {
      const at = `${rel}.${key}[${i}]`;
      const p = d.obj(h, at, 'must be { name, value }', ['name', 'value']);
      const name = p && d.str(p, 'name', at, 'a header name');
      if (p && typeof p.value !== 'string') d.problem(`${at}.value`, p.value, 'must be a string');
      const value = p && typeof p.value === 'string' ? p.value : undefined;
      return name && value !== undefined && claim(name, `${at}.name`) ? [{ name: name.toLowerCase(), value }] : [];
    });
  const set = pairs('set');
  const add = pairs('add');
  const remove = d
    .strings(o, 'remove', rel)
    .filter((n, i) => claim(n, `${rel}.remove[${i}]`))
    .map((n) => n.toLowerCase());
  return { set, add, remove };
}

function pathModifier(d: Doc, v: unknown, rel: string): PathModifier | undefined {
  const o = d.obj(v, rel, 'must be { type, replaceFullPath | replacePrefixMatch }', ['type', 'replaceFullPath', 'replacePrefixMatch']);
  if (!o) return undefined;
  const field = o.type === 'ReplaceFullPath' ? 'replaceFullPath' : o.type === 'ReplacePrefixMatch' ? 'replacePrefixMatch' : undefined;
  if (!field) {
    d.problem(`${rel}.type`, o.type, 'must be ReplaceFullPath or ReplacePrefixMatch');
    return undefined;
  }
  const other = field === 'replaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (o[other] !== undefined) d.problem(`${rel}.${other}`, o[other], `does not go with type ${o.type as string}`);
  const value = o[field];
  if (typeof value !== 'string' || (value !== '' && !value.startsWith('/'))) {
    d.problem(`${rel}.${field}`, value, 'must be a path starting with /');
    return undefined;
  }
  return { type: o.type as PathModifier['type'], value };
}

const FILTER_FIELDS: Record<string, string> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite',
  RequestMirror: 'requestMirror',
  ExtensionRef: 'extensionRef',
  CORS: 'cors',
  ExternalAuth: 'externalAuth',
};

/** A RequestMirror's backendRef (a Service of the route's namespace and its port) and the share of requests copied. */
function requestMirror(d: Doc, known: Known, v: unknown, at: string): RouteFilter | undefined {
  const f = d.obj(v, at, 'must be { backendRef, percent | fraction }', ['backendRef', 'percent', 'fraction']);
  if (!f) {
    d.problem(at, v, 'is required for this filter type');
    return undefined;
  }
  const ref = d.obj(f.backendRef, `${at}.backendRef`, 'must be { name, port }', ['group', 'kind', 'name', 'namespace', 'port']);
  if (!ref) d.problem(`${at}.backendRef`, f.backendRef, 'is required: the Service copies go to, { name, port }');
  const svc = ref && serviceRef(d, known, ref, `${at}.backendRef`, 'backendRef');
  const port = svc && servicePort(d, svc, ref?.port, `${at}.backendRef.port`, true);
  if (f.percent !== undefined && f.fraction !== undefined) d.problem(`${at}.fraction`, f.fraction, 'cannot go with percent; keep one');
  let percent = 100;
  if (f.percent !== undefined) percent = d.int(f, 'percent', at, 0, 100, 'the share of requests copied') ?? 100;
  const fr = d.obj(f.fraction, `${at}.fraction`, 'must be { numerator, denominator }', ['numerator', 'denominator']);
  if (fr) {
    const num = d.int(fr, 'numerator', `${at}.fraction`, 0, 1_000_000, 'e.g. 1');
    const den = fr.denominator === undefined ? 100 : d.int(fr, 'denominator', `${at}.fraction`, 1, 1_000_000, 'e.g. 100');
    if (num !== undefined && den !== undefined && num > den) d.problem(`${at}.fraction.numerator`, num, 'must not exceed the denominator');
    else if (num !== undefined && den !== undefined) percent = (num / den) * 100;
  }
  return svc && port !== undefined ? { type: 'RequestMirror', backend: { service: serviceKey(svc), port }, percent } : undefined;
}

function filter(d: Doc, known: Known, v: unknown, rel: string, supported: readonly string[]): RouteFilter | undefined {
  const o = d.obj(v, rel, 'must be { type, … }', ['type', ...Object.values(FILTER_FIELDS)]);
  if (!o) return undefined;
  const type = o.type as string;
  const field = FILTER_FIELDS[type];
  if (!field) {
    d.problem(`${rel}.type`, o.type, `must be a Gateway API filter type: ${supported.join(', ')}`);
    return undefined;
  }
  for (const [t, f] of Object.entries(FILTER_FIELDS))
    if (t !== type && o[f] !== undefined)
      d.problem(`${rel}.${f}`, o[f], `does not go with type ${type}; use type ${t} in a filter of its own`);
  if (!supported.includes(type)) {
    d.problem(`${rel}.type`, type, `is not supported by ambit's waypoint; supported: ${supported.join(', ')}`);
    return undefined;
  }
  const at = `${rel}.${field}`;
  if (type === 'RequestMirror') return requestMirror(d, known, o[field], at);
  if (type === 'RequestHeaderModifier' || type === 'ResponseHeaderModifier') {
    const modifier = headerModifier(d, o[field], at);
    return modifier ? { type, modifier } : undefined;
  }
  const f = d.obj(
    o[field],
    at,
    'must be a map',
    type === 'URLRewrite' ? ['hostname', 'path'] : ['scheme', 'hostname', 'path', 'port', 'statusCode'],
  );
  if (!f) {
    d.problem(at, o[field], 'is required for this filter type');
    return undefined;
  }
  const hostname = f.hostname === undefined ? undefined : d.str(f, 'hostname', at, 'a host name such as reviews.default.svc.cluster.local');
  if (hostname && !DNS.test(hostname)) d.problem(`${at}.hostname`, hostname, 'must be a lower-case DNS name without port');
  const path = f.path === undefined ? undefined : pathModifier(d, f.path, `${at}.path`);
  const common = { ...(hostname ? { hostname } : {}), ...(path ? { path } : {}) };
  if (type === 'URLRewrite') return { type, ...common };
  if (f.scheme !== undefined && f.scheme !== 'http' && f.scheme !== 'https') d.problem(`${at}.scheme`, f.scheme, 'must be http or https');
  const port = d.int(f, 'port', at, 1, 65535, 'the port for the Location header');
  const statusCode = f.statusCode ?? 302;
  if (![301, 302, 303, 307, 308].includes(statusCode as number))
    d.problem(`${at}.statusCode`, statusCode, 'must be 301, 302 (the default), 303, 307 or 308');
  return {
    type: 'RequestRedirect',
    ...common,
    ...(f.scheme === 'http' || f.scheme === 'https' ? { scheme: f.scheme } : {}),
    ...(port === undefined ? {} : { port }),
    statusCode: statusCode as 301 | 302 | 303 | 307 | 308,
  };
}

// ---- rules ----

function backends(d: Doc, known: Known, rule: Obj, rel: string): WeightedBackend[] {
  const list = d.list(rule, 'backendRefs', rel).flatMap((b, i) => {
    const at = `${rel}.backendRefs[${i}]`;
    const o = d.obj(b, at, 'must be { name, port, weight }', ['group', 'kind', 'name', 'namespace', 'port', 'weight', 'filters']);
    if (!o) return [];
    if (o.filters !== undefined) d.problem(`${at}.filters`, o.filters, 'per-backend filters are not supported; put the filter on the rule');
    const weight = o.weight === undefined ? 1 : d.int(o, 'weight', at, 0, MAX_WEIGHT, 'a relative share such as 90 (0 sends nothing)');
    const svc = serviceRef(d, known, o, at, 'backendRef');
    const port = svc && servicePort(d, svc, o.port, `${at}.port`, true);
    return svc && port !== undefined && weight !== undefined
      ? [{ namespace: svc.namespace, name: svc.name, service: serviceKey(svc), port, weight }]
      : [];
  });
  if (list.length > 0 && list.every((b) => b.weight === 0))
    d.problem(
      `${rel}.backendRefs`,
      list.map((b) => b.weight),
      'weights are all 0, so no request could be sent anywhere; give at least one backend a weight above 0',
    );
  return list;
}

function timeouts(d: Doc, v: unknown, rel: string): RouteTimeouts {
  const o = d.obj(v, rel, 'must be { request, backendRequest }', ['request', 'backendRequest']);
  if (!o) return {};
  const dur = (key: 'request' | 'backendRequest'): number | undefined => {
    if (o[key] === undefined) return undefined;
    const ms = parseDuration(o[key]);
    if (ms === undefined)
      d.problem(`${rel}.${key}`, o[key], 'must be a Gateway API duration such as 10s, 500ms or 1m30s (units h, m, s, ms)');
    return ms;
  };
  const requestMs = dur('request');
  const backendRequestMs = dur('backendRequest');
  if (
    requestMs !== undefined &&
    requestMs !== 0 &&
    backendRequestMs !== undefined &&
    (backendRequestMs === 0 || backendRequestMs > requestMs)
  )
    d.problem(
      `${rel}.backendRequest`,
      o.backendRequest,
      `must not be longer than request (${String(o.request)}): one attempt cannot outlive the whole request`,
    );
  return { ...(requestMs === undefined ? {} : { requestMs }), ...(backendRequestMs === undefined ? {} : { backendRequestMs }) };
}

function retry(d: Doc, v: unknown, rel: string): RetryPolicy | undefined {
  const o = d.obj(v, rel, 'must be { attempts, codes, backoff }', ['attempts', 'codes', 'backoff']);
  if (!o) return undefined;
  const attempts = d.int(o, 'attempts', rel, 0, 100, 'retries after the first attempt (0 disables retrying)') ?? 2;
  const codes = d.list(o, 'codes', rel).flatMap((c, i) => {
    if (typeof c === 'number' && Number.isInteger(c) && c >= 400 && c <= 599) return [c];
    d.problem(`${rel}.codes[${i}]`, c, 'must be an HTTP status 400..599, e.g. 503');
    return [];
  });
  const base = o.backoff === undefined ? 25 : parseDuration(o.backoff);
  if (base === undefined) d.problem(`${rel}.backoff`, o.backoff, 'must be a Gateway API duration such as 25ms or 1s');
  const backoffBaseMs = base ?? 25;
  return {
    attempts,
    on: codes.length > 0 ? [...DEFAULT_RETRY_ON, 'retriable-status-codes'] : DEFAULT_RETRY_ON,
    codes,
    backoffBaseMs,
    backoffMaxMs: backoffBaseMs * 10,
  };
}

const HTTP_RULE = ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry', 'sessionPersistence'];
const GRPC_RULE = ['name', 'matches', 'filters', 'backendRefs', 'sessionPersistence'];
const HTTP_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror'];
const GRPC_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier'];

function rule(d: Doc, known: Known, v: unknown, index: number, origin: RouteOrigin): RouteRule | undefined {
  const rel = `spec.rules[${index}]`;
  const grpc = origin.kind === 'GRPCRoute';
  const r = d.obj(v ?? {}, rel, 'must be a map with matches, filters and backendRefs', grpc ? GRPC_RULE : HTTP_RULE);
  if (!r) return undefined;
  if (r.sessionPersistence !== undefined)
    d.problem(`${rel}.sessionPersistence`, r.sessionPersistence, "is not supported by ambit's waypoint");
  const rawMatches = d.list(r, 'matches', rel);
  const matches =
    rawMatches.length === 0
      ? [
          grpc
            ? { path: { type: 'PathPrefix', value: '/' } as PathMatch, headers: [], queryParams: [], method: 'POST' }
            : { path: { type: 'PathPrefix', value: '/' } as PathMatch, headers: [], queryParams: [] },
        ]
      : rawMatches.flatMap((m, i) => (grpc ? grpcMatch(d, m, `${rel}.matches[${i}]`) : httpMatch(d, m, `${rel}.matches[${i}]`)) ?? []);
  const filters = d
    .list(r, 'filters', rel)
    .flatMap((f, i) => filter(d, known, f, `${rel}.filters[${i}]`, grpc ? GRPC_FILTERS : HTTP_FILTERS) ?? []);
  const seen = new Set<string>();
  for (const [i, f] of filters.entries()) {
    // Gateway API allows several mirrors; each other filter once.
    if (seen.has(f.type) && f.type !== 'RequestMirror')
      d.problem(`${rel}.filters[${i}].type`, f.type, 'appears twice in the rule; Gateway API allows each of these filters once');
    seen.add(f.type);
  }
  const redirect = seen.has('RequestRedirect');
  if (redirect && seen.has('URLRewrite'))
    d.problem(`${rel}.filters`, [...seen], 'RequestRedirect and URLRewrite cannot be combined in one rule');
  for (const f of filters) {
    const prefixRewrite = (f.type === 'URLRewrite' || f.type === 'RequestRedirect') && f.path?.type === 'ReplacePrefixMatch';
    if (prefixRewrite && (matches.length !== 1 || matches[0]?.path.type !== 'PathPrefix'))
      d.problem(`${rel}.matches`, r.matches, 'ReplacePrefixMatch needs exactly one match, of type PathPrefix');
  }
  const list = backends(d, known, r, rel);
  if (redirect && list.length > 0)
    d.problem(`${rel}.backendRefs`, r.backendRefs, 'a rule with a RequestRedirect filter answers itself and takes no backendRefs');
  if (!redirect && d.list(r, 'backendRefs', rel).length === 0)
    d.problem(`${rel}.backendRefs`, r.backendRefs, 'needs at least one backend (a Service and port), or a RequestRedirect filter');
  const t = grpc ? {} : timeouts(d, r.timeouts, `${rel}.timeouts`);
  const rp = grpc ? undefined : retry(d, r.retry, `${rel}.retry`);
  return { origin, index, matches, filters, backends: list, timeouts: t, ...(rp ? { retry: rp } : {}) };
}

interface ParsedRoute {
  origin: RouteOrigin;
  attachments: readonly Attachment[];
  rules: RouteRule[];
  label: string;
}

function route(d: Doc, known: Known): ParsedRoute | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', ['parentRefs', 'hostnames', 'rules']) ?? {};
  const origin: RouteOrigin = {
    kind: d.kind as RouteOrigin['kind'],
    namespace: d.namespace,
    name: d.name,
    created: d.created,
    order: d.order,
  };
  const attachments = parentRefs(d, known);
  if (spec.hostnames !== undefined)
    d.warn('spec.hostnames', 'ignored: a route attached to a Service applies to the requests addressed to that service');
  const raw = d.list(spec, 'rules', 'spec');
  if (raw.length === 0) d.problem('spec.rules', spec.rules, 'needs at least one rule with backendRefs');
  const rules = raw.flatMap((r, i) => rule(d, known, r, i, origin) ?? []);
  return d.problems === 0 ? { origin, attachments, rules, label: d.label } : undefined;
}

const olderFirst = (a: RouteOrigin, b: RouteOrigin): number =>
  (a.created === b.created ? 0 : a.created === '' ? 1 : b.created === '' ? -1 : a.created < b.created ? -1 : 1) ||
  (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : `${a.namespace}/${a.name}` > `${b.namespace}/${b.name}` ? 1 : 0) ||
  a.order - b.order;

const matchKey = (m: RouteMatch): string =>
  JSON.stringify([
    m.path.type,
    m.path.value,
    m.method ?? '',
    m.headers.map((h) => [h.name, h.type, h.value]).sort(),
    m.queryParams.map((q) => [q.name, q.type, q.value]).sort(),
  ]);

/** Groups the rules per service (and port), one route kind per service, warning on matches that can never win. */
function attach(parsed: ParsedRoute[], warnings: string[]): ServiceRoutes[] {
  const perService = new Map<string, ParsedRoute[]>();
  for (const p of parsed)
    for (const a of p.attachments) perService.set(serviceKey(a.service), [...(perService.get(serviceKey(a.service)) ?? []), p]);
  const out: ServiceRoutes[] = [];
  for (const [service, all] of perService) {
    // A VirtualService and Gateway API routes are not merged either (Istio advises against mixing them): the Gateway API routes win.
    const gatewayApi = all.some((r) => r.origin.kind !== 'VirtualService');
    const routes = gatewayApi ? all.filter((r) => r.origin.kind !== 'VirtualService') : all;
    if (gatewayApi)
      for (const r of new Set(all))
        if (r.origin.kind === 'VirtualService')
          warnings.push(
            `${r.label}: ignored for service ${service}: HTTPRoutes or GRPCRoutes attach to it, and they take precedence over a VirtualService; ` +
              'route the service with one of the two',
          );
    const oldest = [...routes].sort((a, b) => olderFirst(a.origin, b.origin))[0];
    const kind = oldest?.origin.kind;
    for (const r of new Set(routes))
      if (r.origin.kind !== kind)
        warnings.push(
          `${r.label}: ignored for service ${service}: the older ${kind} ${oldest?.origin.namespace}/${oldest?.origin.name} attaches to it, ` +
            'and Gateway API does not merge HTTPRoutes and GRPCRoutes',
        );
    const groups = new Map<number | undefined, RouteRule[]>();
    for (const r of new Set(routes)) {
      if (r.origin.kind !== kind) continue;
      for (const a of r.attachments) if (serviceKey(a.service) === service) groups.set(a.port, [...(groups.get(a.port) ?? []), ...r.rules]);
    }
    for (const [port, rules] of groups) out.push({ service, ...(port === undefined ? {} : { port }), rules });
    overlapping(service, groups, warnings);
  }
  return out;
}

function overlapping(service: string, groups: Map<number | undefined, RouteRule[]>, warnings: string[]): void {
  const whole = groups.get(undefined) ?? [];
  const sets =
    groups.size === 1 && groups.has(undefined)
      ? [whole]
      : [...groups].filter(([p]) => p !== undefined).map(([, rules]) => [...whole, ...rules]);
  if (sets.length === 0) sets.push(whole);
  const said = new Set<string>();
  for (const rules of sets) {
    const first = new Map<string, { rule: RouteRule; i: number }>();
    const all = rules.flatMap((rule) => rule.matches.map((m, i) => ({ rule, m, i })));
    all.sort((a, b) => olderFirst(a.rule.origin, b.rule.origin) || a.rule.index - b.rule.index || a.i - b.i);
    for (const { rule, m, i } of all) {
      const k = matchKey(m);
      const earlier = first.get(k);
      if (!earlier) {
        first.set(k, { rule, i });
        continue;
      }
      const o = rule.origin;
      const e = earlier.rule.origin;
      const text =
        `${o.kind} ${o.namespace}/${o.name} spec.rules[${rule.index}].matches[${i}]: never used for service ${service}: ` +
        `identical to ${e.kind} ${e.namespace}/${e.name} spec.rules[${earlier.rule.index}].matches[${earlier.i}], which takes precedence`;
      if (!said.has(text)) warnings.push(text);
      said.add(text);
    }
  }
}

// ---- the whole set ----

export interface GatewayApiOptions {
  /** Path prefix of the documents in problems, e.g. "routes" (routes[3] …). */
  at?: string;
}

/**
 * Converts the documents to the waypoint's model, reporting every problem
 * through `problem`. `known` is the mesh model the documents refer to.
 */
export function compileWaypointConfig(
  docs: readonly unknown[],
  known: { services: readonly Service[]; workloads: readonly Workload[] },
  opts: GatewayApiOptions,
  problem: Report,
): WaypointConfig {
  const prefix = opts.at ?? 'routes';
  const warnings: string[] = [];
  const svc = new Known(known.services);
  const parsed = docs.flatMap((raw, i) => readObject(raw, `${prefix}[${i}]`, i, KINDS, problem, warnings) ?? []);
  const ids = new Map<string, string>();
  const unique = parsed.filter((d) => {
    const id = `${d.kind} ${d.namespace}/${d.name}`;
    const earlier = ids.get(id);
    if (earlier) d.problem('metadata.name', d.name, `duplicates ${earlier}; names must be unique per kind and namespace`);
    else ids.set(id, d.at);
    return !earlier;
  });
  const waypoints = new Map<string, Waypoint>();
  for (const d of unique.filter((x) => x.kind === 'Gateway')) {
    const w = gateway(d);
    if (w) waypoints.set(`${w.namespace}/${w.name}`, w);
  }
  const label = (d: Doc): LabelSource => ({ at: `${d.label} metadata.labels`, labels: d.labels, namespace: d.namespace });
  const namespaces = new Map(unique.filter((d) => d.kind === 'Namespace').map((d) => [d.name, label(d)] as const));
  const services = new Map<string, LabelSource>();
  for (const d of unique.filter((x) => x.kind === 'Service')) {
    if (!svc.byName.has(`${d.namespace}/${d.name}`))
      d.problem('metadata.name', d.name, `names no known service (${svc.namesIn(d.namespace)})`);
    else services.set(`${d.namespace}/${d.name}`, label(d));
  }
  const routes = unique.flatMap((d) =>
    d.kind === 'HTTPRoute' || d.kind === 'GRPCRoute'
      ? (route(d, svc) ?? [])
      : d.kind === 'VirtualService'
        ? (virtualService(d, svc) ?? [])
        : [],
  );
  const policies = unique
    .filter((d) => d.kind === 'AuthorizationPolicy')
    .flatMap((d) => {
      const p = l7Policy(d, svc, waypoints);
      return p && d.problems === 0 ? [p] : [];
    });
  const destinations = onePerService(
    unique
      .filter((d) => d.kind === 'DestinationRule')
      .flatMap((doc) => {
        const policy = destinationRule(doc, svc);
        return policy && doc.problems === 0 ? [{ policy, doc }] : [];
      }),
  );
  const rateLimits = onePolicyPerService(
    unique
      .filter((d) => d.kind === 'HTTPLocalRateLimitPolicy')
      .flatMap((doc) => {
        const policy = rateLimitPolicy(doc, svc);
        return policy ? [{ policy, doc }] : [];
      }),
  );
  return {
    routes: attach(routes, warnings),
    waypoints: [...waypoints.values()],
    bindings: bindings(waypoints, namespaces, services, known, problem, warnings),
    policies,
    destinations,
    rateLimits,
    warnings,
  };
}

/** Problems listed in one error; the count of the rest follows. */
const MAX_LISTED = 100;

/** compileWaypointConfig, throwing AMBIT_E_CONFIG with every problem when there is one. */
export function parseWaypointConfig(
  docs: readonly unknown[],
  known: { services: readonly Service[]; workloads: readonly Workload[] },
  source = 'routes',
): WaypointConfig {
  const problems: string[] = [];
  const cfg = compileWaypointConfig(docs, known, { at: source }, (at, value, what) => {
    let got: string;
    try {
      got = JSON.stringify(value) ?? 'nothing';
    } catch {
      got = 'a value that cannot be shown';
    }
    problems.push(`${at}: ${what} (got ${got.length > 120 ? `${got.slice(0, 120)}…` : got})`);
  });
  if (problems.length > 0) {
    const shown = problems.slice(0, MAX_LISTED);
    if (problems.length > MAX_LISTED) shown.push(`… and ${problems.length - MAX_LISTED} more`);
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `${source} is invalid:\n  - ${shown.join('\n  - ')}`,
      'fix the fields named above; nothing was applied',
    );
  }
  return cfg;
}
