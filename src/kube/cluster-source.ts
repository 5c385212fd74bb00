// The control plane's view of a cluster: every pod, namespace, service and
// EndpointSlice, kept current by watches, turned into the mesh it serves
// (workloads and services from the API; trust domain, CA and policies from
// its YAML). Changes are coalesced so a rollout of many pods is one push.
import { EventEmitter } from 'node:events';
import type { Logger } from '../observability/log';
import { compileIstioPolicies } from '../sources/istio-crd';
import type { MeshConfig } from '../state/types';
import type { KubeClient } from './client';
import { Informer } from './informer';
import { meshFromCluster } from './mesh';
import type { EndpointSlice, KubeObject, Namespace, Pod, Service } from './types';

const COALESCE_MS = 100;

export class KubeClusterSource extends EventEmitter {
  private readonly pods: Informer<Pod>;
  private readonly namespaces: Informer<Namespace>;
  private readonly services: Informer<Service>;
  private readonly slices: Informer<EndpointSlice>;
  private timer?: NodeJS.Timeout;

  constructor(client: KubeClient, log: Logger) {
    super();
    this.pods = new Informer<Pod>(client, '/api/v1/pods', log);
    this.namespaces = new Informer<Namespace>(client, '/api/v1/namespaces', log);
    this.services = new Informer<Service>(client, '/api/v1/services', log);
    this.slices = new Informer<EndpointSlice>(client, '/apis/discovery.k8s.io/v1/endpointslices', log);
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
    // The YAML's policies were valid against its own workloads; selectors now resolve against the cluster's.
    const compiled = compileIstioPolicies(
      base.policyDocs ?? [],
      workloads,
      { rootNamespace: base.rootNamespace || 'istio-system' },
      () => undefined,
    );
    const nodes = [...new Set(workloads.map((w) => w.node).filter(Boolean))].map((name) => ({ name, address: '' }));
    return { ...base, nodes, workloads, services, policies: compiled.policies, warnings: compiled.warnings };
  }

  private all(): Informer<KubeObject>[] {
    return [this.pods, this.namespaces, this.services, this.slices] as unknown as Informer<KubeObject>[];
  }
}
