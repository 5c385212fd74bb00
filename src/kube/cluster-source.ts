// The control plane's view of a cluster: every pod, namespace, service,
// EndpointSlice, Gateway, HTTPRoute, GRPCRoute, AuthorizationPolicy, DestinationRule, VirtualService and HTTPLocalRateLimitPolicy,
// kept current by watches, turned into the mesh it serves (workloads,
// services, waypoints, their routes and policies from the API; trust
// domain, CA and more policies from its YAML). Changes are coalesced so a
// rollout of many pods is one push.
// A cluster cannot be refused like a file: what is wrong in one of its
// objects (a label naming a waypoint nobody declares, a route's regular
// expression RE2 would refuse) is a warning naming the object, and that
// object goes unused, as with Istio. Without the Gateway API's or Istio's
// CRDs there are simply none of their objects.
import { EventEmitter } from 'node:events';
import type { Logger } from '../observability/log';
import type { StandaloneConfig } from '../sources/config';
import { compileIstioPolicies, waypointPolicy } from '../sources/istio-crd';
import { isObj } from '../sources/k8s-doc';
import { applyWaypointDocs } from '../sources/standalone-waypoints';
import type { MeshConfig } from '../state/types';
import type { KubeClient } from './client';
import { Informer } from './informer';
import { meshFromCluster } from './mesh';
import type { CheckedObject, EndpointSlice, Gateway, KubeObject, Namespace, Pod, Service } from './types';
import { type ClusterDoc, destinationRuleDocs, policyDocs, rateLimitDocs, routeDocs, virtualServiceDocs, waypointDocs } from './waypoints';

const COALESCE_MS = 100;
const SHOWN_CHARS = 120;

/** "Gateway demo/waypoint", "Namespace demo": how a problem names the object. */
function nameOf(doc: unknown): string | undefined {
  if (!isObj(doc) || !isObj(doc.metadata)) return undefined;
  const { name, namespace } = doc.metadata;
  return doc.kind === 'Namespace' ? `Namespace ${String(name)}` : `${String(doc.kind)} ${String(namespace)}/${String(name)}`;
}

/**
 * Renames "<prefix>[i]" in the readers' texts (with the " (kind ns/name)"
 * or " (ns/name)" the reader adds, and the "." before a field) after the
 * object, since the list behind the index exists only in mesh(); and puts
 * back the index of a reference that was left out before reading. Indices
 * without a doc (the file's policies) are kept as they are.
 */
function namer(prefix: string, docs: readonly (ClusterDoc | undefined)[]): (text: string) => string {
  const re = new RegExp(`${prefix}\\[(\\d+)\\](?: \\([^)]*\\))?([. ])?(?:(spec\\.\\w+)\\[(\\d+)\\])?`, 'g');
  return (text) =>
    text.replace(re, (whole, i: string, sep: string | undefined, field: string | undefined, j: string | undefined) => {
      const d = docs[Number(i)];
      const name = d && nameOf(d.doc);
      if (!name) return whole;
      const ref = field === undefined ? '' : `${field}[${field === d.refs?.field ? (d.refs.kept[Number(j)] ?? j) : j}]`;
      return `${name}${sep ? ' ' : ''}${ref}`;
    });
}

function shown(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? 'nothing';
  } catch {
    s = 'a value that cannot be shown';
  }
  return s.length > SHOWN_CHARS ? `${s.slice(0, SHOWN_CHARS)}…` : s;
}

export class KubeClusterSource extends EventEmitter {
  private readonly pods: Informer<Pod>;
  private readonly namespaces: Informer<Namespace>;
  private readonly services: Informer<Service>;
  private readonly slices: Informer<EndpointSlice>;
  private readonly gateways: Informer<Gateway>;
  private readonly httpRoutes: Informer<CheckedObject>;
  private readonly grpcRoutes: Informer<CheckedObject>;
  private readonly policies: Informer<CheckedObject>;
  private readonly destinationRules: Informer<CheckedObject>;
  private readonly virtualServices: Informer<CheckedObject>;
  private readonly rateLimits: Informer<CheckedObject>;
  private timer?: NodeJS.Timeout;

  constructor(client: KubeClient, log: Logger) {
    super();
    this.pods = new Informer<Pod>(client, '/api/v1/pods', log);
    this.namespaces = new Informer<Namespace>(client, '/api/v1/namespaces', log);
    this.services = new Informer<Service>(client, '/api/v1/services', log);
    this.slices = new Informer<EndpointSlice>(client, '/apis/discovery.k8s.io/v1/endpointslices', log);
    this.gateways = new Informer<Gateway>(client, '/apis/gateway.networking.k8s.io/v1/gateways', log, { optional: true });
    this.httpRoutes = new Informer(client, '/apis/gateway.networking.k8s.io/v1/httproutes', log, { optional: true });
    this.grpcRoutes = new Informer(client, '/apis/gateway.networking.k8s.io/v1/grpcroutes', log, { optional: true });
    this.policies = new Informer(client, '/apis/security.istio.io/v1/authorizationpolicies', log, { optional: true });
    this.destinationRules = new Informer(client, '/apis/networking.istio.io/v1/destinationrules', log, { optional: true });
    this.virtualServices = new Informer(client, '/apis/networking.istio.io/v1/virtualservices', log, { optional: true });
    // Linkerd's CRD: present where Linkerd's policy CRDs are installed; absent, the waypoints limit nothing.
    this.rateLimits = new Informer(client, '/apis/policy.linkerd.io/v1alpha1/httplocalratelimitpolicies', log, { optional: true });
    for (const i of this.all()) {
      i.on('changed', () => {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.emit('changed'), COALESCE_MS);
      });
    }
  }

  async start(): Promise<void> {
    for (const i of this.all()) i.start();
    await Promise.all(this.all().map((i) => i.whenSynced()));
  }

  stop(): void {
    clearTimeout(this.timer);
    for (const i of this.all()) i.stop();
  }

  nodeOfPod(namespace: string, name: string): string | undefined {
    return this.pods.get(`${namespace}/${name}`)?.spec.nodeName;
  }

  /**
   * base with its workloads, services and nodes replaced by the cluster's,
   * its policies and the cluster's converted against them, and the
   * waypoints' routes and L7 policies (the cluster's, and those of the
   * file's policies with targetRefs) compiled for the waypoints to serve.
   */
  mesh(base: MeshConfig): StandaloneConfig {
    const { workloads, services } = meshFromCluster({
      pods: this.pods.list(),
      namespaces: this.namespaces.list(),
      services: this.services.list(),
      slices: this.slices.list(),
    });
    const nodes = [...new Set(workloads.map((w) => w.node).filter(Boolean))].map((name) => ({ name, address: '' }));
    const cfg: MeshConfig = { ...base, nodes, workloads, services, waypoints: [] };
    const gateways = this.gateways.list();
    const filePolicies = base.policyDocs ?? [];
    const clusterPolicies = policyDocs({ policies: this.policies.list(), gateways });
    const docs: ClusterDoc[] = [
      ...waypointDocs({ gateways, namespaces: this.namespaces.list(), services: this.services.list(), mesh: services }).map((doc) => ({
        doc,
      })),
      ...routeDocs({ httpRoutes: this.httpRoutes.list(), grpcRoutes: this.grpcRoutes.list(), gateways }),
      ...filePolicies.filter((d) => waypointPolicy(d) !== undefined).map((doc) => ({ doc })),
      ...clusterPolicies.filter((d) => waypointPolicy(d.doc) !== undefined),
      ...destinationRuleDocs(this.destinationRules.list()),
      ...virtualServiceDocs(this.virtualServices.list()),
      ...rateLimitDocs(this.rateLimits.list()),
    ];
    // Problems name the object, not its place in a list only this function sees.
    const waypointNamed = namer('cluster', docs);
    const waypointProblems: string[] = [];
    const routes = applyWaypointDocs(
      cfg,
      docs.map((d) => d.doc),
      'cluster',
      (at, value, what) => waypointProblems.push(`${waypointNamed(at)}: ${waypointNamed(what)} (got ${shown(value)})`),
    );
    const policyNamed = namer('policies', [...filePolicies.map(() => undefined), ...clusterPolicies]);
    const policyProblems: string[] = [];
    // The file's policies were checked when it was loaded (against its own workloads; selectors now resolve against
    // the cluster's); only the cluster's can be wrong here.
    const compiled = compileIstioPolicies(
      [...filePolicies, ...clusterPolicies.map((d) => d.doc)],
      workloads,
      { rootNamespace: base.rootNamespace || 'istio-system', waypoints: cfg.waypoints, services },
      (at, value, what) => {
        const named = policyNamed(at);
        if (named !== at) policyProblems.push(`${named}: ${policyNamed(what)} (got ${shown(value)})`);
      },
    );
    const routeWarnings = [...routes.warnings.map(waypointNamed), ...waypointProblems];
    return {
      ...cfg,
      policies: compiled.policies,
      warnings: [...compiled.warnings.map(policyNamed), ...routeWarnings, ...policyProblems],
      notes: compiled.notes.map(policyNamed),
      routes: { ...routes, warnings: routeWarnings },
    };
  }

  private all(): Informer<KubeObject>[] {
    return [
      this.pods,
      this.namespaces,
      this.services,
      this.slices,
      this.gateways,
      this.httpRoutes,
      this.grpcRoutes,
      this.policies,
      this.destinationRules,
      this.virtualServices,
      this.rateLimits,
    ] as unknown as Informer<KubeObject>[];
  }
}
