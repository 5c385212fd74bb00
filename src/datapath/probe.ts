// Startup check of everything the datapath needs, answered precisely:
// which capability, which mount, which kernel feature and the Linux
// version that brings it. Probes ask the running kernel (libbpf's feature
// probes) rather than trusting the version number, which backports break.
import fs from 'node:fs';
import os from 'node:os';
import type { ErrorCode } from '../errors';
import { bpf } from './ffi';

/** One check; a failed one says which error code it maps to. */
export interface Finding {
  ok: boolean;
  what: string;
  detail: string;
  code?: ErrorCode;
}

// include/uapi/linux/bpf.h enum values.
const PROG = { SOCK_OPS: 13, CGROUP_SOCK_ADDR: 18, SK_LOOKUP: 30 } as const;
const MAP = { SOCKMAP: 15, LRU_HASH: 9, PERCPU_ARRAY: 6 } as const;
const HELPER = { get_socket_cookie: 46, get_current_cgroup_id: 80, get_current_ancestor_cgroup_id: 123, sk_assign: 124 } as const;

const CAPS = [
  { bit: 12, name: 'CAP_NET_ADMIN' },
  { bit: 21, name: 'CAP_SYS_ADMIN' },
  { bit: 39, name: 'CAP_BPF' },
];

export function kernelVersion(release = os.release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

export function effectiveCaps(statusText = fs.readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/** Mount points of a file-system type, from /proc/self/mountinfo. */
export function mountsOfType(type: string, mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const out: string[] = [];
  for (const line of mountinfo.split('\n')) {
    // mountinfo(5): fields before " - " (the mount point is the fifth), then the file-system type.
    const [left, right] = line.split(' - ');
    const mountPoint = left?.split(' ')[4];
    if (right?.split(' ')[0] === type && mountPoint !== undefined) out.push(mountPoint);
  }
  return out;
}

/** The cgroup v2 mount (unified /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
export function cgroup2Root(): string | undefined {
  const mounts = mountsOfType('cgroup2');
  return mounts.find((m) => m === '/sys/fs/cgroup') ?? mounts.find((m) => m === '/sys/fs/cgroup/unified') ?? mounts[0];
}

export function probe(pinDir = '/sys/fs/bpf/ambit'): Finding[] {
  const findings: Finding[] = [];
  const [maj, min] = kernelVersion();
  const release = os.release();

  const caps = effectiveCaps();
  const missing = CAPS.filter((c) => (caps & (1n << BigInt(c.bit))) === 0n).map((c) => c.name);
  findings.push(
    missing.length
      ? {
          ok: false,
          what: 'capabilities',
          code: 'AMBIT_E_PRIVILEGE',
          detail: `missing ${missing.join(', ')}; run as root or grant them (the DaemonSet's securityContext.capabilities.add)`,
        }
      : { ok: true, what: 'capabilities', detail: CAPS.map((c) => c.name).join(', ') },
  );

  const bpffs = mountsOfType('bpf');
  findings.push(
    bpffs.some((m) => pinDir === m || pinDir.startsWith(`${m}/`))
      ? { ok: true, what: 'bpffs', detail: `mounted at ${bpffs.join(', ')}` }
      : {
          ok: false,
          what: 'bpffs',
          code: 'AMBIT_E_MOUNT',
          detail:
            `no bpf file system holds ${pinDir}; fix: mount -t bpf bpf /sys/fs/bpf and keep --pin-dir under it ` +
            "(in Kubernetes: hostPath-mount the node's /sys/fs/bpf)",
        },
  );

  const cg2 = cgroup2Root();
  findings.push(
    cg2
      ? { ok: true, what: 'cgroup2', detail: `mounted at ${cg2}` }
      : {
          ok: false,
          what: 'cgroup2',
          code: 'AMBIT_E_MOUNT',
          detail:
            'no cgroup v2 mount; fix: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified ' +
            '(or boot with systemd.unified_cgroup_hierarchy=1)',
        },
  );

  const need = (ok: boolean, what: string, since: string): void => {
    findings.push(
      ok
        ? { ok, what, detail: 'supported' }
        : { ok, what, code: 'AMBIT_E_KERNEL', detail: `not supported by this kernel (${release}); ${what} needs Linux >= ${since}` },
    );
  };
  // Probes need CAP_BPF; without it they all fail, and the capability line says why.
  if (missing.includes('CAP_BPF') || missing.includes('CAP_SYS_ADMIN')) return findings;
  need(bpf.probeProgType(PROG.CGROUP_SOCK_ADDR, null) === 1, 'cgroup/connect4 programs', '4.17');
  need(bpf.probeProgType(PROG.SOCK_OPS, null) === 1, 'sockops programs', '4.13');
  need(bpf.probeProgType(PROG.SK_LOOKUP, null) === 1, 'sk_lookup programs', '5.9');
  need(bpf.probeMapType(MAP.SOCKMAP, null) === 1, 'sockmap', '4.14');
  need(
    bpf.probeMapType(MAP.LRU_HASH, null) === 1 && bpf.probeMapType(MAP.PERCPU_ARRAY, null) === 1,
    'LRU hash and per-CPU array maps',
    '4.10',
  );
  need(
    bpf.probeHelper(PROG.CGROUP_SOCK_ADDR, HELPER.get_current_ancestor_cgroup_id, null) === 1,
    'bpf_get_current_ancestor_cgroup_id in cgroup/connect4',
    '5.7',
  );
  need(bpf.probeHelper(PROG.SOCK_OPS, HELPER.get_socket_cookie, null) === 1, 'bpf_get_socket_cookie in sockops', '4.12');
  need(bpf.probeHelper(PROG.SK_LOOKUP, HELPER.sk_assign, null) === 1, 'bpf_sk_assign in sk_lookup', '5.9');
  // getpeername hooks and bpf_link for cgroups have no libbpf probe: go by version.
  const atLeast = (a: number, b: number): boolean => maj > a || (maj === a && min >= b);
  need(atLeast(5, 8), 'cgroup/getpeername4 hook', '5.8');
  need(atLeast(5, 7), 'bpf_link for cgroup programs', '5.7');
  return findings;
}

export function formatFindings(findings: Finding[]): string {
  return findings.map((f) => `${f.ok ? 'ok  ' : 'FAIL'} ${f.what}: ${f.detail}`).join('\n');
}
