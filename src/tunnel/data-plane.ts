// Where enrolled pods are served, behind one interface: a Tunnel in this
// process (a sidecar, or a node with --workers 0), or tunnel worker
// processes accepting on duplicates of the same sockets (./worker-host.ts).
// The process's root decides which; enrolment, certificates and readiness
// do not care.
import type net from 'node:net';
import type { EnrolledPod } from '../datapath/enrolment';
import type { Datapath } from '../datapath/loader';
import { listenerServer } from '../datapath/netns';
import { type ListenerRole, type PerRole, ROLES } from '../datapath/ports';
import type { CertificateManager, WorkloadCert } from '../identity/cert-manager';
import type { Logger } from '../observability/log';
import type { Metrics } from '../observability/metrics';
import { RateLimitedLog } from '../observability/rate-limited';
import type { Authorizer } from '../policy/authorize';
import type { MeshStore } from '../state/store';
import type { MeshConfig } from '../state/types';
import type { ConnectionList } from './connections';
import type { TunnelLimits } from './limits';
import type { ProbeSources } from './node-origin';
import type { PoolOptions } from './pool';
import { Tunnel, type TunnelMode } from './tunnel';

/** Where enrolled pods are served: a Tunnel in this process, or tunnel workers. */
export interface DataPlane {
  addPod(pod: EnrolledPod, identity: string, cert: WorkloadCert | undefined): void;
  /** Stops serving a pod; resolves once its sockets are closed everywhere but in the agent. */
  removePod(uid: string): Promise<void>;
  configChanged(config: MeshConfig): void;
  /** Tasks before the data plane serves every pod it was given. */
  pending(): string[];
  drain(deadlineMs: number): Promise<void>;
  stop(): void;
  /**
   * The connections open now, from every process serving the data plane; a
   * process that does not answer in time is named in `unanswered`, never waited for.
   */
  connections(): Promise<ConnectionList>;
  /** Metrics of other processes serving the data plane, to aggregate with this one's. */
  collect?(): Promise<unknown[]>;
  setLogLevel?(level: string): void;
  /** Replaces the processes serving the data plane without dropping new connections. */
  roll?(drainMs: number): Promise<void>;
}

export interface DataPlaneContext {
  store: MeshStore;
  certs: CertificateManager;
  datapath: Datapath;
  metrics: Metrics;
  mode: TunnelMode;
  authorizer: () => Authorizer;
  /** Timeouts and caps of the tunnel (defaults for the ones not given). */
  limits: Partial<TunnelLimits>;
  /** Plaintext connections that are the node's own (kubelet probes) and skip policy; absent: none. */
  probeSources?: ProbeSources;
  log: Logger;
}

/** Session pool settings a caller may tune (tests shorten them). */
export type PoolTuning = Partial<Pick<PoolOptions, 'maxStreams' | 'idleMs' | 'pingEveryMs' | 'pingTimeoutMs'>>;

/** The tunnel in this process, on duplicates of the pods' listening sockets. */
export class InProcessDataPlane implements DataPlane {
  readonly tunnel: Tunnel;
  private readonly warn: RateLimitedLog;

  constructor(ctx: DataPlaneContext, pool?: PoolTuning) {
    this.tunnel = new Tunnel({
      store: ctx.store,
      certs: ctx.certs,
      maps: ctx.datapath.maps,
      mode: ctx.mode,
      metrics: ctx.metrics,
      authorizer: ctx.authorizer,
      pool,
      limits: ctx.limits,
      probeSources: ctx.probeSources,
      log: ctx.log,
    });
    this.warn = new RateLimitedLog(ctx.log);
  }

  addPod(pod: EnrolledPod, identity: string, cert: WorkloadCert | undefined): void {
    const server = (role: ListenerRole): net.Server =>
      listenerServer(pod.listeners[role]).on('error', (err: NodeJS.ErrnoException) => {
        // accept() failing (EMFILE, ENFILE, ENOBUFS) is an 'error' on the server: the listener stays open, say so.
        this.warn.warn(
          `listener_${err.code ?? 'error'}`,
          { pod: pod.workload.uid, role, code: err.code, err: err.message },
          'pod listener error',
        );
      });
    this.tunnel.addPod(
      {
        workload: pod.workload,
        podId: pod.podId,
        identity,
        netns: pod.netns,
        ...(Object.fromEntries(ROLES.map((r) => [r, server(r)])) as PerRole<net.Server>),
      },
      cert,
    );
  }

  removePod(uid: string): Promise<void> {
    this.tunnel.removePod(uid);
    return Promise.resolve();
  }
  configChanged(): void {
    /* the tunnel reads the shared store */
  }

  pending(): string[] {
    return this.tunnel.served().flatMap((p) => (ROLES.every((r) => p[r].listening) ? [] : [`listeners of pod ${p.workload.uid}`]));
  }

  async drain(deadlineMs: number): Promise<void> {
    await this.tunnel.drain(deadlineMs);
  }
  stop(): void {
    this.tunnel.stop();
  }
  connections(): Promise<ConnectionList> {
    return Promise.resolve({ ...this.tunnel.connections.list(), unanswered: [] });
  }
}
