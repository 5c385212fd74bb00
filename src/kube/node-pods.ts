// A Kubernetes node's own pods, found by the agent itself: the API server
// says which pods run here and which are in the mesh (labels on the pod or
// its namespace); the node's /proc says where each one's netns and cgroup
// are. A pod is offered for enrolment only once a process of it exists
// (its sandbox is up), so its capture never comes on before its sockets
// can; until then it is re-looked for every second. A pod whose sandbox is
// replaced gets a status update from the kubelet, which triggers a new
// look; a slow check every few seconds catches what no event announces.
import { EventEmitter } from 'node:events';
import type { Logger } from '../observability/log';
import type { LocalPod, LocalPodSource } from '../sources/local-pods';
import type { KubeClient } from './client';
import { Informer } from './informer';
import { inMesh, isLive, podUid } from './mesh';
import type { PodLocator } from './pod-locator';
import type { Namespace, Pod } from './types';

const RELOOK_MS = 1000;
const RECHECK_MS = 5000;

export class KubeNodePods extends EventEmitter implements LocalPodSource {
  private readonly pods: Informer<Pod>;
  private readonly namespaces: Informer<Namespace>;
  private located = new Map<string, LocalPod>();
  private fingerprint = '';
  private timer?: NodeJS.Timeout;
  private recheck?: NodeJS.Timeout;

  constructor(
    client: KubeClient,
    private readonly node: string,
    private readonly locator: PodLocator,
    private readonly log: Logger,
  ) {
    super();
    this.pods = new Informer<Pod>(client, `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${node}`)}`, log);
    this.namespaces = new Informer<Namespace>(client, '/api/v1/namespaces', log);
    for (const i of [this.pods, this.namespaces]) i.on('changed', () => this.refresh());
  }

  async start(): Promise<void> {
    this.pods.start();
    this.namespaces.start();
    await Promise.all([this.pods.whenSynced(), this.namespaces.whenSynced()]);
    this.refresh();
    this.recheck = setInterval(() => this.refresh(), RECHECK_MS).unref();
  }

  current(): Map<string, LocalPod> {
    return this.located;
  }

  stop(): void {
    clearTimeout(this.timer);
    clearInterval(this.recheck);
    this.pods.stop();
    this.namespaces.stop();
  }

  private wanted(): Pod[] {
    return this.pods
      .list()
      .filter((p) => p.spec.nodeName === this.node && isLive(p) && inMesh(p, this.namespaces.get(`/${p.metadata.namespace}`)));
  }

  private refresh(): void {
    if (!this.pods.synced || !this.namespaces.synced) return;
    clearTimeout(this.timer);
    const wanted = this.wanted();
    const where = this.locator.locate(new Set(wanted.map((p) => p.metadata.uid)));
    const located = new Map<string, LocalPod>();
    for (const p of wanted) {
      const at = where.get(p.metadata.uid);
      if (at) located.set(podUid(p), { uid: podUid(p), netns: at.netns, cgroup: at.cgroup });
    }
    const fingerprint = JSON.stringify([...located.values()]);
    if (fingerprint !== this.fingerprint) {
      this.fingerprint = fingerprint;
      this.located = located;
      this.log.info({ pods: [...located.keys()], waiting: wanted.length - located.size }, 'node pods located');
      this.emit('changed');
    }
    if (located.size < wanted.length) this.timer = setTimeout(() => this.refresh(), RELOOK_MS);
  }
}
