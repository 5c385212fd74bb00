// Istio's VirtualService (networking.istio.io/v1) `http` routes for
// services behind a waypoint, read into the same rules as an HTTPRoute
// (src/waypoint/types.ts): hosts name the services, matches on uri, method,
// headers and queryParams, weighted destinations (subsets of a
// DestinationRule), timeout, retries, fault injection and mirrors. Rules
// keep their written order (Istio: the first match wins; match.ts).
// Choices:
// - What the waypoint does not do (redirects, rewrites, CORS, delegation,
//   gateways, TCP/TLS routes, source matches) is a problem naming the
//   field rather than dropped: the route would do something else than
//   what was written.
// - A service with both Gateway API routes and a VirtualService takes the
//   Gateway API routes and ignores the VirtualService with a warning
//   (Istio advises against mixing them; gateway-api.ts attach).
import { type Service, serviceKey } from '../state/types';
import type {
  FaultInjection,
  MirrorBackend,
  PathMatch,
  RetryCondition,
  RetryPolicy,
  RouteFilter,
  RouteMatch,
  RouteOrigin,
  RouteRule,
  ValueMatch,
  WeightedBackend,
} from '../waypoint/types';
import { RETRY_CONDITIONS } from '../waypoint/types';
import { istioDuration } from './destination-rule';
import { type Doc, HEADER_NAME, type Known, type Obj } from './k8s-doc';

export const VIRTUAL_SERVICE_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'];

const NOT_SUPPORTED = "is not supported by ambit's waypoint; remove it";
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];

const SPEC = ['hosts', 'gateways', 'http', 'tcp', 'tls', 'exportTo'];
const HTTP = [
  'name',
  'match',
  'route',
  'timeout',
  'retries',
  'fault',
  'mirror',
  'mirrorPercentage',
  'mirrors',
  'redirect',
  'directResponse',
  'delegate',
  'rewrite',
  'corsPolicy',
  'headers',
  'mirrorPercent',
];
const MATCH = [
  'name',
  'uri',
  'method',
  'headers',
  'queryParams',
  'scheme',
  'authority',
  'port',
  'sourceLabels',
  'gateways',
  'ignoreUriCase',
  'withoutHeaders',
  'sourceNamespace',
  'statPrefix',
];
const ROUTE = ['destination', 'weight', 'headers'];
const DESTINATION = ['host', 'subset', 'port'];
const RETRIES = ['attempts', 'perTryTimeout', 'retryOn', 'retryRemoteLocalities', 'retryIgnorePreviousHosts', 'backoff'];

/** What a VirtualService attaches to: the services its hosts name, every port of each. */
export interface VirtualServiceRoute {
  origin: RouteOrigin;
  attachments: { service: Service }[];
  rules: RouteRule[];
  label: string;
}

function unsupported(d: Doc, o: Obj, rel: string, keys: readonly string[]): void {
  for (const k of keys) if (o[k] !== undefined) d.problem(`${rel}.${k}`, o[k], NOT_SUPPORTED);
}

/** The service a host names: its hostname, or a short name in the object's namespace (as Istio resolves it). */
function hostService(d: Doc, known: Known, host: string): Service | undefined {
  if (!host.includes('.')) return known.byName.get(`${d.namespace}/${host}`);
  return known.services.find((s) => s.hostname === host);
}

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Istio's StringMatch { exact | prefix | regex } as a ValueMatch; a prefix becomes an anchored regular expression. */
function stringMatch(d: Doc, name: string, v: unknown, rel: string): ValueMatch | undefined {
  const o = d.obj(v, rel, 'must be one of { exact }, { prefix }, { regex }', ['exact', 'prefix', 'regex']);
  if (!o) {
    if (v === undefined || v === null) d.problem(rel, v, 'must be one of { exact }, { prefix }, { regex }');
    return undefined;
  }
  const set = Object.keys(o);
  if (set.length !== 1 || typeof o[set[0] ?? ''] !== 'string') {
    d.problem(rel, v, 'must set exactly one of exact, prefix, regex, to a string');
    return undefined;
  }
  if (typeof o.exact === 'string') return { name, type: 'Exact', value: o.exact };
  const value = typeof o.prefix === 'string' ? `${escapeRegex(o.prefix)}.*` : String(o.regex);
  const regex = d.regex(value, typeof o.prefix === 'string' ? `${rel}.prefix` : `${rel}.regex`);
  return regex ? { name, type: 'RegularExpression', value, regex } : undefined;
}

function uriMatch(d: Doc, v: unknown, rel: string): PathMatch | undefined {
  if (v === undefined) return { type: 'PathPrefix', value: '/' };
  const m = stringMatch(d, '', v, rel);
  if (!m) return undefined;
  const o = v as Obj;
  if (typeof o.prefix === 'string') {
    if (!o.prefix.startsWith('/')) d.problem(`${rel}.prefix`, o.prefix, 'must start with /, e.g. /api');
    return { type: 'Prefix', value: o.prefix };
  }
  if (m.type === 'Exact' && !m.value.startsWith('/')) d.problem(`${rel}.exact`, m.value, 'must start with /, e.g. /api/v1');
  return m.type === 'Exact' ? { type: 'Exact', value: m.value } : { type: 'RegularExpression', value: m.value, regex: m.regex };
}

function valueMap(d: Doc, v: unknown, rel: string, header: boolean): ValueMatch[] {
  const o = d.obj(v, rel, header ? 'must be a map of header name to { exact | prefix | regex }' : 'must be a map of name to a match');
  if (!o) return [];
  return Object.entries(o).flatMap(([k, m]) => {
    if (header && !HEADER_NAME.test(k)) {
      d.problem(`${rel}.${k}`, k, 'must be an HTTP header name (token characters; no ":" pseudo-headers)');
      return [];
    }
    return stringMatch(d, header ? k.toLowerCase() : k, m, `${rel}.${k}`) ?? [];
  });
}

function match(d: Doc, v: unknown, rel: string): RouteMatch | undefined {
  const m = d.obj(v, rel, 'must be a map with uri, method, headers, queryParams', MATCH);
  if (!m) return undefined;
  const before = d.problems;
  unsupported(d, m, rel, ['scheme', 'authority', 'port', 'sourceLabels', 'gateways', 'ignoreUriCase', 'withoutHeaders', 'sourceNamespace']);
  const path = uriMatch(d, m.uri, `${rel}.uri`);
  const headers = valueMap(d, m.headers, `${rel}.headers`, true);
  const queryParams = valueMap(d, m.queryParams, `${rel}.queryParams`, false);
  let method: string | undefined;
  if (m.method !== undefined) {
    const mm = d.obj(m.method, `${rel}.method`, 'must be { exact: GET }', ['exact', 'prefix', 'regex']);
    if (mm && typeof mm.exact === 'string' && METHODS.includes(mm.exact) && Object.keys(mm).length === 1) method = mm.exact;
    else d.problem(`${rel}.method`, m.method, `must be { exact: <method> }, one of ${METHODS.join(', ')}`);
  }
  if (!path || d.problems > before) return undefined;
  return { path, headers, queryParams, ...(method === undefined ? {} : { method }) };
}

/** A destination { host, subset, port: { number } }: a known service, and one of its ports (required when it has several). */
function destination(d: Doc, known: Known, v: unknown, rel: string): MirrorBackend | undefined {
  const o = d.obj(v, rel, 'must be { host, subset, port: { number } }', DESTINATION);
  if (!o) {
    d.problem(rel, v, 'is required: { host, subset, port: { number } }');
    return undefined;
  }
  const host = d.str(o, 'host', rel, 'a service, e.g. reviews or reviews.default.svc.cluster.local');
  const subset = d.str(o, 'subset', rel, 'the name of a subset of the DestinationRule of the host', true);
  if (!host) return undefined;
  const svc = hostService(d, known, host);
  if (!svc) {
    d.problem(`${rel}.host`, host, `names no known service (${known.namesIn(d.namespace)})`);
    return undefined;
  }
  const ports = svc.ports.map((p) => p.port);
  const p = d.obj(o.port, `${rel}.port`, 'must be { number }', ['number']);
  const number = p?.number;
  let port: number | undefined;
  if (number === undefined && ports.length === 1) port = ports[0];
  else if (typeof number === 'number' && ports.includes(number)) port = number;
  else
    d.problem(
      `${rel}.port.number`,
      number,
      `${number === undefined ? 'is required (the service has several ports) and ' : ''}must be a port of service ${svc.namespace}/${svc.name}: ${ports.join(', ')}`,
    );
  return port === undefined ? undefined : { service: serviceKey(svc), port, ...(subset ? { subset } : {}) };
}

function routes(d: Doc, known: Known, r: Obj, rel: string): WeightedBackend[] {
  const raw = d.list(r, 'route', rel);
  const weighted = raw.some((x) => (x as Obj | null)?.weight !== undefined);
  const list = raw.flatMap((x, i): WeightedBackend[] => {
    const at = `${rel}.route[${i}]`;
    const o = d.obj(x, at, 'must be { destination, weight }', ROUTE);
    if (!o) return [];
    unsupported(d, o, at, ['headers']);
    // Istio: with one destination the weight is 100; with several, an absent weight is 0 once any is given.
    const weight = o.weight === undefined ? (weighted ? 0 : 1) : d.int(o, 'weight', at, 0, 100, 'a percentage such as 90');
    const dest = destination(d, known, o.destination, `${at}.destination`);
    if (!dest || weight === undefined) return [];
    const [namespace = '', name = ''] = dest.service.split('/');
    const svc = known.services.find((s) => serviceKey(s) === dest.service);
    return [{ namespace, name: svc?.name ?? name, ...dest, weight }];
  });
  if (raw.length === 0) d.problem(`${rel}.route`, r.route, 'needs at least one destination { host, port }');
  if (list.length > 0 && list.every((b) => b.weight === 0))
    d.problem(
      `${rel}.route`,
      list.map((b) => b.weight),
      'weights are all 0; give at least one destination a weight above 0',
    );
  return list;
}

/** A percentage { value: 0..100 } (fractions allowed); absent: every request. */
function percentage(d: Doc, v: unknown, rel: string): number | undefined {
  if (v === undefined) return 100;
  const o = d.obj(v, rel, 'must be { value: <0..100> }', ['value']);
  const n = o?.value;
  if (typeof n === 'number' && n >= 0 && n <= 100) return n;
  d.problem(`${rel}.value`, n, 'must be a number 0..100, e.g. 50 or 0.1');
  return undefined;
}

function fault(d: Doc, v: unknown, rel: string): FaultInjection | undefined {
  const o = d.obj(v, rel, 'must be { delay, abort }', ['delay', 'abort']);
  if (!o) return undefined;
  const out: FaultInjection = {};
  const delay = d.obj(o.delay, `${rel}.delay`, 'must be { fixedDelay, percentage }', [
    'fixedDelay',
    'percentage',
    'percent',
    'exponentialDelay',
  ]);
  if (delay) {
    const at = `${rel}.delay`;
    unsupported(d, delay, at, ['exponentialDelay']);
    if (delay.percent !== undefined) d.problem(`${at}.percent`, delay.percent, 'is deprecated in Istio; use percentage: { value }');
    const ms = istioDuration(delay.fixedDelay);
    if (ms === undefined) d.problem(`${at}.fixedDelay`, delay.fixedDelay, 'is required: a duration such as 5s or 100ms');
    const percent = percentage(d, delay.percentage, `${at}.percentage`);
    if (ms !== undefined && percent !== undefined) out.delay = { ms, percent };
  }
  const abort = d.obj(o.abort, `${rel}.abort`, 'must be { httpStatus, percentage }', [
    'httpStatus',
    'percentage',
    'grpcStatus',
    'http2Error',
  ]);
  if (abort) {
    const at = `${rel}.abort`;
    unsupported(d, abort, at, ['grpcStatus', 'http2Error']);
    const status = d.int(abort, 'httpStatus', at, 200, 599, 'the status to answer, e.g. 503');
    if (abort.httpStatus === undefined) d.problem(`${at}.httpStatus`, undefined, 'is required: the status to answer, e.g. 503');
    const percent = percentage(d, abort.percentage, `${at}.percentage`);
    if (status !== undefined && percent !== undefined) out.abort = { status, percent };
  }
  if (!delay && !abort) d.problem(rel, v, 'needs delay, abort or both');
  return out;
}

function mirrors(d: Doc, known: Known, r: Obj, rel: string): RouteFilter[] {
  if (r.mirrorPercent !== undefined)
    d.problem(`${rel}.mirrorPercent`, r.mirrorPercent, 'is deprecated in Istio; use mirrorPercentage: { value }');
  if (r.mirror !== undefined && r.mirrors !== undefined)
    d.problem(`${rel}.mirrors`, r.mirrors, 'cannot go with mirror; list every mirror under mirrors');
  if (r.mirrorPercentage !== undefined && r.mirror === undefined)
    d.problem(`${rel}.mirrorPercentage`, r.mirrorPercentage, 'goes with mirror; under mirrors, give each its percentage');
  const one = (dest: unknown, pct: unknown, at: string, pctAt: string): RouteFilter[] => {
    const backend = destination(d, known, dest, at);
    const percent = percentage(d, pct, pctAt);
    return backend && percent !== undefined ? [{ type: 'RequestMirror', backend, percent }] : [];
  };
  if (r.mirror !== undefined) return one(r.mirror, r.mirrorPercentage, `${rel}.mirror`, `${rel}.mirrorPercentage`);
  return d.list(r, 'mirrors', rel).flatMap((m, i) => {
    const at = `${rel}.mirrors[${i}]`;
    const o = d.obj(m, at, 'must be { destination, percentage }', ['destination', 'percentage']);
    return o ? one(o.destination, o.percentage, `${at}.destination`, `${at}.percentage`) : [];
  });
}

/** Envoy's retry_on conditions as the waypoint's: 5xx and gateway-error become status codes. */
function retries(d: Doc, v: unknown, rel: string): { retry?: RetryPolicy; perTryMs?: number } {
  const o = d.obj(v, rel, 'must be { attempts, perTryTimeout, retryOn }', RETRIES);
  if (!o) return {};
  unsupported(d, o, rel, ['retryRemoteLocalities', 'retryIgnorePreviousHosts']);
  const attempts = d.int(o, 'attempts', rel, 0, 100, 'retries after the first attempt (0 disables retrying)') ?? 2;
  const perTryMs = o.perTryTimeout === undefined ? undefined : istioDuration(o.perTryTimeout);
  if (o.perTryTimeout !== undefined && perTryMs === undefined)
    d.problem(`${rel}.perTryTimeout`, o.perTryTimeout, 'must be a duration such as 2s or 500ms');
  const base = o.backoff === undefined ? 25 : istioDuration(o.backoff);
  if (base === undefined) d.problem(`${rel}.backoff`, o.backoff, 'must be a duration such as 25ms');
  const on = new Set<RetryCondition>();
  const codes = new Set<number>();
  const raw = o.retryOn === undefined ? 'connect-failure,refused-stream,unavailable,cancelled,503' : o.retryOn;
  if (typeof raw !== 'string') d.problem(`${rel}.retryOn`, raw, 'must be a comma-separated list such as 5xx,connect-failure');
  const known: readonly string[] = ['5xx', 'gateway-error', ...RETRY_CONDITIONS];
  for (const c of typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : []) {
    if (/^[45][0-9][0-9]$/.test(c)) codes.add(Number(c));
    else if (c === '5xx') {
      for (let s = 500; s <= 599; s++) codes.add(s);
      on.add('connect-failure').add('reset').add('refused-stream');
    } else if (c === 'gateway-error') {
      for (const s of [502, 503, 504]) codes.add(s);
      on.add('connect-failure');
    } else if (known.includes(c)) on.add(c as RetryCondition);
    else d.problem(`${rel}.retryOn`, c, `is not a retry condition ambit's waypoint knows: ${known.join(', ')} or a status such as 503`);
  }
  if (codes.size > 0) on.add('retriable-status-codes');
  const backoffBaseMs = base ?? 25;
  return {
    retry: { attempts, on: [...on], codes: [...codes], backoffBaseMs, backoffMaxMs: backoffBaseMs * 10 },
    ...(perTryMs === undefined ? {} : { perTryMs }),
  };
}

function httpRule(d: Doc, known: Known, v: unknown, index: number, origin: RouteOrigin): RouteRule | undefined {
  const rel = `spec.http[${index}]`;
  const r = d.obj(v ?? {}, rel, 'must be a map with match, route, timeout, retries, fault, mirror', HTTP);
  if (!r) return undefined;
  unsupported(d, r, rel, ['redirect', 'directResponse', 'delegate', 'rewrite', 'corsPolicy', 'headers']);
  const raw = d.list(r, 'match', rel);
  const matches: RouteMatch[] =
    raw.length === 0
      ? [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] }]
      : raw.flatMap((m, i) => match(d, m, `${rel}.match[${i}]`) ?? []);
  const backends = routes(d, known, r, rel);
  const requestMs = r.timeout === undefined ? undefined : istioDuration(r.timeout);
  if (r.timeout !== undefined && requestMs === undefined) d.problem(`${rel}.timeout`, r.timeout, 'must be a duration such as 10s or 500ms');
  const { retry, perTryMs } = retries(d, r.retries, `${rel}.retries`);
  const f = r.fault === undefined ? undefined : fault(d, r.fault, `${rel}.fault`);
  return {
    origin,
    index,
    matches,
    filters: mirrors(d, known, r, rel),
    backends,
    timeouts: { ...(requestMs === undefined ? {} : { requestMs }), ...(perTryMs === undefined ? {} : { backendRequestMs: perTryMs }) },
    ...(retry ? { retry } : {}),
    ...(f && (f.delay || f.abort) ? { fault: f } : {}),
  };
}

/** A VirtualService's http routes, attached to the services its hosts name; undefined when it has a problem. */
export function virtualService(d: Doc, known: Known): VirtualServiceRoute | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', SPEC) ?? {};
  unsupported(d, spec, 'spec', ['gateways', 'tcp', 'tls']);
  const origin: RouteOrigin = { kind: 'VirtualService', namespace: d.namespace, name: d.name, created: d.created, order: d.order };
  const hosts = d.strings(spec, 'hosts', 'spec');
  if (hosts.length === 0) d.problem('spec.hosts', spec.hosts, 'must name the services the routes apply to, e.g. [reviews]');
  const attachments = hosts.flatMap((h, i) => {
    if (h.includes('*')) {
      d.problem(`spec.hosts[${i}]`, h, 'wildcard hosts are not supported; name each service');
      return [];
    }
    const service = hostService(d, known, h);
    if (!service) d.problem(`spec.hosts[${i}]`, h, `names no known service (${known.namesIn(d.namespace)})`);
    return service ? [{ service }] : [];
  });
  const raw = d.list(spec, 'http', 'spec');
  if (raw.length === 0) d.problem('spec.http', spec.http, 'needs at least one http route');
  const rules = raw.flatMap((r, i) => httpRule(d, known, r, i, origin) ?? []);
  return d.problems === 0 ? { origin, attachments, rules, label: d.label } : undefined;
}
