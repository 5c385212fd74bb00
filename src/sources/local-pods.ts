// Node-local facts about pods that no control plane knows: where each pod's
// network namespace and cgroup v2 directory are on this node. In
// standalone mode they sit in the YAML's workload entries; with xDS they
// come from a small file the node reads (and re-reads when it changes):
//
//   pods:
//     - { uid: default/pod-a, netns: /var/run/netns/pod-a, cgroup: /sys/fs/cgroup/kubepods/pod-a }
//
// A standalone configuration file is accepted too (its workloads' uid,
// netns and cgroup are used), so one file can serve both. On a Kubernetes
// node the agent finds them itself (src/kube/node-pods.ts).
import { EventEmitter } from 'node:events';
import { AmbitError } from '../errors';
import { readTextFile, watchParsedFile } from './file-source';
import { checkKeys } from './schema';
import { parseYamlBounded } from './yaml-bounded';

export interface LocalPod {
  uid: string;
  netns: string;
  cgroup: string;
}

/** Where the node's pods are, kept current: emits 'changed' and 'invalid' (an AmbitError). */
export interface LocalPodSource extends EventEmitter {
  current(): Map<string, LocalPod>;
  stop(): void;
}

/** The pods file, re-read when it changes; an invalid change is reported and the last good list kept. */
export class LocalPodsFile extends EventEmitter implements LocalPodSource {
  private pods: Map<string, LocalPod>;
  readonly stop: () => void;

  constructor(file: string) {
    super();
    this.pods = loadLocalPods(file);
    this.stop = watchParsedFile(
      file,
      parseLocalPods,
      (pods) => {
        this.pods = pods;
        this.emit('changed');
      },
      (err) => this.emit('invalid', err),
    );
  }

  current(): Map<string, LocalPod> {
    return this.pods;
  }
}

/** No node-local facts (a node with no pods of its own to serve, or one that finds none). */
export class NoLocalPods extends EventEmitter implements LocalPodSource {
  current(): Map<string, LocalPod> {
    return new Map();
  }
  stop(): void {
    /* nothing to watch */
  }
}

export function parseLocalPods(text: string, source: string): Map<string, LocalPod> {
  // The same size, depth and alias bounds as the mesh configuration.
  const doc = parseYamlBounded(text, source);
  const o = (doc !== null && typeof doc === 'object' ? doc : {}) as Record<string, unknown>;
  const key = Array.isArray(o.pods) ? 'pods' : 'workloads';
  const list = o[key];
  if (!Array.isArray(list))
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `${source}: pods must be a list of { uid, netns, cgroup }`,
      'see "Pods on this node" in the README',
    );
  const problems: string[] = [];
  const pods = new Map<string, LocalPod>();
  for (const [i, p] of (list as Record<string, unknown>[]).entries()) {
    const at = `${key}[${i}]`;
    // A typo (`cgroups:`) must not leave a pod silently unlocated; standalone workloads are checked by parseConfig.
    if (key === 'pods' && p !== null && typeof p === 'object')
      checkKeys((where, v, what) => problems.push(`${where}: ${what} (got ${JSON.stringify(v)})`), p, ['uid', 'netns', 'cgroup'], at);
    if (typeof p?.uid !== 'string' || !p.uid) {
      problems.push(`${at}.uid: must be the workload uid the control plane uses (got ${JSON.stringify(p?.uid)})`);
      continue;
    }
    if (typeof p.netns !== 'string' || typeof p.cgroup !== 'string') {
      if (key === 'pods') problems.push(`${at}: netns and cgroup must be paths (got ${JSON.stringify([p.netns, p.cgroup])})`);
      continue; // a standalone workload hosted elsewhere has neither
    }
    pods.set(p.uid, { uid: p.uid, netns: p.netns, cgroup: p.cgroup });
  }
  if (problems.length)
    throw new AmbitError('AMBIT_E_CONFIG', `${source} is invalid:\n  - ${problems.join('\n  - ')}`, 'fix the entries named above');
  return pods;
}

export function loadLocalPods(file: string): Map<string, LocalPod> {
  return parseLocalPods(readTextFile(file, '--pods'), file);
}
