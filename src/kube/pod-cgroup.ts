// Where a pod's cgroup v2 directory is when its sandbox is being created.
// The kubelet makes the pod's cgroup before it asks the runtime for the
// sandbox (and so before the CNI ADD), named after the pod uid:
//   systemd driver:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, - as _>.slice
//                    (Guaranteed pods: kubepods.slice/kubepods-pod<uid>.slice; kind prefixes kubelet-)
//   cgroupfs driver: kubepods/<qos>/pod<uid>   (Guaranteed: kubepods/pod<uid>)
// So at ADD time the directory exists, with no process in it yet (the
// sandbox's pause process joins it after the network is set up), and no
// /proc walk could find it: it is looked up by name under the pods cgroup.
import { findDir } from './pod-locator';

/** Finds the cgroup directory of the pod with this Kubernetes uid; undefined when there is none. */
export type PodCgroupLookup = (podUid: string) => string | undefined;

const UID = /^[0-9a-fA-F-]{36}$/;

/** The names the kubelet gives the cgroup of the pod with this uid (either driver). */
export function podCgroupNames(uid: string): { exact: string; slice: RegExp } {
  const u = uid.toLowerCase();
  return {
    exact: `pod${u}`,
    slice: new RegExp(`^(?:[a-z]+-)?kubepods(?:-[a-z]+)?-pod${u.replace(/-/g, '_')}\\.slice$`),
  };
}

/**
 * Looks under root (the cgroup2 mount, or --pods-cgroup) at most depth
 * levels down, breadth first: kubepods trees are three levels deep, nested
 * and kind nodes add a few.
 */
export function cgroupLookupUnder(root: string, depth = 6): PodCgroupLookup {
  return (uid) => {
    if (!UID.test(uid)) return undefined;
    const { exact, slice } = podCgroupNames(uid);
    return findDir(root, (name) => name === exact || slice.test(name), depth);
  };
}
