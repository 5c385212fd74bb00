// Envoy's response flags and the label values of Istio's HTTP metrics,
// spelled as Envoy and Istio spell them: dashboards, alerts and access-log
// parsers written for Istio's waypoints read ambit's unchanged.

/** Envoy's short response flags that the waypoint can set, each with the status it goes with. */
export const RESPONSE_FLAGS = {
  /** No healthy upstream: the chosen backend has no endpoint (503). */
  UH: 'UH',
  /** Upstream connection failure: TCP, TLS or HBONE to the endpoint failed (503). */
  UF: 'UF',
  /** Upstream overflow: a circuit breaker (connection or request limit) refused the request (503). */
  UO: 'UO',
  /** No route: no rule of the service matched the request (404). */
  NR: 'NR',
  /** Upstream retry limit exceeded: every attempt failed with a retriable failure (the last failure's status). */
  URX: 'URX',
  /** Upstream request timeout: timeouts.request or timeouts.backendRequest elapsed (504). */
  UT: 'UT',
  /** Downstream connection termination: the client went away before the response was complete. */
  DC: 'DC',
  /** Upstream remote reset: the endpoint reset the stream (503). */
  UR: 'UR',
  /** Upstream connection termination: the endpoint's connection closed mid-response (503). */
  UC: 'UC',
  /** Local reset: the waypoint reset the stream itself (503). */
  LR: 'LR',
  /** Delay injected by a route's fault (VirtualService fault.delay). */
  DI: 'DI',
  /** Aborted by a route's fault (VirtualService fault.abort): the configured status, nothing sent upstream. */
  FI: 'FI',
  /** Rate limited locally (429). */
  RL: 'RL',
  /** Downstream protocol error: the client's request was not valid HTTP (400). */
  DPE: 'DPE',
  /** Upstream protocol error: the endpoint answered something that is not HTTP (502). */
  UPE: 'UPE',
  /** Stream idle timeout: no bytes either way for the idle timeout (408 before the response starts, else 504). */
  SI: 'SI',
  /** Duration timeout: the stream outlived its maximum duration. */
  DT: 'DT',
} as const;

export type ResponseFlag = (typeof RESPONSE_FLAGS)[keyof typeof RESPONSE_FLAGS];

/** The `response_flags` label and access-log field: flags joined by ",", or "-" when none (as Envoy prints them). */
export const formatFlags = (flags: readonly ResponseFlag[]): string => (flags.length === 0 ? '-' : [...new Set(flags)].join(','));

/** The `reporter` label of metrics a waypoint emits. */
export const REPORTER_WAYPOINT = 'waypoint';

/** Istio's standard HTTP metrics. */
export const HTTP_METRICS = {
  requests: 'istio_requests_total',
  duration: 'istio_request_duration_milliseconds',
  requestBytes: 'istio_request_bytes',
  responseBytes: 'istio_response_bytes',
} as const;

/** Envoy's default histogram buckets, which Istio's duration and size histograms use (milliseconds, or bytes). */
export const ENVOY_DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
]);

/** Istio's body of an L7 authorization denial (status 403). */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

/** The `grpc_response_status` label: the code as a decimal string, empty for a request that is not gRPC. */
export const grpcStatusLabel = (code: number | undefined): string => (code === undefined ? '' : String(code));
