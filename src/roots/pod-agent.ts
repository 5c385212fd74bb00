// What `ambit node` and `ambit sidecar` share: the pods a process serves,
// kept in line with the mesh state. Built in the order a connection meets
// the parts — state, identity, datapath, enrolment (listening sockets),
// then the data plane that serves them — it owns reconcile, reload, drain
// and stop. The roots (./node.ts, ./sidecar.ts) choose the state source,
// the CA and the data plane and hand them in.
//
// Scope: a node agent serves the ambient workloads of its node from the
// node's netns; a sidecar serves one workload from inside that workload's
// own netns and cgroup.
import fs from 'node:fs';
import { type EnrolledPod, Enrolment, podKey } from '../datapath/enrolment';
import { Datapath, DEFAULT_PIN_DIR } from '../datapath/loader';
import { cgroup2Root, formatFindings, probe } from '../datapath/probe';
import { datapathStatus } from '../datapath/status';
import { AmbitError } from '../errors';
import { BuiltinCa } from '../identity/builtin-ca';
import type { CertificateAuthority } from '../identity/ca';
import { CertificateManager } from '../identity/cert-manager';
import type { Readiness } from '../observability/admin';
import { aggregateMetrics } from '../observability/aggregate';
import type { Logger } from '../observability/log';
import { Metrics } from '../observability/metrics';
import type { Authorizer } from '../policy/authorize';
import { PolicyAuthorizer } from '../policy/engine';
import { GATEWAY_NAME_LABEL } from '../sources/istio-waypoint';
import { MeshStore } from '../state/store';
import type { MeshConfig, Workload } from '../state/types';
import type { ConnectionList } from '../tunnel/connections';
import { type DataPlane, type DataPlaneContext, InProcessDataPlane, type PoolTuning } from '../tunnel/data-plane';
import type { TunnelLimits } from '../tunnel/limits';
import type { ProbeSources } from '../tunnel/node-origin';
import type { Tunnel, TunnelMode } from '../tunnel/tunnel';

/** What one ambit process serves: the ambient pods of a node, or one pod as its sidecar. */
export type Scope = { node: string } | { sidecar: string };

export interface PodAgentOptions {
  config: MeshConfig;
  scope: Scope;
  /** cgroup v2 directory holding this node's pods; the cgroup2 root by default. */
  podsCgroup?: string;
  pinDir?: string;
  /** hbone (default) or plain: a TCP relay without encryption, to measure the datapath alone. */
  mode?: TunnelMode;
  /** The CA; the built-in one in config.ca.dir by default. */
  ca?: CertificateAuthority;
  certTtlSeconds?: number;
  pool?: PoolTuning;
  /** Timeouts and caps of the tunnel; DEFAULT_LIMITS for the ones not given. */
  limits?: Partial<TunnelLimits>;
  /** Plaintext connections that are the node's own (kubelet probes) and skip policy; absent: none. */
  probeSources?: ProbeSources;
  /**
   * Where pods are comes separately from what they are (xDS + --pods or
   * Kubernetes): a pod of this node whose netns and cgroup are not known
   * yet waits (its sandbox is not up) instead of failing enrolment.
   */
  podsLocatedSeparately?: boolean;
  /** The state source's own status (xDS), for the config dump. */
  sourceStatus?: () => unknown;
  /** Builds the data plane; by default the tunnel runs in this process. */
  dataPlane?: (ctx: DataPlaneContext) => DataPlane;
  /** Decides each connection; by default the policies of the current state. */
  authorizer?: () => Authorizer;
  /** Pods placed by the container runtime before this start (CNI ADDs a restarted agent remembers), by workload uid. */
  placements?: ReadonlyMap<string, Placement>;
  log: Logger;
}

/**
 * Where the container runtime put a pod (a CNI ADD): its sandbox's netns,
 * its cgroup, and the addresses the network plugins gave it. It wins over
 * what the state says of the pod's netns and cgroup, so a pod placed this
 * way is enrolled once, however its processes are found later; its
 * addresses fill in for a state that has none yet.
 */
export interface Placement {
  netns: string;
  cgroup: string;
  addresses: string[];
}

interface PodRuntime {
  pod: EnrolledPod;
  identity: string;
  fingerprint: string;
}

export class PodAgent {
  private readonly pods = new Map<string, PodRuntime>();
  /** Pods that should be enrolled but could not be, with why (retried at the next change). */
  private readonly failed = new Map<string, string>();
  /** Those of them that failed for a reason of this process's, not of the pod's (see NODE_FAULTS). */
  private readonly failedByNode = new Set<string>();
  /** Pods of this node not located yet (no netns/cgroup known), with podsLocatedSeparately. */
  private waiting: string[] = [];
  private readonly placements: Map<string, Placement>;
  private readonly reconciled: (() => void)[] = [];
  private reconciling: Promise<void> = Promise.resolve();
  readonly dataPlane: DataPlane;

  private constructor(
    private readonly opts: PodAgentOptions,
    readonly store: MeshStore,
    readonly certs: CertificateManager,
    private readonly datapath: Datapath,
    readonly enrolment: Enrolment,
    readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    const ctx: DataPlaneContext = {
      store,
      certs,
      datapath,
      metrics,
      mode: opts.mode ?? 'hbone',
      authorizer: opts.authorizer ?? PolicyAuthorizer.following(() => store.config),
      limits: opts.limits ?? {},
      probeSources: opts.probeSources,
      log,
    };
    this.dataPlane = opts.dataPlane?.(ctx) ?? new InProcessDataPlane(ctx, opts.pool);
    this.placements = new Map(opts.placements);
  }

  static async start(opts: PodAgentOptions): Promise<PodAgent> {
    const { config, scope, log } = opts;
    const own = checkScope(config, scope);
    const pinDir = opts.pinDir ?? (own ? `${DEFAULT_PIN_DIR}/sidecar-${podKey(own)}` : DEFAULT_PIN_DIR);
    const findings = probe(pinDir);
    const failed = findings.filter((f) => !f.ok);
    if (failed[0]) {
      throw new AmbitError(
        failed[0].code ?? 'AMBIT_E_KERNEL',
        `this host cannot run the datapath:\n${formatFindings(failed)}`,
        'fix the lines marked FAIL; `ambit datapath probe` shows them all',
      );
    }
    const store = new MeshStore(config);
    const ca = opts.ca ?? (await BuiltinCa.open(config.ca.dir));
    const certs = new CertificateManager(ca, { ttlSeconds: opts.certTtlSeconds, log });

    // A sidecar captures its own pod only: its programs go on the pod's cgroup.
    const podsCgroup = own?.cgroup ?? opts.podsCgroup ?? cgroup2Root();
    // The probe above fails without a cgroup2 mount; this says so again should it vanish in between.
    if (!podsCgroup) throw new AmbitError('AMBIT_E_MOUNT', 'no cgroup v2 mount to attach to', 'mount cgroup2 or give --pods-cgroup');
    const datapath = Datapath.open({ pinDir, cgroupPath: podsCgroup });
    log.info({ pinDir, podsCgroup, attachments: datapath.attachments }, 'datapath attached');

    const metrics = new Metrics({ maps: datapath.maps, certs });
    metrics.configApplied.setToCurrentTime();
    const app = new PodAgent(opts, store, certs, datapath, new Enrolment(datapath), metrics, log);
    await app.reconcile();
    const stale = app.enrolment.removeStale();
    if (stale.length) log.info({ removed: stale }, 'removed state of pods no longer on this node');
    return app;
  }

  get pinDir(): string {
    return this.datapath.pinDir;
  }

  /** The in-process tunnel, when there is one (tests read its pool and handshake counts). */
  get tunnel(): Tunnel | undefined {
    return this.dataPlane instanceof InProcessDataPlane ? this.dataPlane.tunnel : undefined;
  }

  /** Applies a new valid configuration: enrols, unenrols and re-enrols what changed. */
  update(config: MeshConfig): Promise<void> {
    checkScope(config, this.opts.scope);
    this.store.replace(config);
    this.dataPlane.configChanged(config);
    this.metrics.configApplied.setToCurrentTime();
    return this.reconcile();
  }

  /**
   * Enrols the workload uid where the runtime put it, now; resolves once
   * its capture is on, or with why it could not be (it is retried at the
   * next change, like any pod whose enrolment failed).
   */
  async place(uid: string, where: Placement): Promise<{ enrolled: true; podId: number } | { enrolled: false; why: string }> {
    this.placements.set(uid, where);
    await this.reconcile();
    const r = this.pods.get(uid);
    if (r) return { enrolled: true, podId: r.pod.podId };
    return { enrolled: false, why: this.failed.get(uid) ?? 'the workload is no longer in the state, or not captured by this node' };
  }

  /** Forgets where the runtime put the pod (CNI DEL) and unenrols it unless the state locates it itself. */
  unplace(uid: string): Promise<void> {
    this.placements.delete(uid);
    return this.reconcile();
  }

  /** Calls fn after every reconcile (a new state, a placement): the CNI members file follows the state. */
  onReconciled(fn: () => void): void {
    this.reconciled.push(fn);
  }

  /**
   * Readiness: the datapath is attached and the configuration applied
   * (start() returned); what is still missing. A node agent stays ready
   * while some of its pods are pending (listed apart, see Readiness.pods)
   * unless the cause is its own: no certificates (the CA is unreachable or
   * refuses it) would fail every pod, and a not-ready agent halts a rollout.
   * A sidecar serves one pod only, so that pod failing makes it not ready.
   */
  readiness(): Readiness {
    const sidecar = 'sidecar' in this.opts.scope;
    const failed = [...this.failed]
      .filter(([uid]) => sidecar || this.failedByNode.has(uid))
      .map(([uid, why]) => `listeners of pod ${uid}: ${why}`);
    return { pending: [...failed, ...this.dataPlane.pending()], pods: this.pendingPods() };
  }

  /** Every pod of this node the state puts in the mesh that is not captured yet, and why. */
  pendingPods(): { uid: string; why: string }[] {
    return [
      ...this.waiting.map((uid) => ({
        uid,
        why: 'no netns and cgroup yet: waiting for its sandbox (a CNI ADD, or a process of the pod)',
      })),
      ...[...this.failed].map(([uid, why]) => ({ uid, why: `enrolment failed (retried at the next change): ${why}` })),
    ];
  }

  /** What this process serves, for the admin API: state, pods, certificates (never keys), datapath. */
  configDump(): unknown {
    return {
      scope: this.opts.scope,
      mode: this.opts.mode ?? 'hbone',
      config: this.store.config,
      source: this.opts.sourceStatus?.() ?? 'file',
      pods: [...this.pods.values()].map(({ pod, identity }) => ({
        uid: pod.workload.uid,
        podId: pod.podId,
        cgroupId: pod.cgroupId,
        netns: pod.netns.path,
        identity,
        addresses: pod.workload.addresses,
      })),
      failedPods: Object.fromEntries(this.failed),
      waitingPods: this.waiting,
      pendingPods: this.pendingPods(),
      placedByRuntime: Object.fromEntries(this.placements),
      certificates: this.certs
        .certificates()
        .map((c) => ({ identity: c.identity, notBefore: c.notBefore, notAfter: c.notAfter, chainPem: c.chainPem, rootsPem: c.rootsPem })),
      dataPlane: { pending: this.dataPlane.pending() },
      datapath: datapathStatus(this.datapath.pinDir),
    };
  }

  /** The connections open now, from whichever processes serve the data plane (GET /connections). */
  connections(): Promise<ConnectionList> {
    return this.dataPlane.connections();
  }

  /** The Prometheus exposition of this process and of the data plane's workers. */
  async metricsText(): Promise<string> {
    const parts = await this.dataPlane.collect?.();
    if (!parts?.length) return this.metrics.registry.metrics();
    return aggregateMetrics(this.metrics.registry, parts);
  }

  setLogLevel(level: string): void {
    this.log.level = level;
    this.dataPlane.setLogLevel?.(level);
  }

  /** Graceful stop of the data plane: no new connections, open ones finish until the deadline. */
  drain(deadlineMs: number): Promise<void> {
    return this.dataPlane.drain(deadlineMs);
  }

  /**
   * Stops serving. With keepCapture (the agent process exiting) every pod's
   * capture stays pinned: until an agent runs again, enrolled pods fail
   * closed (their listeners are gone with the process: sk_lookup drops,
   * connect4 is refused) instead of bypassing the mesh, as after a crash;
   * `ambit datapath cleanup` removes it. Without it (an agent inside a
   * test process) the pods are unenrolled.
   */
  stop(opts: { keepCapture?: boolean } = {}): void {
    this.dataPlane.stop();
    if (!opts.keepCapture) for (const uid of [...this.pods.keys()]) this.enrolment.unenrol(uid);
    this.certs.close();
    this.datapath.close();
  }

  private reconcile(): Promise<void> {
    // Serialised: a reload arriving mid-enrolment waits for it.
    this.reconciling = this.reconciling.then(() => this.reconcileNow());
    return this.reconciling;
  }

  private async reconcileNow(): Promise<void> {
    const { scope } = this.opts;
    const mine =
      'sidecar' in scope
        ? this.store.config.workloads.filter((w) => w.uid === scope.sidecar)
        : this.store.workloadsOn(scope.node).filter((w) => w.dataplane === 'ambient');
    let hbone = mine.filter(capturedByNode).map((w) => this.placedWorkload(w));
    if (this.opts.podsLocatedSeparately) {
      const located = (w: Workload): boolean => !!w.netns && !!w.cgroup;
      this.waiting = hbone.filter((w) => !located(w)).map((w) => w.uid);
      hbone = hbone.filter(located);
    }
    const wanted = new Map(hbone.map((w) => [w.uid, w]));
    for (const [uid, r] of this.pods) {
      const w = wanted.get(uid);
      if (w && fingerprint(this.store, w) === r.fingerprint) continue;
      // Only once no worker holds its sockets may the same netns be enrolled again (same ports).
      await this.dataPlane.removePod(uid);
      this.enrolment.unenrol(uid);
      this.pods.delete(uid);
      this.log.info({ pod: uid }, 'pod unenrolled');
    }
    for (const uid of this.failed.keys()) if (!wanted.has(uid)) this.failed.delete(uid);
    for (const uid of this.failedByNode) if (!this.failed.has(uid)) this.failedByNode.delete(uid);
    this.certs.retain(new Set([...wanted.values()].map((w) => this.store.identityOf(w))));
    for (const w of wanted.values()) {
      if (this.pods.has(w.uid)) continue;
      // One pod that cannot be enrolled (netns gone, port taken) must not keep
      // the others out: it is logged and retried at the next change.
      try {
        await this.enrol(w);
        this.failed.delete(w.uid);
        this.failedByNode.delete(w.uid);
      } catch (err) {
        this.failed.set(w.uid, (err as Error).message);
        if (NODE_FAULTS.has((err as AmbitError).code)) this.failedByNode.add(w.uid);
        else this.failedByNode.delete(w.uid);
        this.log.error(
          { pod: w.uid, code: (err as AmbitError).code, err: (err as Error).message },
          'pod enrolment failed; its traffic is not captured',
        );
      }
    }
    for (const fn of this.reconciled) fn();
  }

  private placedWorkload(w: Workload): Workload {
    const p = this.placements.get(w.uid);
    if (!p) return w;
    return { ...w, netns: p.netns, cgroup: p.cgroup, addresses: w.addresses.length ? w.addresses : p.addresses };
  }

  private async enrol(w: Workload): Promise<void> {
    const identity = this.store.identityOf(w);
    // The pod's certificate first: its :15008 must be able to answer once captured.
    const cert = (this.opts.mode ?? 'hbone') === 'hbone' ? await this.certs.fetch(identity) : undefined;
    const pod = this.enrolment.enrol(w);
    this.dataPlane.addPod(pod, identity, cert);
    this.pods.set(w.uid, { pod, identity, fingerprint: fingerprint(this.store, w) });
    this.log.info({ pod: w.uid, identity, addresses: w.addresses }, 'pod enrolled');
    if (pod.timeWaitReuse)
      this.log.warn(
        { pod: w.uid, err: pod.timeWaitReuse },
        'TIME_WAIT reuse not enabled in the pod: under heavy connection churn it may run out of ports (is /proc/sys read-only?)',
      );
  }
}

/** Enrolment failures that are this process's, not the pod's: it cannot get the pod a certificate. */
const NODE_FAULTS: ReadonlySet<string> = new Set(['AMBIT_E_CA', 'AMBIT_E_AUTH']);

/**
 * A workload whose traffic the node captures: in the mesh (HBONE), and not a
 * waypoint's pod (labelled with its Gateway), which speaks HBONE itself;
 * capturing it would send its traffic back through a tunnel, in a loop.
 */
export const capturedByNode = (w: Workload): boolean => w.protocol === 'HBONE' && w.labels[GATEWAY_NAME_LABEL] === undefined;

/**
 * What, when it changes, needs the pod re-enrolled (addresses, netns,
 * cgroup, identity). The netns counts by identity, not path: a pod found
 * through another of its processes (/proc/<pid>/ns/net) is the same pod.
 */
function fingerprint(store: MeshStore, w: Workload): string {
  return JSON.stringify([w.addresses, netnsIdentity(w.netns), w.cgroup, store.identityOf(w)]);
}

function netnsIdentity(p: string | undefined): string | undefined {
  if (!p) return p;
  try {
    const st = fs.statSync(p);
    return `${st.dev}:${st.ino}`;
  } catch {
    return p; // gone: compared by path, so a new one is enrolled
  }
}

/** Throws unless the scope is served by config; a sidecar's scope answers its own workload. */
function checkScope(config: MeshConfig, scope: Scope): Workload | undefined {
  if ('node' in scope) {
    if (!config.nodes.some((n) => n.name === scope.node)) {
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `node ${JSON.stringify(scope.node)} is not in the configuration's nodes`,
        `use one of: ${config.nodes.map((n) => n.name).join(', ') || '(none listed)'}`,
      );
    }
    return undefined;
  }
  const w = config.workloads.find((x) => x.uid === scope.sidecar);
  if (!w)
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `workload ${JSON.stringify(scope.sidecar)} is not in the configuration`,
      'give the uid of a workload entry',
    );
  if (w.dataplane !== 'sidecar' || w.protocol !== 'HBONE' || !w.netns || !w.cgroup) {
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `workload ${w.uid} cannot have a sidecar: it needs protocol: HBONE, dataplane: sidecar, netns and cgroup ` +
        `(has ${w.protocol}, ${w.dataplane}, ${w.netns ?? 'no netns'}, ${w.cgroup ?? 'no cgroup'})`,
      'set dataplane: sidecar so that the node agent leaves the pod to its sidecar',
    );
  }
  return w;
}
