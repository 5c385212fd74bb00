// Prometheus metrics of one ambit process (prom-client): Istio's TCP
// metrics with Istio's label names, reported from both ends (reporter
// "source" on the outbound side, "destination" on the inbound side), plus
// what an operator of a node tunnel needs: failures by reason, pool state,
// certificate expiry, configuration state, the datapath's per-CPU counters
// (read from the kernel on scrape) and process metrics (fds, memory,
// event-loop lag).
import client from 'prom-client';
import type { DatapathMaps } from '../datapath/maps';
import { REASONS } from '../datapath/reasons';
import type { CertificateManager } from '../identity/cert-manager';
import { parseSpiffe } from '../identity/spiffe';
import type { Workload } from '../state/types';

const TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'destination_service',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;
export type TcpLabels = Record<(typeof TCP_LABELS)[number], string>;

const UNKNOWN = 'unknown';

/** What one end knows about a connection, turned into Istio's labels ('unknown' only when nobody knows). */
export function tcpLabels(f: {
  reporter: 'source' | 'destination';
  src?: Pick<Workload, 'name' | 'namespace' | 'labels'>;
  srcPrincipal?: string;
  dst?: Pick<Workload, 'name' | 'namespace'>;
  dstPrincipal?: string;
  service?: string;
  mtls: boolean;
}): TcpLabels {
  const srcNs = f.src?.namespace ?? (f.srcPrincipal ? parseSpiffe(f.srcPrincipal)?.namespace : undefined);
  return {
    reporter: f.reporter,
    source_workload: f.src?.name ?? UNKNOWN,
    source_workload_namespace: srcNs ?? UNKNOWN,
    source_principal: f.srcPrincipal ?? UNKNOWN,
    source_app: f.src?.labels.app ?? f.src?.name ?? UNKNOWN,
    source_version: f.src?.labels.version ?? UNKNOWN,
    destination_service: f.service ?? UNKNOWN,
    destination_workload: f.dst?.name ?? UNKNOWN,
    destination_workload_namespace: f.dst?.namespace ?? UNKNOWN,
    destination_principal: f.dstPrincipal ?? UNKNOWN,
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: f.mtls ? 'mutual_tls' : UNKNOWN,
  };
}

export interface MetricsSources {
  maps?: DatapathMaps;
  certs?: CertificateManager;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly opened: client.Counter<string>;
  private readonly closed: client.Counter<string>;
  private readonly sent: client.Counter<string>;
  private readonly received: client.Counter<string>;
  private readonly failures: client.Counter<string>;
  readonly configApplied: client.Gauge<string>;
  readonly configRejected: client.Counter<string>;

  constructor(sources: MetricsSources = {}) {
    const r = this.registry;
    const tcp = (name: string, help: string): client.Counter<string> =>
      new client.Counter({ name, help, labelNames: [...TCP_LABELS], registers: [r] });
    this.opened = tcp('istio_tcp_connections_opened_total', 'TCP connections opened');
    this.closed = tcp('istio_tcp_connections_closed_total', 'TCP connections closed');
    this.sent = tcp('istio_tcp_sent_bytes_total', 'Bytes sent to the client side of the connection (toward the source)');
    this.received = tcp('istio_tcp_received_bytes_total', 'Bytes received from the client side of the connection (from the source)');
    this.failures = new client.Counter({
      name: 'ambit_connection_failures_total',
      help: 'Connections refused or failed, by direction and reason',
      labelNames: ['direction', 'reason'],
      registers: [r],
    });
    this.configApplied = new client.Gauge({
      name: 'ambit_config_last_applied_timestamp_seconds',
      help: 'When the current configuration was applied',
      registers: [r],
    });
    this.configRejected = new client.Counter({
      name: 'ambit_config_rejected_total',
      help: 'Configuration changes rejected as invalid',
      registers: [r],
    });

    const { maps, certs } = sources;
    if (certs) {
      new client.Gauge({
        name: 'ambit_certificate_expiry_timestamp_seconds',
        help: 'When the current certificate of each workload identity expires',
        labelNames: ['identity'],
        registers: [r],
        collect() {
          this.reset();
          for (const c of certs.certificates()) this.set({ identity: c.identity }, c.notAfter.getTime() / 1000);
        },
      });
    }
    if (maps) {
      // The kernel's counters only grow: apply the increase since the last scrape.
      const last = new Map<string, bigint>();
      new client.Counter({
        name: 'ambit_datapath_events_total',
        help: 'eBPF datapath decisions by reason (per-CPU counters, summed)',
        labelNames: ['reason'],
        registers: [r],
        collect() {
          const now = maps.readCounters();
          for (const reason of REASONS) {
            const delta = now[reason] - (last.get(reason) ?? 0n);
            if (delta > 0n) this.inc({ reason }, Number(delta));
            else if (!last.has(reason)) this.inc({ reason }, 0);
            last.set(reason, now[reason]);
          }
        },
      });
    }
    client.collectDefaultMetrics({ register: r });
  }

  /** Reports an HBONE pool's sessions and streams (the tunnel that owns the pool calls this once). */
  trackPool(stats: () => { sessions: number; streams: number }): void {
    const r = this.registry;
    new client.Gauge({
      name: 'ambit_pool_sessions',
      help: 'Open HBONE client sessions (one TLS connection each)',
      registers: [r],
      collect() {
        this.set(stats().sessions);
      },
    });
    new client.Gauge({
      name: 'ambit_pool_streams',
      help: 'Open HBONE client streams (one per proxied connection)',
      registers: [r],
      collect() {
        this.set(stats().streams);
      },
    });
  }

  /** Counts a connection as opened; the returned function closes it with its byte counts. */
  open(labels: TcpLabels): (bytes: { fromSource: number; toSource: number }) => void {
    this.opened.inc(labels);
    return ({ fromSource, toSource }) => {
      this.closed.inc(labels);
      this.received.inc(labels, fromSource);
      this.sent.inc(labels, toSource);
    };
  }

  failure(direction: 'outbound' | 'inbound', reason: string): void {
    this.failures.inc({ direction, reason });
  }

  /**
   * Removes the TCP series that name a workload no longer in the mesh, so
   * the number of series follows the mesh, not the history of who came and
   * went. A connection of a removed workload still open when it closes
   * brings its series back until the next change.
   */
  async pruneWorkloads(present: (namespace: string, name: string) => boolean): Promise<number> {
    let removed = 0;
    const gone = (ns: string, name: string): boolean => name !== UNKNOWN && ns !== UNKNOWN && !present(ns, name);
    for (const c of [this.opened, this.closed, this.sent, this.received]) {
      for (const { labels } of (await c.get()).values) {
        const l = labels as TcpLabels;
        if (gone(l.source_workload_namespace, l.source_workload) || gone(l.destination_workload_namespace, l.destination_workload)) {
          c.remove(labels as Partial<Record<string, string>>);
          removed++;
        }
      }
    }
    return removed;
  }
}
