// A node's mesh state when it comes from a control plane: the xDS
// resources plus what only the node knows (its pods' netns and cgroup, its
// own name and trust domain).
import client from 'prom-client';
import { AmbitError } from '../errors';
import type { MeshConfig } from '../state/types';
import type { LocalPod, LocalPodSource } from './local-pods';
import type { StateSource } from './state-source';
import type { XdsClient, XdsState } from './xds-client';

export interface NodeFacts {
  node: string;
  trustDomain: string;
}

export function meshFromXds(state: XdsState, facts: NodeFacts, pods: Map<string, LocalPod>): MeshConfig {
  const workloads = state.workloads.map((w) => {
    const local = w.node === facts.node ? pods.get(w.uid) : undefined;
    return local ? { ...w, netns: local.netns, cgroup: local.cgroup } : w;
  });
  const nodes = [...new Set([facts.node, ...workloads.map((w) => w.node).filter(Boolean)])];
  return {
    trustDomain: facts.trustDomain,
    ca: { dir: '' }, // certificates come from the control plane's CA
    nodes: nodes.map((name) => ({ name, address: '' })),
    workloads,
    services: state.services,
    policies: state.policies,
    rootNamespace: '',
    controlPlane: { tokens: [] },
  };
}

/**
 * The node's live state from xDS: the first full sync, then every accepted
 * change — of the control plane's resources or of where the node's pods are.
 */
export class XdsMeshSource implements StateSource {
  readonly waitingFor: string;

  constructor(
    private readonly client: XdsClient,
    private readonly facts: NodeFacts,
    private readonly pods: LocalPodSource,
    /** The control plane's address (logs, config dump). */
    readonly name: string,
    /** The first full sync must arrive within this time. */
    private readonly syncTimeoutMs = 10 * 60_000,
  ) {
    this.waitingFor = `first full xDS sync from ${name}`;
  }

  /** For the config dump: is the stream up, and what has been accepted and refused. */
  status(): Record<string, unknown> {
    const c = this.client;
    return { xds: this.name, connected: c.connected, synced: c.isSynced, maxReceiveBytes: c.maxReceiveBytes, ...c.stats };
  }

  /** ambit_xds_connected and ambit_xds_responses_total{result}, read on scrape. */
  registerMetrics(registry: client.Registry): void {
    const c = this.client;
    new client.Gauge({
      name: 'ambit_xds_connected',
      help: '1 while the xDS stream to the control plane is up',
      registers: [registry],
      collect() {
        this.set(c.connected ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'ambit_xds_responses',
      help: 'xDS responses accepted (ack) and rejected (nack) since start',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        this.set({ result: 'ack' }, c.stats.acks);
        this.set({ result: 'nack' }, c.stats.nacks);
      },
    });
  }

  async initial(): Promise<MeshConfig> {
    this.client.start();
    await this.client.whenSynced(this.syncTimeoutMs);
    return this.mesh();
  }

  private mesh(): MeshConfig {
    return meshFromXds(this.client.state(), this.facts, this.pods.current());
  }

  watch(onValid: (cfg: MeshConfig) => void, onInvalid: (err: AmbitError) => void): () => void {
    const onChanged = (): void => onValid(this.mesh());
    const onRejected = (why: string): void =>
      onInvalid(new AmbitError('AMBIT_E_XDS', why, 'the control plane sent an invalid resource; it was rejected (NACK)'));
    this.client.on('changed', onChanged);
    this.client.on('rejected', onRejected);
    this.pods.on('changed', onChanged);
    this.pods.on('invalid', onInvalid);
    return () => {
      this.client.off('changed', onChanged);
      this.client.off('rejected', onRejected);
      this.pods.off('changed', onChanged);
      this.pods.off('invalid', onInvalid);
      this.pods.stop();
      this.client.stop();
    };
  }
}
