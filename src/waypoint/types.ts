// The waypoint's model: what Gateway API routes, Istio's waypoint labels
// and L7 AuthorizationPolicies become once validated (src/sources/
// gateway-api.ts). Plain data with no imports from above, so a source may
// build it and the waypoint may read it; regular expressions arrive
// compiled and checked (regex.ts). docs/waypoint.md describes the choices.
import type { IpBlock, PolicyAction, StringMatch } from '../policy/types';

/** How a path, header, query parameter or gRPC name is compared. */
export type ValueMatchType = 'Exact' | 'RegularExpression';

/** Exact or element-wise prefix (`/a` matches `/a`, `/a/`, `/a/b`, not `/ab`), or a full-match regular expression. */
export type PathMatch =
  | { type: 'Exact'; value: string }
  | { type: 'PathPrefix'; value: string }
  | { type: 'RegularExpression'; value: string; regex: RegExp }
  /** Istio VirtualService's `uri.prefix`: a plain string prefix (`/a` matches `/ab` too). */
  | { type: 'Prefix'; value: string };

/** A header (name in lower case) or query parameter (name as written) and how its value must look. */
export type ValueMatch =
  | { name: string; type: 'Exact'; value: string }
  | { name: string; type: 'RegularExpression'; value: string; regex: RegExp };

/** Every populated field must hold (Gateway API ANDs them). */
export interface RouteMatch {
  path: PathMatch;
  headers: ValueMatch[];
  queryParams: ValueMatch[];
  /** Upper case, e.g. GET; undefined matches any. */
  method?: string;
}

export interface HeaderValue {
  name: string;
  value: string;
}

/** Names in lower case; one action per name (Gateway API forbids more). */
export interface HeaderModifier {
  set: HeaderValue[];
  add: HeaderValue[];
  remove: string[];
}

export type PathModifier = { type: 'ReplaceFullPath'; value: string } | { type: 'ReplacePrefixMatch'; value: string };

export type RouteFilter =
  | { type: 'RequestHeaderModifier'; modifier: HeaderModifier }
  | { type: 'ResponseHeaderModifier'; modifier: HeaderModifier }
  | {
      type: 'RequestRedirect';
      scheme?: 'http' | 'https';
      hostname?: string;
      path?: PathModifier;
      port?: number;
      statusCode: 301 | 302 | 303 | 307 | 308;
    }
  | { type: 'URLRewrite'; hostname?: string; path?: PathModifier }
  /** A copy of the request to another service, sent on the side: its answer is dropped, and it never delays or fails the original. */
  | { type: 'RequestMirror'; backend: MirrorBackend; percent: number };

/** Where a mirror sends its copies: a service port, optionally a DestinationRule subset. */
export interface MirrorBackend {
  service: string;
  port: number;
  subset?: string;
}

/** Istio's `fault`: each part applies to a share of the requests (percent, 0..100, fractions allowed), drawn independently. */
export interface FaultInjection {
  /** Held for ms before the request goes on (Envoy's response flag DI). */
  delay?: { ms: number; percent: number };
  /** Answered by the waypoint with this status, never sent (Envoy's response flag FI). */
  abort?: { status: number; percent: number };
}

/** A Service behind a rule: its key in the mesh model ("<namespace>/<hostname>") and the service port. */
export interface WeightedBackend {
  namespace: string;
  name: string;
  service: string;
  port: number;
  /** Relative share; 0 takes the backend out of rotation. */
  weight: number;
  /** A subset of a DestinationRule of the service (its endpoints with the subset's labels); undefined: every endpoint. */
  subset?: string;
}

/** Milliseconds; 0 disables the timeout (Gateway API's "0s"); undefined leaves ambit's default. */
export interface RouteTimeouts {
  requestMs?: number;
  backendRequestMs?: number;
}

/** Why an attempt failed, as Envoy's retry_on names the conditions. */
export const RETRY_CONDITIONS = [
  'connect-failure',
  'refused-stream',
  'unavailable',
  'cancelled',
  'reset',
  'retriable-status-codes',
] as const;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];
/** Istio's default retry_on (503 is not among them: an overloaded endpoint is not retried by default). */
export const DEFAULT_RETRY_ON: readonly RetryCondition[] = Object.freeze(['connect-failure', 'refused-stream', 'unavailable', 'cancelled']);

export interface RetryPolicy {
  /** Retries after the first attempt; 0 disables retrying. */
  attempts: number;
  on: readonly RetryCondition[];
  /** HTTP statuses retried (only with 'retriable-status-codes' in `on`). */
  codes: readonly number[];
  /** Base interval of the jittered exponential backoff. */
  backoffBaseMs: number;
  /** Cap of one backoff wait. */
  backoffMaxMs: number;
}

/** The object a rule came from, for precedence ties and for messages. */
export interface RouteOrigin {
  kind: 'HTTPRoute' | 'GRPCRoute' | 'VirtualService';
  namespace: string;
  name: string;
  /** creationTimestamp as written (RFC 3339), '' when absent: absent sorts last. */
  created: string;
  /** Index of the route among the documents read: the last tie-breaker. */
  order: number;
}

export interface RouteRule {
  origin: RouteOrigin;
  /** Index of the rule in spec.rules. */
  index: number;
  /** Never empty: a rule without matches gets Gateway API's default (PathPrefix "/"). */
  matches: RouteMatch[];
  filters: RouteFilter[];
  /** Empty only with a RequestRedirect filter. */
  backends: WeightedBackend[];
  timeouts: RouteTimeouts;
  /** undefined: Istio's default policy (retry.ts). */
  retry?: RetryPolicy;
  /** VirtualService `fault`: delays and aborts injected before the request is sent. */
  fault?: FaultInjection;
}

/** The rules attached to one service (parentRef kind Service), on one port or on all of them. */
export interface ServiceRoutes {
  /** The service's key in the mesh model: "<namespace>/<hostname>". */
  service: string;
  /** parentRefs[].port, or the port parentRefs[].sectionName names; undefined: every port of the service. */
  port?: number;
  rules: RouteRule[];
}

/** `istio.io/waypoint-for`: which traffic a waypoint accepts. */
export type WaypointFor = 'service' | 'workload' | 'all' | 'none';

/** A Gateway with gatewayClassName istio-waypoint. */
export interface Waypoint {
  namespace: string;
  name: string;
  for: WaypointFor;
}

/** "<namespace>/<name>" of a waypoint. */
export const waypointKey = (w: Pick<Waypoint, 'namespace' | 'name'>): string => `${w.namespace}/${w.name}`;

/** Which waypoint serves which service and workload (by `istio.io/use-waypoint`). */
export interface WaypointBindings {
  /** Service key ("<namespace>/<hostname>") → waypoint key. */
  services: Map<string, string>;
  /** Workload uid → waypoint key. */
  workloads: Map<string, string>;
}

/** What an L7 authorization rule can look at, besides the L4 fields of src/policy/types.ts. */
export interface L7Match {
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  sourceIps: IpBlock[];
  notSourceIps: IpBlock[];
  /** Compared without the port and case-insensitively. */
  hosts: StringMatch[];
  notHosts: StringMatch[];
  ports: number[];
  notPorts: number[];
  methods: StringMatch[];
  notMethods: StringMatch[];
  /** Compared with the path without its query string. */
  paths: StringMatch[];
  notPaths: StringMatch[];
  /** `when: request.headers[name]`, name in lower case. */
  headers: { name: string; values: StringMatch[]; notValues: StringMatch[] }[];
}

/** A match that constrains nothing but the given fields (every list empty = anything). */
export const l7Match = (fields: Partial<L7Match> = {}): L7Match => ({
  principals: [],
  notPrincipals: [],
  namespaces: [],
  notNamespaces: [],
  sourceIps: [],
  notSourceIps: [],
  hosts: [],
  notHosts: [],
  ports: [],
  notPorts: [],
  methods: [],
  notMethods: [],
  paths: [],
  notPaths: [],
  headers: [],
  ...fields,
});

/** A rule matches when each clause has a matching entry (from, to, every when). */
export interface L7Rule {
  clauses: L7Match[][];
}

/** What an L7 policy is attached to by targetRefs. */
export type L7Target = { kind: 'Gateway'; namespace: string; name: string } | { kind: 'Service'; namespace: string; service: string };

export interface L7Policy {
  namespace: string;
  name: string;
  action: PolicyAction;
  targets: L7Target[];
  /** No rules: matches nothing (as in Istio, an ALLOW without rules allows nothing). */
  rules: L7Rule[];
  dryRun: boolean;
}

/**
 * How the endpoints of a destination are chosen (Istio's loadBalancer):
 * simple policies, or a consistent hash of a header, a cookie or the
 * client's address (the same key goes to the same endpoint while the set
 * of endpoints stays the same).
 */
export type LoadBalancer =
  | { type: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' }
  | { type: 'HASH_HEADER' | 'HASH_COOKIE'; name: string }
  | { type: 'HASH_SOURCE_IP' };

/** Istio's connectionPool, every limit filled in (Istio's defaults: 2³²−1, i.e. none; maxRequestsPerConnection 0, none). */
export interface ConnectionPool {
  /** tcp.maxConnections: attempts in flight at once to the destination, each on a connection of its own. */
  maxConnections: number;
  /** http.http1MaxPendingRequests: attempts waiting for a connection; one more is refused (503 UO). */
  maxPendingRequests: number;
  /** http.http2MaxRequests: requests active at once to the destination; one more is refused (503 UO). */
  maxRequests: number;
  /** http.maxRequestsPerConnection: requests one kept HTTP/1.1 connection carries; 0 is no limit. */
  maxRequestsPerConnection: number;
  /** http.maxRetries: retries in flight at once to the destination. */
  maxRetries: number;
}

/** Istio's outlierDetection, filled in with Istio's defaults. */
export interface OutlierDetection {
  /** 5xx answers (and connection failures, resets, timeouts) in a row that eject an endpoint; 0 disables. */
  consecutive5xxErrors: number;
  /** 502, 503, 504 (and connection failures, resets, timeouts) in a row that eject an endpoint; 0 disables. */
  consecutiveGatewayErrors: number;
  /** How often ejections are reconsidered: an ejection count goes down by one per interval its endpoint stays in. */
  intervalMs: number;
  /** An endpoint stays out baseEjectionMs × the number of times it was ejected (capped at 300 s, Envoy's max_ejection_time). */
  baseEjectionMs: number;
  /** Share of the endpoints that may be out at once; one may always be (Envoy's rule). */
  maxEjectionPercent: number;
}

/** A trafficPolicy: what is absent takes Istio's default (least request, no limits, no outlier detection). */
export interface TrafficPolicy {
  loadBalancer?: LoadBalancer;
  connectionPool?: ConnectionPool;
  outlierDetection?: OutlierDetection;
}

export interface Label {
  key: string;
  value: string;
}

/** A DestinationRule subset: the endpoints with all its labels, and a policy whose fields replace the rule's. */
export interface Subset {
  name: string;
  labels: Label[];
  trafficPolicy: TrafficPolicy;
}

/** An Istio DestinationRule, applied to the service its host names. */
export interface DestinationPolicy {
  namespace: string;
  name: string;
  /** The service's key in the mesh model: "<namespace>/<hostname>". */
  service: string;
  trafficPolicy: TrafficPolicy;
  subsets: Subset[];
}

/** Everything the waypoint needs from the routes and policies, validated. */
export interface WaypointConfig {
  routes: ServiceRoutes[];
  waypoints: Waypoint[];
  bindings: WaypointBindings;
  policies: L7Policy[];
  /** DestinationRules, at most one per service. */
  destinations: DestinationPolicy[];
  /** HTTPLocalRateLimitPolicies, at most one per service; absent: none. */
  rateLimits?: RateLimitPolicy[];
  /** Accepted but worth telling (overlapping matches, routes ignored by precedence). */
  warnings: string[];
}

/** A ServiceAccount an override names: the clients running as it (by their verified identity). */
export interface ClientAccount {
  namespace: string;
  name: string;
}

/** Linkerd's HTTPLocalRateLimitPolicy, attached to a service rather than a Server: requests per second, each limit a token bucket. */
export interface RateLimitPolicy {
  namespace: string;
  name: string;
  /** The service's key in the mesh model: "<namespace>/<hostname>". */
  service: string;
  /** spec.total: every request to the service, whoever sends it. */
  total?: number;
  /** spec.identity: each client identity on its own, unless an override names it. */
  identity?: number;
  /** spec.overrides: the clients listed share one bucket of this rate instead of the identity limit. */
  overrides: { requestsPerSecond: number; clients: ClientAccount[] }[];
}
