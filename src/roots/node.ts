// `ambit node`: the composition root of a node agent. It picks the state
// source (the standalone file, or a control plane's xDS with the pods found
// through --pods or Kubernetes), the CA (built-in, or the control plane's),
// and the data plane (tunnel workers, one per core by default), and hands
// them to the shared serving life in ./serve.ts.

import { cgroup2Root } from '../datapath/probe';
import { AmbitError } from '../errors';
import type { IstioCaClient } from '../identity/ca-client';
import { KubeClient } from '../kube/client';
import { KubeNodePods } from '../kube/node-pods';
import { cgroupLookupUnder } from '../kube/pod-cgroup';
import { PodLocator } from '../kube/pod-locator';
import { createLogger, type Logger } from '../observability/log';
import { type LocalPodSource, LocalPodsFile, NoLocalPods } from '../sources/local-pods';
import { configFileSource, type StateSource } from '../sources/state-source';
import type { XdsMeshSource } from '../sources/xds-mesh';
import { byWorkload, loadPlacements, serveCni } from './cni';
import type { PodAgent } from './pod-agent';
import { type ServingSettings, serve, servedBy } from './serve';
import { instanceIp, readXdsRoot } from './xds-dial';

/** A control plane to take state and certificates from (`--xds`). */
export interface XdsSettings {
  address: string;
  /** The file with the control plane's root certificate. */
  rootFile: string;
  tokenFile?: string;
  serverName?: string;
  trustDomain: string;
  clusterId?: string;
  maxReceiveBytes?: number;
}

/** Where the node's pods are when the state comes from xDS. */
export type PodFacts = { file: string } | { kubernetes: { api?: string; proc: string } } | 'none';

export interface NodeSettings extends ServingSettings {
  node: string;
  state: { file: string } | { xds: XdsSettings; pods: PodFacts };
  /** The unix socket the ambit-cni plugin asks to enrol new pods on; none: no CNI. */
  cniSocket?: string;
}

export async function runNode(s: NodeSettings): Promise<PodAgent> {
  const log = createLogger();
  const xds = 'xds' in s.state ? await xdsState(s.state.xds, s.state.pods, s.node, log) : undefined;
  const source: StateSource = xds?.source ?? configFileSource((s.state as { file: string }).file);
  const sandboxes = s.cniSocket ? loadPlacements(s.cniSocket, log) : undefined;
  const app = await serve({
    role: 'node agent',
    source,
    agent: {
      scope: { node: s.node },
      ca: xds?.ca,
      // With CNI a pod's netns and cgroup may come from the runtime: until then it waits.
      podsLocatedSeparately: !!xds || !!s.cniSocket,
      placements: sandboxes && byWorkload(sandboxes),
      ...servedBy(s),
    },
    drainMs: s.drainMs,
    summary: { node: s.node, mode: s.mode, workers: s.workers, limits: s.limits, probeSources: s.probeSources },
    log,
  });
  if (s.cniSocket && sandboxes) {
    // Under the pods cgroup, where the kubelet has made the pod's cgroup by the time it runs the plugin.
    const root = s.podsCgroup ?? cgroup2Root();
    if (!root)
      throw new AmbitError('AMBIT_E_MOUNT', 'no cgroup v2 mount: CNI pods cannot be located', 'mount cgroup2 or give --pods-cgroup');
    await serveCni({
      agent: app,
      node: s.node,
      socket: s.cniSocket,
      cgroupOf: cgroupLookupUnder(root),
      sandboxes,
      log: log.child({ component: 'cni' }),
    });
  }
  return app;
}

/** State from a control plane's delta xDS, certificates from its CA. */
async function xdsState(
  x: XdsSettings,
  podFacts: PodFacts,
  nodeName: string,
  log: Logger,
): Promise<{ source: XdsMeshSource; ca: IstioCaClient }> {
  const rootsPem = readXdsRoot(x.rootFile);
  // gRPC and protobuf are loaded only here: a standalone agent does without them.
  const [{ nodeMessage, XdsClient }, { XdsMeshSource }, { IstioCaClient }] = await Promise.all([
    import('../sources/xds-client'),
    import('../sources/xds-mesh'),
    import('../identity/ca-client'),
  ]);
  const ip = instanceIp();
  const node = nodeMessage({
    nodeName,
    ip,
    podName: process.env.POD_NAME ?? `ambit-${nodeName}`,
    podNamespace: process.env.POD_NAMESPACE ?? 'ambit-system',
  });
  const { address, serverName, tokenFile, trustDomain } = x;
  const client = new XdsClient({ address, rootsPem, serverName, tokenFile, node, trustDomain, maxReceiveBytes: x.maxReceiveBytes, log });
  const pods = await localPods(podFacts, nodeName, log);
  const ca = new IstioCaClient({ address, rootsPem, serverName, tokenFile, clusterId: x.clusterId });
  return { source: new XdsMeshSource(client, { node: nodeName, trustDomain }, pods, address), ca };
}

async function localPods(facts: PodFacts, nodeName: string, log: Logger): Promise<LocalPodSource> {
  if (facts === 'none') return new NoLocalPods();
  if ('file' in facts) return new LocalPodsFile(facts.file);
  // This node's pods from the API server, located in the host's /proc.
  const root = cgroup2Root();
  if (!root)
    throw new AmbitError('AMBIT_E_MOUNT', 'no cgroup v2 mount: pods cannot be located', 'mount cgroup2 (the kubelet needs it too)');
  const locator = new PodLocator(facts.kubernetes.proc, root);
  const pods = new KubeNodePods(KubeClient.inCluster(facts.kubernetes.api), nodeName, locator, log.child({ component: 'kubernetes' }));
  await pods.start();
  return pods;
}
