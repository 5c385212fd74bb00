// The control plane's view of a cluster: every pod, namespace, service,
// EndpointSlice and Gateway, kept current by watches, turned into the mesh
// it serves (workloads, services and waypoints from the API; trust domain,
// CA and policies from its YAML). Changes are coalesced so a rollout of many
// pods is one push.
// A cluster cannot be refused like a file: what is wrong in its waypoint
// objects (a label naming a waypoint nobody declares) is a warning, and the
// service or workload goes without a waypoint, as with Istio. Without the
// Gateway API's CRDs there are simply no waypoints.
import { EventEmitter } from 'node:events';
import type { Logger } from '../observability/log';
import { compileIstioPolicies, waypointPolicy } from '../sources/istio-crd';
import { applyWaypointDocs } from '../sources/standalone-waypoints';
import type { MeshConfig } from '../state/types';
import type { KubeClient } from './client';
import { Informer } from './informer';
import { meshFromCluster } from './mesh';
import type { EndpointSlice, Gateway, KubeObject, Namespace, Pod, Service } from './types';
import { waypointDocs } from './waypoints';

const COALESCE_MS = 100;

/** "cluster[3] (Gateway demo/waypoint) spec…" → "Gateway demo/waypoint spec…"; a namespace is named once. */
const objectOf = (at: string): string =>
  at.replace(/^cluster\[\d+\] \(([^)]*)\)/, (_, o: string) => o.replace(/^Namespace ([^/]+)\/\1$/, 'Namespace $1'));

export class KubeClusterSource extends EventEmitter {
  private readonly pods: Informer<Pod>;
  private readonly namespaces: Informer<Namespace>;
  private readonly services: Informer<Service>;
  private readonly slices: Informer<EndpointSlice>;
  private readonly gateways: Informer<Gateway>;
  private timer?: NodeJS.Timeout;

  constructor(client: KubeClient, log: Logger) {
    super();
    this.pods = new Informer<Pod>(client, '/api/v1/pods', log);
    this.namespaces = new Informer<Namespace>(client, '/api/v1/namespaces', log);
    this.services = new Informer<Service>(client, '/api/v1/services', log);
    this.slices = new Informer<EndpointSlice>(client, '/apis/discovery.k8s.io/v1/endpointslices', log);
    this.gateways = new Informer<Gateway>(client, '/apis/gateway.networking.k8s.io/v1/gateways', log, { optional: true });
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

  /** base with its workloads, services and nodes replaced by the cluster's, and its policies converted against them. */
  mesh(base: MeshConfig): MeshConfig {
    const { workloads, services } = meshFromCluster({
      pods: this.pods.list(),
      namespaces: this.namespaces.list(),
      services: this.services.list(),
      slices: this.slices.list(),
    });
    const nodes = [...new Set(workloads.map((w) => w.node).filter(Boolean))].map((name) => ({ name, address: '' }));
    const cfg: MeshConfig = { ...base, nodes, workloads, services, waypoints: [] };
    // Problems name the object, not its place in a list only this function sees.
    const problems: string[] = [];
    const docs = [
      ...waypointDocs({
        gateways: this.gateways.list(),
        namespaces: this.namespaces.list(),
        services: this.services.list(),
        mesh: services,
      }),
      ...(base.policyDocs ?? []).filter((d) => waypointPolicy(d) !== undefined),
    ];
    const waypoints = applyWaypointDocs(cfg, docs, 'cluster', (at, value, what) =>
      problems.push(`${objectOf(at)}: ${what} (got ${JSON.stringify(value) ?? 'nothing'})`),
    );
    // The YAML's policies were valid against its own workloads; selectors now resolve against the cluster's.
    const compiled = compileIstioPolicies(
      base.policyDocs ?? [],
      workloads,
      { rootNamespace: base.rootNamespace || 'istio-system', waypoints: cfg.waypoints, services },
      () => undefined,
    );
    return {
      ...cfg,
      policies: compiled.policies,
      warnings: [...compiled.warnings, ...waypoints.warnings, ...problems],
      notes: compiled.notes,
    };
  }

  private all(): Informer<KubeObject>[] {
    return [this.pods, this.namespaces, this.services, this.slices, this.gateways] as unknown as Informer<KubeObject>[];
  }
}
