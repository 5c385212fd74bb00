// Finds a Kubernetes pod's network namespace and cgroup v2 directory on
// this node from its processes: /proc/<pid>/cgroup names the pod by its
// uid in the kubelet's layout, and /proc/<pid>/ns/net is its netns. Both
// cgroup drivers are understood:
//   systemd:  …/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope
//   cgroupfs: …/kubepods/besteffort/pod<uid>/<container id>
// (Guaranteed pods have no QoS level; kind and nested setups add prefixes.)
// The pod's cgroup is the directory named after it, above its containers.
// Once a process is chosen for a pod it is kept while it lives, so the
// netns path — part of what identifies an enrolment — does not churn.
// In a container with its own cgroup namespace (the default on cgroup v2),
// other processes' paths are relative to the agent's own cgroup ("/../../
// kubepods-…"): the pod's directory is then found by its name under the
// host's cgroup2 mount.
import fs from 'node:fs';
import path from 'node:path';

export interface LocatedPod {
  netns: string;
  cgroup: string;
  pid: number;
}

// kind and nested kubelets prefix the slice names (kubelet-kubepods-besteffort-pod….slice).
const SYSTEMD_POD = /^(?:[a-z]+-)?kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$/;
const CGROUPFS_POD = /^pod([0-9a-f-]{36})$/;

/** The pod uid and the pod's own cgroup path (relative to the cgroup2 root) in a process's cgroup path. */
export function podOfCgroupPath(cgPath: string): { uid: string; podPath: string } | undefined {
  const parts = cgPath.split('/');
  for (const [i, part] of parts.entries()) {
    const uid =
      SYSTEMD_POD.exec(part)?.[1] ?? (parts.slice(0, i).some((p) => p.startsWith('kubepods')) ? CGROUPFS_POD.exec(part)?.[1] : undefined);
    if (uid) return { uid: uid.replace(/_/g, '-'), podPath: parts.slice(0, i + 1).join('/') };
  }
  return undefined;
}

/** The cgroup v2 path of a process ("0::/…" line), or undefined if it is gone. */
function cgroupOf(procRoot: string, pid: number): string | undefined {
  try {
    const line = fs
      .readFileSync(path.join(procRoot, String(pid), 'cgroup'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line?.slice(3);
  } catch {
    return undefined;
  }
}

export class PodLocator {
  private readonly chosen = new Map<string, number>();
  /** Pod cgroup directory name → where it was found under the cgroup root. */
  private readonly byName = new Map<string, string>();

  /** procRoot: the host's /proc (mounted at /host/proc in the DaemonSet); cgroupRoot: the cgroup2 mount. */
  constructor(
    private readonly procRoot: string,
    private readonly cgroupRoot: string,
  ) {}

  /** Where each of the given pods (by Kubernetes uid) is; pods with no process yet are absent. */
  locate(uids: ReadonlySet<string>): Map<string, LocatedPod> {
    const found = new Map<string, LocatedPod>();
    const at = (uid: string, pid: number, podPath: string): void => {
      const cgroup = this.resolve(podPath);
      if (cgroup) found.set(uid, { pid, netns: path.join(this.procRoot, String(pid), 'ns', 'net'), cgroup });
    };
    // Keep earlier choices that still hold.
    for (const [uid, pid] of this.chosen) {
      const pod = uids.has(uid) ? podOfCgroupPath(cgroupOf(this.procRoot, pid) ?? '') : undefined;
      if (pod?.uid === uid) at(uid, pid, pod.podPath);
      else this.chosen.delete(uid);
    }
    if ([...uids].every((u) => found.has(u))) return found;
    // The lowest pid of a pod is its oldest process (normally the sandbox).
    const pids = fs
      .readdirSync(this.procRoot)
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .sort((a, b) => a - b);
    for (const pid of pids) {
      const cg = cgroupOf(this.procRoot, pid);
      const pod = cg ? podOfCgroupPath(cg) : undefined;
      if (!pod || !uids.has(pod.uid) || found.has(pod.uid)) continue;
      this.chosen.set(pod.uid, pid);
      at(pod.uid, pid, pod.podPath);
    }
    return found;
  }

  /** The pod's cgroup directory on the cgroup2 mount, or undefined when it cannot be found. */
  private resolve(podPath: string): string | undefined {
    if (!podPath.split('/').includes('..')) {
      const direct = path.join(this.cgroupRoot, podPath);
      if (fs.existsSync(direct)) return direct;
    }
    const name = path.basename(podPath);
    const known = this.byName.get(name);
    if (known && fs.existsSync(known)) return known;
    const hit = findDir(this.cgroupRoot, (n) => n === name, 6);
    if (hit) this.byName.set(name, hit);
    return hit;
  }
}

/** Breadth-first search for the first directory whose name matches, at most depth levels down. */
export function findDir(root: string, matches: (name: string) => boolean, depth: number): string | undefined {
  let level = [root];
  for (let d = 0; d < depth && level.length; d++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const p = path.join(dir, e.name);
        if (matches(e.name)) return p;
        next.push(p);
      }
    }
    level = next;
  }
  return undefined;
}
