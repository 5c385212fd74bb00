// Istio's DestinationRule (networking.istio.io/v1) for services behind a
// waypoint, read into the waypoint's model (src/waypoint/types.ts): subsets
// by labels, and trafficPolicy's loadBalancer, connectionPool and
// outlierDetection, at the top and per subset (a part a subset sets
// replaces the rule's, as Istio merges them). What the waypoint does not
// do (TLS settings other than Istio's mutual TLS, per-port settings,
// locality, warm-up, ring sizes) is a problem rather than dropped: the
// rule would mean something else than what was written. A rule whose host
// is no known service applies to nothing, as in Istio (a warning).
import { type Service, serviceKey } from '../state/types';
import type { ConnectionPool, DestinationPolicy, Label, LoadBalancer, OutlierDetection, Subset, TrafficPolicy } from '../waypoint/types';
import { DNS, type Doc, HEADER_NAME, type Known, type Obj } from './k8s-doc';

export const DESTINATION_RULE_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'];

/** Istio's "no limit". */
const UNLIMITED = 2 ** 32 - 1;
/** Istio's defaults for an outlierDetection's absent fields. */
const OUTLIER_DEFAULTS: OutlierDetection = {
  consecutive5xxErrors: 5,
  consecutiveGatewayErrors: 0,
  intervalMs: 10_000,
  baseEjectionMs: 30_000,
  maxEjectionPercent: 10,
};

const SPEC = ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector'];
const POLICY = ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol'];
const LB = ['simple', 'consistentHash', 'localityLbSetting', 'warmupDurationSecs', 'warmup'];
const HASH = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName', 'ringHash', 'maglev', 'minimumRingSize'];
const TCP = ['maxConnections', 'connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout'];
const HTTP = [
  'http1MaxPendingRequests',
  'http2MaxRequests',
  'maxRequestsPerConnection',
  'maxRetries',
  'idleTimeout',
  'h2UpgradePolicy',
  'useClientProtocol',
  'maxConcurrentStreams',
];
const OUTLIER = [
  'consecutive5xxErrors',
  'consecutiveGatewayErrors',
  'interval',
  'baseEjectionTime',
  'maxEjectionPercent',
  'consecutiveErrors',
  'consecutiveLocalOriginFailures',
  'splitExternalLocalOriginErrors',
  'minHealthPercent',
];

/** Fields Istio has that ambit's waypoint does not act on: refused with this reason. */
const NOT_SUPPORTED = "is not supported by ambit's waypoint; remove it";

/** Milliseconds of an Istio duration (1h, 5m, 30s, 1.5s, 100ms, or several: 1m30s); undefined when it is not one. */
export function istioDuration(v: unknown): number | undefined {
  if (typeof v !== 'string' || !/^(\d{1,9}(\.\d{1,9})?(h|m|s|ms))+$/.test(v)) return undefined;
  const unit: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
  let ms = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) ms += Number(m[1]) * (unit[m[2] ?? 's'] ?? 0);
  return Math.round(ms);
}

function unsupported(d: Doc, o: Obj, rel: string, keys: readonly string[]): void {
  for (const k of keys) if (o[k] !== undefined) d.problem(`${rel}.${k}`, o[k], NOT_SUPPORTED);
}

function loadBalancer(d: Doc, v: unknown, rel: string): LoadBalancer | undefined {
  const o = d.obj(v, rel, 'must be { simple } or { consistentHash }', LB);
  if (!o) return undefined;
  unsupported(d, o, rel, ['localityLbSetting', 'warmupDurationSecs', 'warmup']);
  if ((o.simple === undefined) === (o.consistentHash === undefined)) {
    d.problem(rel, o, 'must set exactly one of simple (ROUND_ROBIN, LEAST_REQUEST, RANDOM) and consistentHash');
    return undefined;
  }
  if (o.simple !== undefined) {
    if (o.simple === 'ROUND_ROBIN' || o.simple === 'LEAST_REQUEST' || o.simple === 'RANDOM') return { type: o.simple };
    if (o.simple === 'LEAST_CONN') return { type: 'LEAST_REQUEST' }; // Istio's deprecated name for it
    if (o.simple === 'UNSPECIFIED') return { type: 'LEAST_REQUEST' };
    d.problem(`${rel}.simple`, o.simple, 'must be ROUND_ROBIN, LEAST_REQUEST or RANDOM (PASSTHROUGH is not supported)');
    return undefined;
  }
  const at = `${rel}.consistentHash`;
  const h = d.obj(o.consistentHash, at, 'must be { httpHeaderName | httpCookie | useSourceIp }', HASH);
  if (!h) return undefined;
  unsupported(d, h, at, ['httpQueryParameterName', 'ringHash', 'maglev', 'minimumRingSize']);
  const set = ['httpHeaderName', 'httpCookie', 'useSourceIp'].filter((k) => h[k] !== undefined);
  if (set.length !== 1) {
    d.problem(at, h, 'must set exactly one of httpHeaderName, httpCookie, useSourceIp');
    return undefined;
  }
  if (h.httpHeaderName !== undefined) {
    const name = d.str(h, 'httpHeaderName', at, 'a header name such as x-user');
    if (name && !HEADER_NAME.test(name)) d.problem(`${at}.httpHeaderName`, name, 'must be an HTTP header name');
    return name && HEADER_NAME.test(name) ? { type: 'HASH_HEADER', name: name.toLowerCase() } : undefined;
  }
  if (h.httpCookie !== undefined) {
    const c = d.obj(h.httpCookie, `${at}.httpCookie`, 'must be { name, ttl, path }', ['name', 'ttl', 'path', 'attributes']);
    if (!c) return undefined;
    // ttl would have Envoy set the cookie when absent; ambit's waypoint only reads it (a request without it goes to a random endpoint).
    if (c.ttl !== undefined && istioDuration(c.ttl) === undefined)
      d.problem(`${at}.httpCookie.ttl`, c.ttl, 'must be a duration such as 0s or 1h (it is accepted and ignored)');
    unsupported(d, c, `${at}.httpCookie`, ['path', 'attributes']);
    const name = d.str(c, 'name', `${at}.httpCookie`, 'the cookie to hash, e.g. session');
    return name ? { type: 'HASH_COOKIE', name } : undefined;
  }
  if (h.useSourceIp !== true) {
    d.problem(`${at}.useSourceIp`, h.useSourceIp, 'must be true (or left out)');
    return undefined;
  }
  return { type: 'HASH_SOURCE_IP' };
}

function limit(d: Doc, o: Obj, key: string, rel: string, min: number, fix: string): number | undefined {
  return d.int(o, key, rel, min, UNLIMITED, fix);
}

function connectionPool(d: Doc, v: unknown, rel: string): ConnectionPool | undefined {
  const o = d.obj(v, rel, 'must be { tcp, http }', ['tcp', 'http']);
  if (!o) return undefined;
  const tcp = d.obj(o.tcp, `${rel}.tcp`, 'must be { maxConnections }', TCP) ?? {};
  const http = d.obj(o.http, `${rel}.http`, 'must be a map of limits', HTTP) ?? {};
  unsupported(d, tcp, `${rel}.tcp`, ['connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout']);
  unsupported(d, http, `${rel}.http`, ['idleTimeout', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams']);
  return {
    maxConnections: limit(d, tcp, 'maxConnections', `${rel}.tcp`, 1, 'connections to the destination at once') ?? UNLIMITED,
    maxPendingRequests: limit(d, http, 'http1MaxPendingRequests', `${rel}.http`, 1, 'requests waiting for a connection') ?? UNLIMITED,
    maxRequests: limit(d, http, 'http2MaxRequests', `${rel}.http`, 1, 'requests to the destination at once') ?? UNLIMITED,
    maxRequestsPerConnection: limit(d, http, 'maxRequestsPerConnection', `${rel}.http`, 0, 'requests per connection (0: no limit)') ?? 0,
    maxRetries: limit(d, http, 'maxRetries', `${rel}.http`, 0, 'retries in flight to the destination') ?? UNLIMITED,
  };
}

function outlierDetection(d: Doc, v: unknown, rel: string): OutlierDetection | undefined {
  const o = d.obj(v, rel, 'must be a map such as { consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s }', OUTLIER);
  if (!o) return undefined;
  if (o.consecutiveErrors !== undefined)
    d.problem(`${rel}.consecutiveErrors`, o.consecutiveErrors, 'is deprecated in Istio and not supported; use consecutive5xxErrors');
  unsupported(d, o, rel, ['consecutiveLocalOriginFailures', 'splitExternalLocalOriginErrors', 'minHealthPercent']);
  const dur = (key: string, fallback: number): number => {
    if (o[key] === undefined) return fallback;
    const ms = istioDuration(o[key]);
    if (ms === undefined || ms < 1) {
      d.problem(`${rel}.${key}`, o[key], 'must be a duration of at least 1ms, such as 10s, 500ms or 1m');
      return fallback;
    }
    return ms;
  };
  return {
    consecutive5xxErrors:
      d.int(o, 'consecutive5xxErrors', rel, 0, UNLIMITED, '5xx answers in a row that eject an endpoint (0 disables)') ??
      OUTLIER_DEFAULTS.consecutive5xxErrors,
    consecutiveGatewayErrors:
      d.int(o, 'consecutiveGatewayErrors', rel, 0, UNLIMITED, '502/503/504 answers in a row that eject an endpoint (0 disables)') ??
      OUTLIER_DEFAULTS.consecutiveGatewayErrors,
    intervalMs: dur('interval', OUTLIER_DEFAULTS.intervalMs),
    baseEjectionMs: dur('baseEjectionTime', OUTLIER_DEFAULTS.baseEjectionMs),
    maxEjectionPercent:
      d.int(o, 'maxEjectionPercent', rel, 0, 100, 'the share of endpoints that may be ejected at once') ??
      OUTLIER_DEFAULTS.maxEjectionPercent,
  };
}

function trafficPolicy(d: Doc, v: unknown, rel: string): TrafficPolicy {
  const o = d.obj(v, rel, 'must be a map with loadBalancer, connectionPool, outlierDetection', POLICY);
  if (!o) return {};
  unsupported(d, o, rel, ['portLevelSettings', 'tunnel', 'proxyProtocol']);
  if (o.tls !== undefined) {
    const t = d.obj(o.tls, `${rel}.tls`, 'must be { mode }');
    // The waypoint reaches every endpoint over HBONE with Istio's mutual TLS: that is the only mode it can honour.
    if (t && t.mode !== 'ISTIO_MUTUAL')
      d.problem(`${rel}.tls`, o.tls, "must be { mode: ISTIO_MUTUAL } or left out: the waypoint reaches endpoints over HBONE's mutual TLS");
  }
  const lb = loadBalancer(d, o.loadBalancer, `${rel}.loadBalancer`);
  const pool = o.connectionPool === undefined ? undefined : connectionPool(d, o.connectionPool, `${rel}.connectionPool`);
  const od = o.outlierDetection === undefined ? undefined : outlierDetection(d, o.outlierDetection, `${rel}.outlierDetection`);
  return { ...(lb ? { loadBalancer: lb } : {}), ...(pool ? { connectionPool: pool } : {}), ...(od ? { outlierDetection: od } : {}) };
}

function subsets(d: Doc, spec: Obj): Subset[] {
  const names = new Set<string>();
  return d.list(spec, 'subsets', 'spec').flatMap((v, i): Subset[] => {
    const rel = `spec.subsets[${i}]`;
    const o = d.obj(v, rel, 'must be { name, labels, trafficPolicy }', ['name', 'labels', 'trafficPolicy']);
    if (!o) return [];
    const name = d.str(o, 'name', rel, 'a subset name such as v1');
    if (name && !DNS.test(name)) d.problem(`${rel}.name`, name, 'must be lower-case letters, digits, - and . (e.g. v1)');
    if (name && names.has(name)) d.problem(`${rel}.name`, name, 'names another subset of this rule too; subset names are unique');
    if (name) names.add(name);
    const raw = d.obj(o.labels, `${rel}.labels`, 'must be a map of label to value, e.g. { version: v1 }') ?? {};
    const labels: Label[] = Object.entries(raw).flatMap(([key, value]) => {
      if (typeof value === 'string') return [{ key, value }];
      d.problem(`${rel}.labels.${key}`, value, 'label values must be strings');
      return [];
    });
    const tp = trafficPolicy(d, o.trafficPolicy, `${rel}.trafficPolicy`);
    return name ? [{ name, labels, trafficPolicy: tp }] : [];
  });
}

/** The service a host names: its hostname, or a short name in the rule's namespace (as Istio resolves it). */
function hostService(d: Doc, known: Known, host: string): Service | undefined {
  if (!host.includes('.')) return known.byName.get(`${d.namespace}/${host}`);
  return known.services.find((s) => s.hostname === host);
}

/** One DestinationRule; undefined when it has problems or names no known service. */
export function destinationRule(d: Doc, known: Known): DestinationPolicy | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', SPEC) ?? {};
  unsupported(d, spec, 'spec', ['workloadSelector']);
  if (spec.exportTo !== undefined)
    d.strings(spec, 'exportTo', 'spec').forEach((e, i) => {
      if (e !== '*' && e !== '.' && e !== d.namespace && !DNS.test(e))
        d.problem(`spec.exportTo[${i}]`, e, 'must be *, . or a namespace name');
    });
  const host = d.str(spec, 'host', 'spec', 'the service, e.g. reviews or reviews.default.svc.cluster.local');
  if (host?.includes('*')) d.problem('spec.host', host, 'wildcard hosts are not supported; name one service');
  const tp = trafficPolicy(d, spec.trafficPolicy, 'spec.trafficPolicy');
  const subs = subsets(d, spec);
  if (!host || d.problems > 0) return undefined;
  const svc = hostService(d, known, host);
  if (!svc) {
    d.warn('spec.host', `${host} is no known service (${known.namesIn(d.namespace)}); the rule applies to nothing`);
    return undefined;
  }
  return { namespace: d.namespace, name: d.name, service: serviceKey(svc), trafficPolicy: tp, subsets: subs };
}

/**
 * At most one rule per service: the oldest (creationTimestamp, then
 * namespace/name, then order read) applies and the others are ignored with
 * a warning (Istio merges only subsets of rules without a trafficPolicy
 * clash; one rule per host is the practice it advises).
 */
export function onePerService(rules: { policy: DestinationPolicy; doc: Doc }[]): DestinationPolicy[] {
  const sorted = [...rules].sort(
    (a, b) =>
      (a.doc.created === b.doc.created
        ? 0
        : a.doc.created === ''
          ? 1
          : b.doc.created === ''
            ? -1
            : a.doc.created < b.doc.created
              ? -1
              : 1) || a.doc.order - b.doc.order,
  );
  const chosen = new Map<string, DestinationPolicy>();
  for (const { policy, doc } of sorted) {
    const first = chosen.get(policy.service);
    if (first) doc.warn('spec.host', `ignored: the older DestinationRule ${first.namespace}/${first.name} applies to ${policy.service}`);
    else chosen.set(policy.service, policy);
  }
  return [...chosen.values()];
}
