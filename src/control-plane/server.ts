// `ambit control-plane`: the mesh served to every node agent as delta xDS,
// plus the CA, on one TLS gRPC server (port 15012 by default, as istiod).
// The mesh is the standalone YAML, or with Kubernetes the cluster's pods,
// services and EndpointSlices plus the YAML's trust domain, CA and
// policies. Node agents authenticate with bearer tokens listed (hashed) in
// the YAML or, in Kubernetes, their projected tokens (TokenReview);
// certificates are issued only for identities of workloads placed on the
// asking node. Only what changed is pushed; an invalid file change is
// logged and the last good state keeps serving.
//
// A reload is all or nothing: the new token list, mesh and resources are
// all built before any of them replaces the old, and whatever fails on the
// way is logged with its code while the last good state keeps serving; the
// process never exits for a file it was given. Open streams are checked
// against the tokens after every reload (and, with TokenReview, every
// minute): a node whose token went is cut off with UNAUTHENTICATED.
//
// Waypoints use the same server: each gets, as its own WaypointConfig
// resource, the routes and L7 policies of the configuration's `routes`
// (the file's, or with Kubernetes the cluster's Gateway API objects) that
// it enforces, with the Address resources, and a certificate for its own
// identity only.
import * as grpc from '@grpc/grpc-js';
import { AmbitError, type ErrorCode } from '../errors';
import { BuiltinCa } from '../identity/builtin-ca';
import type { CertificateAuthority } from '../identity/ca';
import { workloadIdentity } from '../identity/spiffe';
import type { KubeClient } from '../kube/client';
import { KubeClusterSource } from '../kube/cluster-source';
import type { Logger } from '../observability/log';
import { grpcServices, TYPE_WAYPOINT } from '../protocol/protos';
import { loadConfigFile, parseConfig, type StandaloneConfig } from '../sources/config';
import { watchParsedFile } from '../sources/file-source';
import { toResources, type XdsResource } from '../sources/xds-resources';
import { waypointResources } from '../sources/xds-waypoint';
import { MeshStore } from '../state/store';
import type { MeshConfig } from '../state/types';
import { caServiceHandlers } from './ca-service';
import { serverCredentials } from './tls';
import { REVIEW_CACHE_MS, TokenReviewer } from './token-review';
import { NodeTokens } from './tokens';
import { type AuthResult, type Principal, XdsServer, type XdsServerOptions } from './xds-server';

export const DEFAULT_LISTEN = '0.0.0.0:15012';
/**
 * Largest request accepted. A reconnecting node announces a version per
 * resource it holds (about 60 bytes each): 16 MiB is some 250,000
 * resources, while bounding what an unauthenticated peer can make the
 * server buffer before its token is checked.
 */
export const DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024;

export interface ControlPlaneOptions {
  configFile: string;
  listen?: string;
  /** Names the server certificate carries (clients verify one of them). */
  names?: { dns: string[]; ips: string[] };
  /** What signs certificates; the built-in CA in the YAML's ca.dir by default (tests swap a misbehaving one in). */
  signer?: CertificateAuthority;
  /** Workloads and services from this API server instead of the YAML. */
  kube?: KubeClient;
  /** xDS: response size budget (a bigger update goes in parts), streams per node, types per stream. */
  xds?: XdsServerOptions;
  /** Largest gRPC request accepted (bytes). */
  maxRequestBytes?: number;
  /** With TokenReview: how often open streams' tokens are reviewed again (and how long an answer is reused). */
  recheckMs?: number;
  log: Logger;
}

/** Everything a configuration produces, built before any of it is served. */
interface Prepared {
  base: MeshConfig;
  tokens: NodeTokens;
  store: MeshStore;
  /** The compiled routes served to waypoints; undefined when the configuration has none (a bare MeshConfig). */
  routes?: WaypointConfig;
  resources: Map<string, Map<string, XdsResource>>;
}

/** The compiled routes, policies and waypoints of a configuration (its `routes:`). */
type WaypointConfig = StandaloneConfig['routes'];

/** The routes of a prepared configuration: a StandaloneConfig (the file's, or the cluster's view of it) has them. */
const routesOf = (c: MeshConfig): WaypointConfig | undefined => (c as Partial<StandaloneConfig>).routes;

export class ControlPlane {
  private unwatch?: () => void;
  private cluster?: KubeClusterSource;
  private reviewer?: TokenReviewer;
  private recheckTimer?: NodeJS.Timeout;
  /** The file's configuration; what is served adds the cluster's workloads to it. */
  private base: MeshConfig;
  /** The routes served to waypoints, and which waypoints there are. */
  private routes?: WaypointConfig;

  private constructor(
    private store: MeshStore,
    private tokens: NodeTokens,
    readonly ca: BuiltinCa,
    readonly xds: XdsServer,
    private readonly server: grpc.Server,
    readonly port: number,
    private readonly log: Logger,
  ) {
    this.base = store.config;
    this.routes = routesOf(store.config);
  }

  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const { log } = opts;
    const config = loadConfigFile(opts.configFile);
    // Checked before listening: a start with a bad token list fails naming it, with nothing bound.
    const tokens = new NodeTokens(config.controlPlane.tokens);
    const ca = await BuiltinCa.open(config.ca.dir);
    const tls = await serverCredentials(ca, opts.names ?? { dns: [], ips: [] });
    // Late-bound: the token list and the workload placement follow the file.
    let self: ControlPlane | undefined;
    // Calls are served from the bind on, a moment before `self` is set: one landing in between is refused, not a crash.
    const authenticate = async (md: grpc.Metadata): Promise<AuthResult> =>
      self ? self.authenticate(md) : { error: 'the control plane is still starting; try again' };
    const xds = new XdsServer(authenticate, log.child({ component: 'xds' }), opts.xds);
    const server = new grpc.Server({
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    });
    const { ads, ca: caService } = grpcServices();
    server.addService(ads.service, xds.handlers());
    server.addService(
      caService.service,
      caServiceHandlers({
        ca: opts.signer ?? ca,
        tokens: { authenticate },
        identitiesOn: (who) => self?.identitiesOn(who) ?? new Set(),
        log: log.child({ component: 'ca' }),
      }),
    );
    const listen = opts.listen ?? DEFAULT_LISTEN;
    const creds = grpc.ServerCredentials.createSsl(
      Buffer.from(tls.rootPem),
      [{ cert_chain: Buffer.from(tls.certPem), private_key: Buffer.from(tls.keyPem) }],
      false,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(listen, creds, (err, p) =>
        err
          ? reject(
              new AmbitError(
                'AMBIT_E_CONFIG',
                `cannot listen on ${listen}: ${err.message}`,
                'is another control plane (or istiod) on that port? pass --listen HOST:PORT',
              ),
            )
          : resolve(p),
      ),
    );
    self = new ControlPlane(new MeshStore(config), tokens, ca, xds, server, port, log);
    const cp = self;
    try {
      await cp.begin(opts, config);
    } catch (err) {
      await cp.stop();
      throw err;
    }
    const served = cp.config;
    log.info(
      {
        listen,
        port,
        kubernetes: opts.kube?.server,
        workloads: served.workloads.length,
        services: served.services.length,
        policies: served.policies.length,
      },
      'control plane serving xDS and the CA',
    );
    return cp;
  }

  private async begin(opts: ControlPlaneOptions, config: MeshConfig): Promise<void> {
    const { log } = this;
    if (opts.kube) {
      const cluster = new KubeClusterSource(opts.kube, log.child({ component: 'kubernetes' }));
      await cluster.start();
      this.cluster = cluster;
      this.reviewer = new TokenReviewer(opts.kube, {
        nodeOfPod: (ns, name) => cluster.nodeOfPod(ns, name),
        isWaypoint: (ns, name) => this.waypointKeys().has(`${ns}/${name}`),
        cacheMs: opts.recheckMs,
        log,
      });
      cluster.on('changed', () => this.apply(this.base, 'cluster'));
      // A token the API server no longer accepts shows only when asked again (answers are cached this long).
      this.recheckTimer = setInterval(() => this.recheckStreams(), opts.recheckMs ?? REVIEW_CACHE_MS).unref();
    }
    this.commit(this.prepare(config), 'start');
    this.unwatch = watchParsedFile(
      opts.configFile,
      parseConfig,
      (cfg) => this.apply(cfg, 'file'),
      (err) =>
        log.error(
          { file: opts.configFile, code: err.code, err: err.message },
          'configuration change rejected; the last good state keeps serving',
        ),
    );
  }

  get config(): MeshConfig {
    return this.store.config;
  }

  /**
   * SPIFFE identities a caller may ask for: a node agent, those of the
   * workloads placed on its node; a waypoint, its own (the service account
   * of its pods, Istio's default: the Gateway's name).
   */
  identitiesOn(who: Principal): Set<string> {
    if ('waypoint' in who) {
      const [namespace = '', name = ''] = who.waypoint.split('/');
      const declared = this.store.config.waypoints?.find((w) => w.namespace === namespace && w.name === name);
      const accounts = new Set([name, declared?.serviceAccount ?? name]);
      return new Set([...accounts].map((serviceAccount) => workloadIdentity(this.store.config.trustDomain, { namespace, serviceAccount })));
    }
    return new Set(
      this.store
        .workloadsOn(who.node)
        .filter((w) => w.protocol === 'HBONE')
        .map((w) => this.store.identityOf(w)),
    );
  }

  /** "<namespace>/<name>" of every declared waypoint Gateway. */
  waypointKeys(): Set<string> {
    return new Set((this.routes?.waypoints ?? []).map((w) => `${w.namespace}/${w.name}`));
  }

  /**
   * Serves a configuration (a new file, or the cluster changed under the
   * same file): false, with the reason logged, when it cannot be served;
   * then nothing of it was applied.
   */
  apply(config: MeshConfig, why: 'start' | 'file' | 'cluster' = 'file'): boolean {
    let next: Prepared;
    try {
      next = this.prepare(config);
    } catch (err) {
      this.rejected(err, why);
      return false;
    }
    this.commit(next, why);
    return true;
  }

  private commit(next: Prepared, why: 'start' | 'file' | 'cluster'): void {
    this.base = next.base;
    this.tokens = next.tokens;
    this.store = next.store;
    this.routes = next.routes;
    try {
      if (next.store.config.warnings?.length) this.log.warn({ warnings: next.store.config.warnings }, 'policies accepted with warnings');
      if (next.store.config.notes?.length) this.log.info({ notes: next.store.config.notes }, 'policies enforced elsewhere');
      this.xds.update(next.resources);
    } catch (err) {
      // Not expected (update guards each stream); the state is in place, the next change pushes it.
      this.rejected(err, why);
    }
    const served = this.store.config;
    this.log.info(
      { why, workloads: served.workloads.length, services: served.services.length, policies: served.policies.length },
      'configuration applied and pushed',
    );
    if (why === 'file') this.recheckStreams();
  }

  /** Every check and every derived structure, before anything is replaced. */
  private prepare(base: MeshConfig): Prepared {
    const tokens = new NodeTokens(base.controlPlane.tokens);
    const config = this.cluster ? this.cluster.mesh(base) : base;
    const store = new MeshStore(config);
    const routes = routesOf(config);
    const resources = toResources(config, (s) => store.endpoints(s));
    resources.set(TYPE_WAYPOINT, routes ? waypointResources(routes) : new Map());
    return { base, tokens, store, routes, resources };
  }

  private rejected(err: unknown, why: string): void {
    const code: ErrorCode = err instanceof AmbitError ? err.code : 'AMBIT_E_CONFIG';
    const e = err as Error;
    this.log.error(
      { why, code, err: err instanceof AmbitError ? e.message : (e?.stack ?? String(err)) },
      'configuration change rejected; the last good state keeps serving',
    );
  }

  private recheckStreams(): void {
    this.xds.recheck().then(
      (n) => {
        if (n) this.log.info({ closed: n }, 'xDS streams whose token is no longer accepted were closed');
      },
      (err: Error) => this.log.error({ err: err.message }, "re-checking the xDS streams' tokens failed"),
    );
  }

  /** Node and waypoint tokens from the YAML first; in Kubernetes, otherwise a TokenReview of the projected token. */
  private async authenticate(md: grpc.Metadata): Promise<AuthResult> {
    const byYaml = this.tokens.authenticate(md);
    if (!('error' in byYaml) || !this.reviewer) return byYaml;
    return this.reviewer.authenticate(md);
  }

  async stop(): Promise<void> {
    this.unwatch?.();
    clearInterval(this.recheckTimer);
    this.cluster?.stop();
    this.xds.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
