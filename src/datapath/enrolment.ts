// Enrol and unenrol pods. Capture is switched on last and off first, so a
// pod is never steered to a socket that does not listen yet:
//   enrol:   listeners in the pod netns → sockmap slots → sk_lookup link
//            → pod address (inbound on) → cgroup (outbound on)
//   unenrol: the same steps in reverse.
// The pod id (the kernel's name for a pod) is kept in the pinned
// enrolled_cgroups map, so a restarted agent gives a pod the same id.
import fs from 'node:fs';
import { AmbitError } from '../errors';
import type { Workload } from '../state/types';
import { libcFns } from './ffi';
import type { Datapath } from './loader';
import { MAX_PODS, ROLE_HBONE, ROLE_PLAIN } from './maps';
import { Netns } from './netns';
import { LISTEN_ADDRESSES, type PerRole, ROLES } from './ports';

/**
 * The pod's listening sockets, as raw fds owned by the agent for as long as
 * the pod is enrolled: whoever serves them (this process or tunnel workers)
 * accepts on duplicates, so the sockets outlive any one of them and the
 * kernel queues connections while a server restarts.
 */
export type PodListeners = PerRole<number>;

export interface EnrolledPod {
  readonly workload: Workload;
  readonly podId: number;
  readonly cgroupId: bigint;
  /** The pod's network namespace, held open while the pod is enrolled. */
  readonly netns: Netns;
  readonly listeners: PodListeners;
  /** Why TIME_WAIT reuse could not be turned on in the pod's netns (a read-only /proc/sys in a container), if so. */
  readonly timeWaitReuse?: string;
}

export class Enrolment {
  private readonly pods = new Map<string, EnrolledPod>();
  /** Pod ids found in the pinned map at start: cgroup id → pod id. */
  private readonly inherited: Map<bigint, number>;

  constructor(private readonly dp: Datapath) {
    this.inherited = dp.maps.enrolledCgroups();
  }

  list(): EnrolledPod[] {
    return [...this.pods.values()];
  }

  enrol(w: Workload): EnrolledPod {
    const existing = this.pods.get(w.uid);
    if (existing) return existing;
    if (!w.netns || !w.cgroup)
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `workload ${w.uid} has no ${w.netns ? 'cgroup' : 'netns'} path`,
        'the hosting node needs both: in the standalone YAML on the workload entry; with --xds in the --pods file',
      );
    let cgroupId: bigint;
    try {
      cgroupId = fs.statSync(w.cgroup, { bigint: true }).ino;
    } catch {
      throw new AmbitError(
        'AMBIT_E_ENROL',
        `cgroup ${w.cgroup} of workload ${w.uid} does not exist`,
        "the path must be the pod's cgroup v2 directory",
      );
    }
    const podId = this.inherited.get(cgroupId) ?? this.allocateId();
    const key = podKey(w);

    const netns = Netns.open(w.netns);
    let fds: number[];
    try {
      fds = netns.listen(ROLES.map((r) => LISTEN_ADDRESSES[r]));
    } catch (err) {
      netns.close();
      throw err;
    }
    const listeners = Object.fromEntries(ROLES.map((r, i) => [r, fds[i]])) as PodListeners;
    const pod: EnrolledPod = {
      workload: w,
      podId,
      cgroupId,
      netns,
      timeWaitReuse: allowTimeWaitReuse(netns),
      listeners,
    };
    try {
      this.dp.maps.setListener(podId, ROLE_PLAIN, listeners.inboundPlain);
      this.dp.maps.setListener(podId, ROLE_HBONE, listeners.inboundHbone);
      this.dp.attachNetns(key, w.netns);
      for (const ip of w.addresses) this.dp.maps.setPodAddr(ip, podId);
      this.dp.maps.setEnrolledCgroup(cgroupId, podId);
    } catch (err) {
      this.release(pod);
      throw err;
    }
    this.pods.set(w.uid, pod);
    this.inherited.delete(cgroupId);
    return pod;
  }

  /** Capture off, then the listeners close; connections already accepted carry on. */
  unenrol(uid: string): void {
    const pod = this.pods.get(uid);
    if (!pod) return;
    this.pods.delete(uid);
    this.release(pod);
  }

  /**
   * After a restart has re-enrolled the pods it still hosts, removes what an
   * earlier agent left for pods that are gone: their cgroup and address
   * entries and their sk_lookup links. Until then those pods stayed
   * captured and failed closed.
   */
  removeStale(): string[] {
    const removed: string[] = [];
    const liveIds = new Set(this.list().map((p) => p.podId));
    for (const [cgroupId, podId] of this.dp.maps.enrolledCgroups()) {
      if (!liveIds.has(podId)) {
        this.dp.maps.deleteEnrolledCgroup(cgroupId);
        removed.push(`cgroup ${cgroupId}`);
      }
    }
    for (const [ip, podId] of this.dp.maps.podAddrs()) {
      if (!liveIds.has(podId)) {
        this.dp.maps.deletePodAddr(ip);
        removed.push(`address ${ip}`);
      }
    }
    const liveKeys = new Set(this.list().map((p) => podKey(p.workload)));
    for (const key of this.dp.netnsLinks()) {
      if (!liveKeys.has(key)) {
        this.dp.detachNetns(key);
        removed.push(`netns link ${key}`);
      }
    }
    this.inherited.clear();
    return removed;
  }

  private release(pod: EnrolledPod): void {
    this.dp.maps.deleteEnrolledCgroup(pod.cgroupId);
    for (const ip of pod.workload.addresses) this.dp.maps.deletePodAddr(ip);
    this.dp.detachNetns(podKey(pod.workload));
    this.dp.maps.deleteListener(pod.podId, ROLE_PLAIN);
    this.dp.maps.deleteListener(pod.podId, ROLE_HBONE);
    closeListeners(pod);
    pod.netns.close();
  }

  private allocateId(): number {
    const used = new Set([...this.inherited.values(), ...this.list().map((p) => p.podId)]);
    for (let id = 0; id < MAX_PODS; id++) if (!used.has(id)) return id;
    throw new AmbitError(
      'AMBIT_E_ENROL',
      `more than ${MAX_PODS} pods on this node`,
      'raise AMBIT_MAX_PODS in bpf/lib/types.h and src/datapath/maps.ts',
    );
  }
}

/**
 * The tunnel delivers every inbound connection from inside the pod, from
 * the pod's own address to the app's port: one 4-tuple space of ~28,000
 * ports, and the tunnel closes first whenever the client does, leaving
 * TIME_WAIT behind. Without reuse the pod runs out of ports after ~470 new
 * connections/s sustained for a minute (measured: 3% of 40,000 connections
 * failed). tcp_tw_reuse=1 (per netns) lets connect() reuse a TIME_WAIT
 * tuple once TCP timestamps prove it safe.
 */
function allowTimeWaitReuse(netns: Netns): string | undefined {
  try {
    netns.run(() => fs.writeFileSync('/proc/sys/net/ipv4/tcp_tw_reuse', '1'));
    return undefined;
  } catch (err) {
    // Not fatal: the pod is served, it just runs out of ports sooner under heavy connection churn.
    return `${(err as NodeJS.ErrnoException).code ?? (err as Error).message} writing net.ipv4.tcp_tw_reuse`;
  }
}

/** Closes the agent's own fds of a pod's listening sockets (servers on duplicates close separately). */
export function closeListeners(pod: EnrolledPod): void {
  const l = pod.listeners;
  for (const k of ROLES) {
    if (l[k] >= 0) libcFns.close(l[k]);
    l[k] = -1;
  }
}

/** Name of the pod's pinned sk_lookup link; stable across restarts. */
export const podKey = (w: Workload): string => w.uid.replace(/[^A-Za-z0-9_.-]/g, '_');
