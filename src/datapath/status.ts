// What is pinned and attached under a pin directory, read from the kernel
// (not from any process's memory), and its removal. Used by
// `ambit datapath status|cleanup` and by the tests.
import fs from 'node:fs';
import path from 'node:path';
import { bpf, libcFns } from './ffi';
import { linkInfo, progTag, unpinLink } from './loader';
import { DatapathMaps } from './maps';
import type { Counters } from './reasons';

export interface LinkStatus {
  pin: string;
  linkId: number;
  progId: number;
  program: string;
  tag: string;
  target: string;
}
export interface DatapathStatus {
  pinDir: string;
  links: LinkStatus[];
  enrolledCgroups: number;
  podAddrs: Record<string, number>;
  counters: Counters | null;
}

export function datapathStatus(pinDir: string): DatapathStatus {
  const status: DatapathStatus = { pinDir, links: [], enrolledCgroups: 0, podAddrs: {}, counters: null };
  const linksDir = path.join(pinDir, 'links');
  if (fs.existsSync(linksDir)) {
    for (const name of fs.readdirSync(linksDir).sort()) {
      const fd = bpf.objGet(path.join(linksDir, name));
      if (fd < 0) continue;
      try {
        const info = linkInfo(fd);
        status.links.push({
          pin: name,
          linkId: info.id,
          progId: info.progId,
          program: progName(info.progId),
          tag: progTag(info.progId),
          target:
            info.type === 3
              ? `cgroup id ${info.targetId}`
              : info.type === 5
                ? `netns inode ${info.targetId}`
                : info.targetId === 0n
                  ? 'detached'
                  : String(info.targetId),
        });
      } finally {
        libcFns.close(fd);
      }
    }
  }
  const fds = openPinnedMaps(pinDir);
  try {
    if (fds.size > 0) {
      const maps = new DatapathMaps(fds);
      status.enrolledCgroups = maps.enrolledCgroups().size;
      status.podAddrs = Object.fromEntries(maps.podAddrs());
      status.counters = maps.readCounters();
    }
  } finally {
    for (const fd of fds.values()) libcFns.close(fd);
  }
  return status;
}

/** Removes every link and map ambit pinned under pinDir; returns what it removed. */
export function cleanupDatapath(pinDir: string): string[] {
  const removed: string[] = [];
  const linksDir = path.join(pinDir, 'links');
  if (fs.existsSync(linksDir)) {
    for (const name of fs.readdirSync(linksDir)) {
      unpinLink(path.join(linksDir, name));
      removed.push(`links/${name}`);
    }
  }
  const mapsDir = path.join(pinDir, 'maps');
  if (fs.existsSync(mapsDir)) {
    for (const name of fs.readdirSync(mapsDir)) {
      fs.rmSync(path.join(mapsDir, name), { force: true });
      removed.push(`maps/${name}`);
    }
  }
  for (const dir of [linksDir, mapsDir, pinDir]) if (fs.existsSync(dir)) fs.rmdirSync(dir);
  return removed;
}

/** The pinned maps under pinDir, opened by path (no object load): for status and tunnel workers. */
export function openPinnedMaps(pinDir: string): Map<string, number> {
  const fds = new Map<string, number>();
  const mapsDir = path.join(pinDir, 'maps');
  if (!fs.existsSync(mapsDir)) return fds;
  for (const name of fs.readdirSync(mapsDir)) {
    const fd = bpf.objGet(path.join(mapsDir, name));
    if (fd >= 0) fds.set(name, fd);
  }
  return fds;
}

function progName(progId: number): string {
  const fd = bpf.progGetFdById(progId);
  if (fd < 0) return '?';
  try {
    const buf = Buffer.alloc(256);
    if (bpf.objGetInfoByFd(fd, buf, [buf.length]) < 0) return '?';
    const raw = buf.subarray(64, 80);
    return raw.subarray(0, raw.indexOf(0) >= 0 ? raw.indexOf(0) : 16).toString();
  } finally {
    libcFns.close(fd);
  }
}

/** A mesh pod of the node that its agent has not captured yet, and why (GET /config_dump `pendingPods`). */
export interface PendingPod {
  uid: string;
  why: string;
}

/**
 * The pods pending enrolment in an agent's config dump, when that agent
 * serves pinDir. Those live in the agent's memory, not in the kernel, so
 * `ambit datapath status` asks the agent; an answer about another pin
 * directory (another agent on that port) or of another shape is refused
 * with why, never shown as this datapath's.
 */
export function pendingPodsOf(dump: unknown, pinDir: string): { pods: PendingPod[] } | { unknown: string } {
  const d = dump as { pendingPods?: unknown; datapath?: { pinDir?: unknown } } | null;
  if (typeof d !== 'object' || d === null || !Array.isArray(d.pendingPods))
    return { unknown: 'the agent answered without a pendingPods list (an older ambit?)' };
  const served = d.datapath?.pinDir;
  if (typeof served === 'string' && path.resolve(served) !== path.resolve(pinDir))
    return { unknown: `the agent there serves pin directory ${served}, not ${pinDir}` };
  const pods = (d.pendingPods as unknown[]).flatMap((p) => {
    const { uid, why } = (p ?? {}) as { uid?: unknown; why?: unknown };
    return typeof uid === 'string' && typeof why === 'string' ? [{ uid, why }] : [];
  });
  return { pods };
}
