// The data path of one process: the HBONE pool and, per served pod, its
// outbound and inbound handlers on servers accepting on the pod's listening
// sockets. The same class runs inside `ambit node --workers 0` and
// `ambit sidecar` (one process) and inside every tunnel worker.
import type net from 'node:net';
import client from 'prom-client';
import type { DatapathMaps } from '../datapath/maps';
import { ROLES } from '../datapath/ports';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import type { Logger } from '../observability/log';
import type { Metrics } from '../observability/metrics';
import { RateLimitedLog } from '../observability/rate-limited';
import type { Authorizer } from '../policy/authorize';
import type { MeshStore } from '../state/store';
import { ConnectionRegistry } from './connections';
import { Inbound } from './inbound';
import { type TunnelLimits, tunnelLimits } from './limits';
import { NodeOrigin, type NodeOriginVia, type ProbeSources } from './node-origin';
import { attachOutbound } from './outbound';
import { HbonePool, type PoolOptions } from './pool';
import type { ServedPod } from './served-pod';
import { workloadPresent } from './source';

export type { ServedPod } from './served-pod';

export type TunnelMode = 'hbone' | 'plain';

export interface TunnelDeps {
  /** Replaced in place when the configuration changes. */
  store: MeshStore;
  certs: CertProvider;
  maps: DatapathMaps;
  mode: TunnelMode;
  metrics: Metrics;
  authorizer: () => Authorizer;
  pool?: Partial<Pick<PoolOptions, 'maxStreams' | 'idleMs' | 'pingEveryMs' | 'pingTimeoutMs'>>;
  /** Timeouts and caps; DEFAULT_LIMITS for the ones not given. */
  limits?: Partial<TunnelLimits>;
  /** Plaintext connections that are the node's own (kubelet probes) and skip policy; absent: none. */
  probeSources?: ProbeSources;
  log: Logger;
}

interface Served {
  pod: ServedPod;
  inbound: Inbound;
  open: Set<net.Socket>;
}

export class Tunnel {
  readonly pool: HbonePool;
  readonly limits: TunnelLimits;
  /** The connections open now, of every pod this tunnel serves or served (for GET /connections). */
  readonly connections = new ConnectionRegistry();
  private readonly pods = new Map<string, Served>();
  /** Warnings peers can trigger, one line per reason per interval for all served pods. */
  private readonly warn: RateLimitedLog;
  private readonly nodeOrigin?: NodeOrigin;
  private readonly nodeExempted: (via: NodeOriginVia) => void;

  /** What decisions depend on besides the connection itself: the policies and which ones select each served pod. */
  private policyView = '';
  private readonly onStateChanged = (): void => {
    // Series of workloads that left go with them: cardinality follows the mesh.
    const cfg = this.deps.store.config;
    this.deps.metrics
      .pruneWorkloads((ns, name) => workloadPresent(cfg, ns, name))
      .catch((err: Error) => this.deps.log.warn({ err: err.message }, 'removing the metric series of departed workloads failed'));
    // Most changes (pods coming and going elsewhere) cannot change a verdict: re-check only when policies could.
    const view = this.currentPolicyView();
    if (view === this.policyView) return;
    this.policyView = view;
    for (const s of this.pods.values()) s.inbound.recheck();
  };

  private currentPolicyView(): string {
    const { store } = this.deps;
    return JSON.stringify([
      store.config.policies,
      [...this.pods.values()].map(({ pod }) => {
        const [ip] = pod.workload.addresses;
        return ip === undefined ? undefined : store.workloadByIp(ip)?.authorizationPolicies;
      }),
    ]);
  }

  constructor(private readonly deps: TunnelDeps) {
    this.limits = tunnelLimits(deps.limits);
    this.warn = new RateLimitedLog(deps.log);
    this.pool = new HbonePool({ certs: deps.certs, log: deps.log, limits: this.limits, ...deps.pool });
    const probes = deps.probeSources;
    if (probes && (probes.node || probes.addresses.length > 0)) this.nodeOrigin = new NodeOrigin(probes);
    const exempted = nodeExemptedCounter(deps.metrics);
    this.nodeExempted = (via) => exempted.inc({ via });
    deps.metrics.trackPool(() => this.pool.stats());
    // New policies apply to open connections too.
    deps.store.on('changed', this.onStateChanged);
  }

  /** Starts serving a pod; in HBONE mode cert is the pod's own (its :15008 answers with it). */
  addPod(pod: ServedPod, cert: WorkloadCert | undefined): void {
    const { deps } = this;
    const open = new Set<net.Socket>();
    // Every accepted socket is tracked, so a drain can end what outlives its deadline.
    for (const s of ROLES.map((r) => pod[r])) {
      s.on('connection', (c: net.Socket) => {
        open.add(c);
        c.once('close', () => open.delete(c));
      });
    }
    const inbound = new Inbound(pod, pod.identity, deps.mode === 'hbone' ? cert : undefined, {
      certs: deps.certs,
      trustDomain: () => deps.store.trustDomain,
      authorizer: deps.authorizer,
      dialInPod: (p, ip, port) => p.netns.connect(ip, port),
      mesh: deps.store,
      limits: this.limits,
      metrics: deps.metrics,
      connections: this.connections,
      log: deps.log,
      warn: this.warn,
      nodeOrigin: this.nodeOrigin,
      nodeExempted: this.nodeExempted,
    });
    attachOutbound(pod, {
      maps: deps.maps,
      store: deps.store,
      pool: this.pool,
      plainOnly: deps.mode === 'plain',
      metrics: deps.metrics,
      connections: this.connections,
      limits: this.limits,
      log: deps.log,
    });
    this.pods.set(pod.workload.uid, { pod, inbound, open });
    this.policyView = this.currentPolicyView();
  }

  /** Stops serving a pod: no new connections; those open carry on. */
  removePod(uid: string): void {
    const s = this.pods.get(uid);
    if (!s) return;
    this.pods.delete(uid);
    s.inbound.close();
    for (const srv of ROLES.map((r) => s.pod[r])) srv.close();
  }

  served(): ServedPod[] {
    return [...this.pods.values()].map((s) => s.pod);
  }

  /** TLS handshakes accepted on the served pods' :15008. */
  handshakes(): number {
    let n = 0;
    for (const s of this.pods.values()) n += s.inbound.handshakes;
    return n;
  }

  /** What one served pod's :15008 holds: sessions, handshakes in progress, open connections. */
  inboundStats(uid: string): { sessions: number; pending: number; open: number } | undefined {
    return this.pods.get(uid)?.inbound.stats();
  }

  /**
   * Graceful stop: stop accepting, ask HBONE peers to open no new streams
   * (GOAWAY), let open connections finish until the deadline, then end them.
   * The client pool is left alone: connections already accepted still need
   * it, and its sessions end with the process.
   */
  async drain(deadlineMs: number): Promise<{ left: number }> {
    const all = [...this.pods.values()];
    for (const s of all) {
      s.inbound.drain();
      for (const srv of ROLES.map((r) => s.pod[r])) srv.close();
    }
    const deadline = Date.now() + deadlineMs;
    const open = (): number => all.reduce((n, s) => n + s.open.size, 0);
    while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const left = open();
    if (left > 0) {
      const sample = all
        .flatMap((s) =>
          [...s.open].map(
            (c) =>
              `${s.pod.workload.uid} ${c.remoteAddress}:${c.remotePort}→${c.localAddress}:${c.localPort} read ${c.bytesRead} written ${c.bytesWritten}`,
          ),
        )
        .slice(0, 10);
      this.deps.log.warn({ left, sample }, 'drain deadline reached: closing the connections still open');
    }
    for (const s of all) for (const c of s.open) c.destroy();
    return { left };
  }

  stop(): void {
    this.deps.store.off('changed', this.onStateChanged);
    for (const uid of [...this.pods.keys()]) this.removePod(uid);
    this.pool.close();
  }
}

const NODE_EXEMPTED = 'ambit_node_exempt_connections_total';

/** One counter per registry, however many tunnels share its Metrics (tests run several). */
function nodeExemptedCounter(metrics: Metrics): client.Counter<'via'> {
  const existing = metrics.registry.getSingleMetric(NODE_EXEMPTED);
  if (existing) return existing as client.Counter<'via'>;
  return new client.Counter({
    name: NODE_EXEMPTED,
    help: 'Plaintext connections from the node itself (kubelet probes) delivered without policy, by how they were recognised',
    labelNames: ['via'],
    registers: [metrics.registry],
  });
}
