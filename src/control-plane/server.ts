// `ambit control-plane`: the mesh served to every node agent as delta xDS,
// plus the CA, on one TLS gRPC server (port 15012 by default, as istiod).
// The mesh is the standalone YAML, or with Kubernetes the cluster's pods,
// services and EndpointSlices plus the YAML's trust domain, CA and
// policies. Node agents authenticate with bearer tokens listed (hashed) in
// the YAML or, in Kubernetes, their projected tokens (TokenReview);
// certificates are issued only for identities of workloads placed on the
// asking node. Only what changed is pushed; an invalid file change is
// logged and the last good state keeps serving.
import * as grpc from '@grpc/grpc-js';
import { AmbitError } from '../errors';
import { BuiltinCa } from '../identity/builtin-ca';
import type { Logger } from '../observability/log';
import { grpcServices } from '../protocol/protos';
import { loadConfigFile, parseConfig } from '../state/config';
import { watchParsedFile } from '../state/file-source';
import { MeshStore } from '../state/store';
import type { MeshConfig } from '../state/types';
import { toResources } from '../state/xds-resources';
import { caServiceHandlers } from './ca-service';
import { serverCredentials } from './tls';
import { NodeTokens } from './tokens';
import type { CertificateAuthority } from '../identity/ca';
import type { KubeClient } from '../kube/client';
import { KubeClusterSource } from '../kube/cluster-source';
import { TokenReviewer } from './token-review';
import { XdsServer, type AuthResult } from './xds-server';

export const DEFAULT_LISTEN = '0.0.0.0:15012';

export interface ControlPlaneOptions {
  configFile: string;
  listen?: string;
  /** Names the server certificate carries (clients verify one of them). */
  names?: { dns: string[]; ips: string[] };
  /** What signs certificates; the built-in CA in the YAML's ca.dir by default (tests swap a misbehaving one in). */
  signer?: CertificateAuthority;
  /** Workloads and services from this API server instead of the YAML. */
  kube?: KubeClient;
  log: Logger;
}

export class ControlPlane {
  private tokens: NodeTokens;
  private unwatch?: () => void;
  private cluster?: KubeClusterSource;
  private reviewer?: TokenReviewer;
  /** The file's configuration; what is served adds the cluster's workloads to it. */
  private base: MeshConfig;

  private constructor(
    private store: MeshStore,
    readonly ca: BuiltinCa,
    readonly xds: XdsServer,
    private readonly server: grpc.Server,
    readonly port: number,
    private readonly log: Logger,
  ) {
    this.tokens = new NodeTokens(store.config.controlPlane.tokens);
    this.base = store.config;
  }

  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const { log } = opts;
    const config = loadConfigFile(opts.configFile);
    const ca = await BuiltinCa.open(config.ca.dir);
    const tls = await serverCredentials(ca, opts.names ?? { dns: [], ips: [] });
    // Late-bound: the token list and the workload placement follow the file.
    let self: ControlPlane | undefined;
    const authenticate = (md: grpc.Metadata): Promise<AuthResult> => self!.authenticate(md);
    const xds = new XdsServer(authenticate, log.child({ component: 'xds' }));
    const server = new grpc.Server({ 'grpc.keepalive_permit_without_calls': 1 });
    const { ads, ca: caService } = grpcServices();
    server.addService(ads.service, xds.handlers());
    server.addService(caService.service, caServiceHandlers({
      ca: opts.signer ?? ca,
      tokens: { authenticate },
      identitiesOn: (node) => self!.identitiesOn(node),
      log: log.child({ component: 'ca' }),
    }));
    const listen = opts.listen ?? DEFAULT_LISTEN;
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(tls.rootPem), [{ cert_chain: Buffer.from(tls.certPem), private_key: Buffer.from(tls.keyPem) }], false);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync(listen, creds, (err, p) => (err
      ? reject(new AmbitError('AMBIT_E_CONFIG', `cannot listen on ${listen}: ${err.message}`, 'is another control plane (or istiod) on that port? pass --listen HOST:PORT'))
      : resolve(p))));
    self = new ControlPlane(new MeshStore(config), ca, xds, server, port, log);
    const cp = self;
    if (opts.kube) {
      const cluster = new KubeClusterSource(opts.kube, log.child({ component: 'kubernetes' }));
      await cluster.start();
      cp.cluster = cluster;
      cp.reviewer = new TokenReviewer(opts.kube, { nodeOfPod: (ns, name) => cluster.nodeOfPod(ns, name), log });
      cluster.on('changed', () => cp.refresh());
    }
    cp.refresh();
    cp.unwatch = watchParsedFile(opts.configFile, parseConfig, (cfg) => cp.apply(cfg), (err) => log.error({ file: opts.configFile, code: err.code, err: err.message }, 'configuration change rejected; the last good state keeps serving'));
    const served = cp.config;
    log.info({ listen, port, kubernetes: opts.kube?.server, workloads: served.workloads.length, services: served.services.length, policies: served.policies.length }, 'control plane serving xDS and the CA');
    return cp;
  }

  get config(): MeshConfig { return this.store.config; }

  /** SPIFFE identities of the workloads placed on node: the only ones its agent may ask for. */
  identitiesOn(node: string): Set<string> {
    return new Set(this.store.workloadsOn(node).filter((w) => w.protocol === 'HBONE').map((w) => this.store.identityOf(w)));
  }

  /** A new configuration file. */
  apply(config: MeshConfig): void {
    this.base = config;
    this.tokens = new NodeTokens(config.controlPlane.tokens);
    this.refresh();
  }

  /** Node tokens from the YAML first; in Kubernetes, otherwise a TokenReview of the projected token. */
  private async authenticate(md: grpc.Metadata): Promise<AuthResult> {
    const byYaml = this.tokens.authenticate(md);
    if (!('error' in byYaml) || !this.reviewer) return byYaml;
    return this.reviewer.authenticate(md);
  }

  /** Serves the file's configuration (plus the cluster's workloads): only the difference is pushed. */
  private refresh(): void {
    const config = this.cluster ? this.cluster.mesh(this.base) : this.base;
    this.store = new MeshStore(config);
    this.publish(config);
    this.log.info({ workloads: config.workloads.length, services: config.services.length, policies: config.policies.length }, 'configuration applied and pushed');
  }

  async stop(): Promise<void> {
    this.unwatch?.();
    this.cluster?.stop();
    this.xds.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }

  private publish(config: MeshConfig): void {
    if (config.warnings?.length) this.log.warn({ warnings: config.warnings }, 'policies accepted with warnings');
    this.xds.update(toResources(config, (s) => this.store.endpoints(s)));
  }
}
