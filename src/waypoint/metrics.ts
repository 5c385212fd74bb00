// Istio's standard HTTP metrics as a waypoint reports them
// (reporter="waypoint"), with Istio's label names and Envoy's default
// buckets, so dashboards written for Istio's waypoints read ambit's. Label
// values come from what the waypoint verified (the peer's certificate, the
// mesh state), never from headers a client could set: a client cannot mint
// series at will.
import client from 'prom-client';
import { parseSpiffe } from '../identity/spiffe';
import type { Workload } from '../state/types';
import { ENVOY_DEFAULT_BUCKETS, HTTP_METRICS, REPORTER_WAYPOINT } from './flags';

const LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;
export type HttpLabels = Record<(typeof LABELS)[number], string>;

const UNKNOWN = 'unknown';

/** What the waypoint knows of one request once it is answered. */
export interface RequestReport {
  src?: Pick<Workload, 'name' | 'namespace' | 'labels'>;
  srcPrincipal?: string;
  /** The service addressed, if the request went to one. */
  service?: { hostname: string; name: string; namespace: string };
  /** The endpoint that answered, if one did. */
  dst?: Pick<Workload, 'name' | 'namespace'>;
  dstPrincipal?: string;
  protocol: 'http' | 'grpc';
  status: number;
  grpcStatus: string;
  flags: string;
}

export function httpLabels(r: RequestReport): HttpLabels {
  const srcNs = r.src?.namespace ?? (r.srcPrincipal ? parseSpiffe(r.srcPrincipal)?.namespace : undefined);
  return {
    reporter: REPORTER_WAYPOINT,
    source_workload: r.src?.name ?? UNKNOWN,
    source_workload_namespace: srcNs ?? UNKNOWN,
    source_principal: r.srcPrincipal ?? UNKNOWN,
    source_app: r.src?.labels.app ?? r.src?.name ?? UNKNOWN,
    source_version: r.src?.labels.version ?? UNKNOWN,
    destination_service: r.service?.hostname ?? UNKNOWN,
    destination_service_name: r.service?.name ?? UNKNOWN,
    destination_service_namespace: r.service?.namespace ?? UNKNOWN,
    destination_workload: r.dst?.name ?? UNKNOWN,
    destination_workload_namespace: r.dst?.namespace ?? UNKNOWN,
    destination_principal: r.dstPrincipal ?? UNKNOWN,
    request_protocol: r.protocol,
    response_code: String(r.status),
    grpc_response_status: r.grpcStatus,
    response_flags: r.flags,
    connection_security_policy: 'mutual_tls',
  };
}

export class WaypointMetrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<string>;
  private readonly duration: client.Histogram<string>;
  private readonly requestBytes: client.Histogram<string>;
  private readonly responseBytes: client.Histogram<string>;
  private readonly failures: client.Counter<string>;
  private readonly overflows: client.Counter<string>;
  private readonly ejections: client.Counter<string>;
  private readonly limited: client.Counter<string>;

  constructor() {
    const registers = [this.registry];
    const labelNames = [...LABELS];
    const buckets = [...ENVOY_DEFAULT_BUCKETS];
    this.requests = new client.Counter({ name: HTTP_METRICS.requests, help: 'Requests answered', labelNames, registers });
    this.duration = new client.Histogram({
      name: HTTP_METRICS.duration,
      help: 'Time from the request to the end of its response (ms)',
      labelNames,
      buckets,
      registers,
    });
    this.requestBytes = new client.Histogram({
      name: HTTP_METRICS.requestBytes,
      help: 'Request body bytes',
      labelNames,
      buckets,
      registers,
    });
    this.responseBytes = new client.Histogram({
      name: HTTP_METRICS.responseBytes,
      help: 'Response body bytes',
      labelNames,
      buckets,
      registers,
    });
    this.failures = new client.Counter({
      name: 'ambit_waypoint_failures_total',
      help: 'HBONE connections and streams the waypoint refused or lost, by reason',
      labelNames: ['reason'],
      registers,
    });
    // Envoy's circuit-breaker and outlier-detection counters under Istio's names (cluster_name
    // "outbound|<port>|<subset>|<hostname>"), which dashboards for Istio already chart.
    this.overflows = new client.Counter({
      name: 'envoy_cluster_upstream_rq_pending_overflow',
      help: 'Requests refused (503 UO) by a DestinationRule connection-pool limit',
      labelNames: ['cluster_name'],
      registers,
    });
    this.ejections = new client.Counter({
      name: 'envoy_cluster_outlier_detection_ejections_enforced_total',
      help: 'Endpoints ejected by a DestinationRule outlier detection',
      labelNames: ['cluster_name'],
      registers,
    });
    // Labels from configuration only (the policy and which of its limits), never the client: series stay bounded.
    this.limited = new client.Counter({
      name: 'ambit_waypoint_rate_limited_total',
      help: 'Requests refused (429 RL) by an HTTPLocalRateLimitPolicy, by service, policy and limit (total, identity, override)',
      labelNames: ['destination_service', 'policy', 'limit'],
      registers,
    });
    client.collectDefaultMetrics({ register: this.registry });
  }

  request(labels: HttpLabels, durationMs: number, requestBytes: number, responseBytes: number): void {
    this.requests.inc(labels);
    this.duration.observe(labels, durationMs);
    this.requestBytes.observe(labels, requestBytes);
    this.responseBytes.observe(labels, responseBytes);
  }

  failure(reason: string): void {
    this.failures.inc({ reason });
  }

  /** A request refused by a connection-pool limit of the destination (Envoy's cluster name). */
  overflow(cluster: string): void {
    this.overflows.inc({ cluster_name: cluster });
  }

  /** An endpoint of the destination ejected. */
  ejected(cluster: string): void {
    this.ejections.inc({ cluster_name: cluster });
  }

  /** A request refused by a local rate limit. */
  rateLimited(service: string, policy: string, limit: string): void {
    this.limited.inc({ destination_service: service, policy, limit });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
