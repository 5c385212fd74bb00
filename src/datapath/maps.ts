// Typed access to the maps of bpf/lib/maps.h. Byte layouts follow
// bpf/lib/types.h exactly; addresses travel in network byte order, the
// flow key's port in host byte order (as sockops reports local_port).
import net from 'node:net';
import { AmbitError } from '../errors';
import { bpf, errnoName } from './ffi';
import { type Counters, REASONS } from './reasons';

export const ROLE_PLAIN = 0;
export const ROLE_HBONE = 1;
const ROLES = 2;
export const MAX_PODS = 4096;

export interface OrigDst {
  ip: string;
  port: number;
  podId: number;
}

export function ip4Bytes(ip: string): Buffer {
  if (!net.isIPv4(ip))
    throw new AmbitError(
      'AMBIT_E_ENROL',
      `address ${JSON.stringify(ip)} is not IPv4`,
      'the datapath captures IPv4 only; give the pod an IPv4 address',
    );
  return Buffer.from(ip.split('.').map(Number));
}
const ip4String = (b: Buffer, off: number): string => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;

/** One pinned map opened by fd; the name is kept for error messages. */
class RawMap {
  constructor(
    readonly name: string,
    readonly fd: number,
    private readonly sockmap = false,
  ) {}

  update(key: Buffer, value: Buffer): void {
    const rc = bpf.mapUpdate(this.fd, key, value, 0);
    if (rc < 0) {
      const hint = errnoName(rc) === 'E2BIG' || errnoName(rc) === 'ENOSPC' ? `map ${this.name} is full` : undefined;
      throw new AmbitError('AMBIT_E_BPF_MAP', `update of map ${this.name} failed: ${errnoName(rc)}`, hint);
    }
  }

  lookup(key: Buffer, valueSize: number): Buffer | undefined {
    const out = Buffer.alloc(valueSize);
    return bpf.mapLookup(this.fd, key, out) === 0 ? out : undefined;
  }

  /**
   * Deleting an absent key is not an error: unenrol must be repeatable.
   * (A sockmap says EINVAL for an empty slot; the kernel empties a slot
   * itself when its socket closes.)
   */
  delete(key: Buffer): void {
    const rc = bpf.mapDelete(this.fd, key);
    const absent = errnoName(rc) === 'ENOENT' || (this.sockmap && errnoName(rc) === 'EINVAL');
    if (rc < 0 && !absent) throw new AmbitError('AMBIT_E_BPF_MAP', `delete from map ${this.name} failed: ${errnoName(rc)}`);
  }

  keys(keySize: number): Buffer[] {
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(keySize);
      if (bpf.mapNextKey(this.fd, prev, next) !== 0) return keys;
      keys.push(next);
      prev = next;
    }
  }
}

export class DatapathMaps {
  private readonly enrolled: RawMap;
  private readonly addrs: RawMap;
  private readonly sockets: RawMap;
  private readonly byFlow: RawMap;
  private readonly byCookie: RawMap;
  private readonly counters: RawMap;

  constructor(fds: ReadonlyMap<string, number>) {
    const get = (name: string, sockmap = false): RawMap => {
      const fd = fds.get(name);
      if (fd === undefined) throw new AmbitError('AMBIT_E_BPF_LOAD', `map ${name} missing from the BPF objects`, 'rebuild with `make bpf`');
      return new RawMap(name, fd, sockmap);
    };
    this.enrolled = get('enrolled_cgroups');
    this.addrs = get('pod_addrs');
    this.sockets = get('listeners', true);
    this.byFlow = get('orig_by_flow');
    this.byCookie = get('orig_by_cookie');
    this.counters = get('counters');
  }

  // --- enrolled_cgroups: cgroup id (u64) -> { pod_id u32, flags u32 }
  setEnrolledCgroup(cgroupId: bigint, podId: number): void {
    const k = Buffer.alloc(8);
    k.writeBigUInt64LE(cgroupId);
    const v = Buffer.alloc(8);
    v.writeUInt32LE(podId, 0);
    this.enrolled.update(k, v);
  }
  deleteEnrolledCgroup(cgroupId: bigint): void {
    const k = Buffer.alloc(8);
    k.writeBigUInt64LE(cgroupId);
    this.enrolled.delete(k);
  }
  enrolledCgroups(): Map<bigint, number> {
    const out = new Map<bigint, number>();
    for (const k of this.enrolled.keys(8)) {
      const v = this.enrolled.lookup(k, 8);
      if (v) out.set(k.readBigUInt64LE(), v.readUInt32LE(0));
    }
    return out;
  }

  // --- pod_addrs: IPv4 (network order) -> pod_id
  setPodAddr(ip: string, podId: number): void {
    const v = Buffer.alloc(4);
    v.writeUInt32LE(podId);
    this.addrs.update(ip4Bytes(ip), v);
  }
  deletePodAddr(ip: string): void {
    this.addrs.delete(ip4Bytes(ip));
  }
  podAddrs(): Map<string, number> {
    const out = new Map<string, number>();
    for (const k of this.addrs.keys(4)) {
      const v = this.addrs.lookup(k, 4);
      if (v) out.set(ip4String(k, 0), v.readUInt32LE(0));
    }
    return out;
  }

  // --- listeners sockmap: pod_id * 2 + role -> socket fd
  setListener(podId: number, role: number, socketFd: number): void {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(BigInt(socketFd));
    this.sockets.update(slot(podId, role), v);
  }
  deleteListener(podId: number, role: number): void {
    this.sockets.delete(slot(podId, role));
  }

  // --- orig_by_flow: { pod_id, src ip, src port } -> orig_dst
  /**
   * The original destination of an accepted :15001 connection: one lookup,
   * no delete (sockops drops the record when the client socket closes).
   */
  origDst(podId: number, srcIp: string, srcPort: number): OrigDst | undefined {
    const k = Buffer.alloc(12);
    k.writeUInt32LE(podId, 0);
    ip4Bytes(srcIp).copy(k, 4);
    k.writeUInt16LE(srcPort, 8);
    const v = this.byFlow.lookup(k, 16);
    if (!v) return undefined;
    return { ip: ip4String(v, 0), port: v.readUInt16BE(4), podId: v.readUInt32LE(8) };
  }

  /** Original-destination records still held (both maps); 0 once every captured socket closed. */
  pendingRecords(): { byCookie: number; byFlow: number } {
    return { byCookie: this.byCookie.keys(8).length, byFlow: this.byFlow.keys(12).length };
  }

  // --- counters: per-CPU u64 by reason, summed
  readCounters(): Counters {
    const cpus = bpf.numPossibleCpus();
    const out = {} as Counters;
    REASONS.forEach((name, i) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      const v = this.counters.lookup(k, 8 * cpus);
      let sum = 0n;
      if (v) for (let c = 0; c < cpus; c++) sum += v.readBigUInt64LE(8 * c);
      out[name] = sum;
    });
    return out;
  }
}

function slot(podId: number, role: number): Buffer {
  if (!Number.isInteger(podId) || podId < 0 || podId >= MAX_PODS)
    throw new AmbitError('AMBIT_E_ENROL', `pod id ${podId} out of range 0..${MAX_PODS - 1}`);
  const k = Buffer.alloc(4);
  k.writeUInt32LE(podId * ROLES + role);
  return k;
}
