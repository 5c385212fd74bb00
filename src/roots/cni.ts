// The node agent's answer to the CNI plugin: is this new pod in the mesh,
// and if so, enrol it now — before any of its containers starts — and say
// so only once its capture is on. Membership is decided as the pod agent
// decides it: a workload of this node (by namespace/name, or by one of its
// addresses for a sandbox the runtime does not name) that is ambient and
// speaks HBONE. A pod the state does not know is not in the mesh (it is
// answered "skip" and starts untouched).
//
// What the runtime told us survives an agent restart: the placements are
// kept in <socket>.pods.json and handed to the next agent's first
// reconcile, so a pod enrolled by CNI is enrolled again (with the same pod
// id) instead of being swept away as stale. The members file beside the
// socket is what the plugin reads while the agent is down.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { type CniMembers, type CniReply, type CniRequest, membersFileOf } from '../cni/protocol';
import { CniServer } from '../cni/server';
import { AmbitError } from '../errors';
import type { PodCgroupLookup } from '../kube/pod-cgroup';
import type { Logger } from '../observability/log';
import type { Workload } from '../state/types';
import { capturedByNode, type Placement, type PodAgent } from './pod-agent';

interface PlacedSandbox extends Placement {
  /** The workload uid the sandbox was enrolled as. */
  workload: string;
}

/** <socket>.pods.json: the sandboxes enrolled through CNI, by container id. */
export const placementsFileOf = (socket: string): string => `${socket.replace(/\.sock$/, '')}.pods.json`;

/**
 * The sandboxes an earlier agent enrolled through CNI whose netns still
 * exists, by container id; the pod agent starts from their placements.
 */
export function loadPlacements(socket: string, log: Logger): Map<string, PlacedSandbox> {
  const file = placementsFileOf(socket);
  let doc: Record<string, PlacedSandbox>;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, PlacedSandbox>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn({ file, err: (err as Error).message }, 'CNI placements unreadable; ignored');
    return new Map();
  }
  const kept = new Map<string, PlacedSandbox>();
  for (const [id, p] of Object.entries(doc)) {
    if (typeof p?.workload === 'string' && typeof p.netns === 'string' && fs.existsSync(p.netns)) kept.set(id, p);
  }
  return kept;
}

/** The placements by workload uid, as the pod agent takes them. */
export const byWorkload = (sandboxes: ReadonlyMap<string, PlacedSandbox>): Map<string, Placement> =>
  new Map([...sandboxes.values()].map(({ workload, netns, cgroup, addresses }) => [workload, { netns, cgroup, addresses }]));

export interface CniEndpointOptions {
  agent: PodAgent;
  node: string;
  socket: string;
  /** Where a pod's cgroup is, by its Kubernetes uid. */
  cgroupOf: PodCgroupLookup;
  /** What loadPlacements found. */
  sandboxes: Map<string, PlacedSandbox>;
  log: Logger;
}

/** Starts answering the plugin on the socket; the members file follows the state from now on. */
export async function serveCni(o: CniEndpointOptions): Promise<CniServer> {
  const { agent, node, log, sandboxes } = o;
  const mine = (): Workload[] => agent.store.workloadsOn(node).filter((w) => w.dataplane === 'ambient');
  const persist = (): void => writeAtomic(placementsFileOf(o.socket), JSON.stringify(Object.fromEntries(sandboxes)));
  let lastMembers = '';
  const writeMembers = (): void => {
    const pods = mine()
      .filter(capturedByNode)
      .map((w) => ({ namespace: w.namespace, name: w.name, addresses: w.addresses }));
    const text = JSON.stringify(pods);
    if (text === lastMembers) return;
    try {
      writeAtomic(membersFileOf(o.socket), JSON.stringify({ node, written: new Date().toISOString(), pods } satisfies CniMembers));
      lastMembers = text;
    } catch (err) {
      log.error({ err: (err as Error).message }, 'CNI members file could not be written');
    }
  };
  writeMembers();
  agent.onReconciled(writeMembers);

  const add = async (req: CniRequest): Promise<CniReply> => {
    const started = Date.now();
    const ws = mine();
    // A pod the runtime names is that workload or none: matched by address as well, a new pod given
    // an address the state still holds for another (stale, or reused) would be enrolled as that one,
    // with its identity. Only a sandbox that comes unnamed is known by its address.
    const w = req.pod
      ? ws.find((x) => x.namespace === req.pod?.namespace && x.name === req.pod?.name)
      : ws.find((x) => x.addresses.some((a) => req.addresses.includes(a)));
    const who = req.pod ? `${req.pod.namespace}/${req.pod.name}` : `sandbox ${req.containerId}`;
    const skip = (reason: string): CniReply => {
      // With --kubernetes a new pod is not in the state yet (no address): the locator enrols it later.
      log.info({ pod: who, containerId: req.containerId, reason }, 'pod left alone at CNI ADD');
      return { result: 'skip', reason };
    };
    if (!w) return skip(`${who} is not an ambient workload of node ${node}`);
    if (!capturedByNode(w)) return skip(`workload ${w.uid} is not captured by the node (protocol ${w.protocol})`);
    if (!req.pod?.uid)
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `${who} is in the mesh but the runtime gave no K8S_POD_UID`,
        'the pod cgroup is found by its uid',
      );
    const cgroup = o.cgroupOf(req.pod.uid);
    if (!cgroup)
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `no cgroup of pod ${who} (uid ${req.pod.uid}) under the pods cgroup`,
        'the kubelet creates pod<uid> (cgroupfs) or kubepods-…-pod<uid>.slice (systemd) before the sandbox; check --pods-cgroup',
      );
    if (!fs.existsSync(req.netns))
      throw new AmbitError('AMBIT_E_ENROL', `netns ${req.netns} of ${who} does not exist`, 'CNI_NETNS must be the sandbox netns path');
    const addresses = req.addresses.filter((a) => net.isIPv4(a));
    const r = await agent.place(w.uid, { netns: req.netns, cgroup, addresses });
    if (!r.enrolled) {
      // The runtime fails the sandbox and makes a new one: this netns is not to be retried.
      await agent.unplace(w.uid);
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `pod ${who} (workload ${w.uid}) could not be enrolled: ${r.why}`,
        'the agent log has the details',
      );
    }
    for (const [id, s] of sandboxes) if (s.workload === w.uid) sandboxes.delete(id);
    sandboxes.set(req.containerId, { workload: w.uid, netns: req.netns, cgroup, addresses });
    persist();
    log.info(
      { pod: w.uid, containerId: req.containerId, podId: r.podId, netns: req.netns, cgroup, ms: Date.now() - started },
      'pod enrolled at CNI ADD',
    );
    return { result: 'enrolled', workload: w.uid };
  };

  const del = async (req: CniRequest): Promise<CniReply> => {
    const s = sandboxes.get(req.containerId);
    if (!s) return { result: 'skip', reason: `sandbox ${req.containerId} was not enrolled through CNI` };
    sandboxes.delete(req.containerId);
    persist();
    await agent.unplace(s.workload);
    log.info({ pod: s.workload, containerId: req.containerId }, 'pod released at CNI DEL');
    return { result: 'unenrolled', workload: s.workload };
  };

  const check = async (req: CniRequest): Promise<CniReply> => {
    const s = sandboxes.get(req.containerId);
    if (!s) return { result: 'skip', reason: `sandbox ${req.containerId} was not enrolled through CNI` };
    if (!agent.enrolment.list().some((p) => p.workload.uid === s.workload))
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `workload ${s.workload} of sandbox ${req.containerId} is not enrolled`,
        'see the readiness endpoint',
      );
    return { result: 'enrolled', workload: s.workload };
  };

  const server = await CniServer.listen({
    socket: o.socket,
    handle: (req) => (req.command === 'ADD' ? add(req) : req.command === 'DEL' ? del(req) : check(req)),
    log: (fields, msg) => log.warn(fields, msg),
  });
  log.info({ socket: o.socket, placed: sandboxes.size }, 'CNI socket listening');
  return server;
}

/** Written whole or not at all: the plugin may read it at any moment. */
function writeAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
