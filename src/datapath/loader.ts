// Loads bpf/*.o, pins maps and links under one directory, attaches with
// bpf_links only, and does it idempotently:
//   <pinDir>/maps/<map>            shared by both objects, reused across restarts
//   <pinDir>/links/<program>       cgroup links (connect4, sockops, getpeername4, connect6, getpeername6)
//   <pinDir>/links/netns-<pod>     one sk_lookup link per enrolled pod netns
// A restart finds each pinned link, compares the attached program's tag with
// the one just loaded, and keeps it (same tag), swaps the program atomically
// with bpf_link_update (new tag), or re-attaches (target changed). It never
// stacks a second attachment.
import fs from 'node:fs';
import path from 'node:path';
import { AmbitError } from '../errors';
import { bpf, errno, errnoName, libcFns, O_CLOEXEC, O_DIRECTORY, O_RDONLY, type Ptr } from './ffi';
import { DatapathMaps } from './maps';
import { REASONS } from './reasons';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/ambit';
export const DEFAULT_OBJ_DIR = path.resolve(__dirname, '../../../build/bpf');

/** Cgroup programs: name in the object → pinned link name. */
const CGROUP_PROGRAMS = [
  { prog: 'ambit_connect4', link: 'connect4' },
  { prog: 'ambit_sockops', link: 'sockops' },
  { prog: 'ambit_peername4', link: 'getpeername4' },
  // AF_INET6 sockets: v4-mapped destinations captured like IPv4, native IPv6 refused.
  { prog: 'ambit_connect6', link: 'connect6' },
  { prog: 'ambit_peername6', link: 'getpeername6' },
] as const;
const SK_LOOKUP_PROGRAM = 'ambit_sk_lookup';

export type AttachAction = 'attached' | 'reused' | 'replaced';
export interface Attachment {
  link: string;
  action: AttachAction;
}

export interface DatapathOptions {
  pinDir?: string;
  /** cgroup v2 directory that holds every pod of this node. */
  cgroupPath: string;
  objDir?: string;
}

export class Datapath {
  readonly maps: DatapathMaps;
  readonly attachments: Attachment[] = [];
  private readonly objects: Ptr[] = [];
  private readonly skLookup: Ptr;
  private readonly linksDir: string;
  /**
   * A program's tag ignores which maps it uses: after the counters map was
   * recreated, a pinned link with the same tag still counts into the old
   * one, so it is replaced rather than reused.
   */
  private countersRecreated = false;

  private constructor(
    readonly pinDir: string,
    objDir: string,
    cgroupPath: string,
  ) {
    this.linksDir = path.join(pinDir, 'links');
    fs.mkdirSync(path.join(pinDir, 'maps'), { recursive: true });
    fs.mkdirSync(this.linksDir, { recursive: true });
    try {
      const mapFds = new Map<string, number>();
      const redirect = this.loadObject(path.join(objDir, 'redirect.o'), mapFds);
      const inbound = this.loadObject(path.join(objDir, 'inbound.o'), mapFds);
      this.maps = new DatapathMaps(mapFds);
      this.skLookup = findProgram(inbound, SK_LOOKUP_PROGRAM);

      const cgroupFd = openDir(cgroupPath, 'cgroup');
      const cgroupId = fs.statSync(cgroupPath, { bigint: true }).ino;
      try {
        for (const { prog, link } of CGROUP_PROGRAMS) {
          const program = findProgram(redirect, prog);
          this.attachments.push({
            link,
            action: this.attachPinned(link, program, cgroupId, () => bpf.programAttachCgroup(program, cgroupFd)),
          });
        }
      } finally {
        libcFns.close(cgroupFd);
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  static open(opts: DatapathOptions): Datapath {
    return new Datapath(opts.pinDir ?? DEFAULT_PIN_DIR, opts.objDir ?? DEFAULT_OBJ_DIR, opts.cgroupPath);
  }

  /** Attaches sk_lookup to a pod's netns (or keeps the pinned link that already is). */
  attachNetns(podKey: string, netnsPath: string): Attachment {
    const link = netnsLinkName(podKey);
    const fd = openDir(netnsPath, 'netns', false);
    try {
      const ino = BigInt(fs.statSync(netnsPath).ino);
      return { link, action: this.attachPinned(link, this.skLookup, ino, () => bpf.programAttachNetns(this.skLookup, fd)) };
    } finally {
      libcFns.close(fd);
    }
  }

  detachNetns(podKey: string): void {
    unpinLink(path.join(this.linksDir, netnsLinkName(podKey)));
  }

  /** Pinned netns links, by pod key: lets a restarted agent find stale ones. */
  netnsLinks(): string[] {
    return fs
      .readdirSync(this.linksDir)
      .filter((n) => n.startsWith('netns-'))
      .map((n) => n.slice('netns-'.length));
  }

  /** Closes this process's handles; pinned maps and links stay attached. */
  close(): void {
    for (const obj of this.objects.splice(0)) bpf.objectClose(obj);
  }

  private loadObject(file: string, mapFds: Map<string, number>): Ptr {
    if (!fs.existsSync(file)) throw new AmbitError('AMBIT_E_BPF_LOAD', `BPF object ${file} not found`, 'build it with `make bpf`');
    const obj = bpf.objectOpenFile(file, null);
    if (!obj) throw new AmbitError('AMBIT_E_BPF_LOAD', `cannot open ${file}: ${errnoName(errno())}`, 'rebuild with `make bpf`');
    this.objects.push(obj);
    const names: string[] = [];
    for (let m = bpf.objectNextMap(obj, null); m; m = bpf.objectNextMap(obj, m)) {
      const name = bpf.mapName(m);
      if (name.startsWith('.')) continue; // .rodata/.bss: private to the object
      names.push(name);
      const pin = path.join(this.pinDir, 'maps', name);
      if (name === COUNTERS_MAP && dropResizedCounters(pin)) this.countersRecreated = true;
      bpf.mapSetPinPath(m, pin);
    }
    const rc = bpf.objectLoad(obj);
    if (rc < 0) {
      const code = errnoName(rc);
      throw code === 'EINVAL'
        ? new AmbitError(
            'AMBIT_E_PIN_INCOMPATIBLE',
            `loading ${path.basename(file)} failed (${code}); pinned maps under ${this.pinDir}/maps may have an older shape`,
            'run `ambit datapath cleanup` (drops capture state) and start again; the libbpf message above names the map',
          )
        : new AmbitError(
            'AMBIT_E_BPF_LOAD',
            `loading ${path.basename(file)} failed: ${code}`,
            code === 'EPERM'
              ? 'needs CAP_BPF and CAP_SYS_ADMIN; run `ambit datapath probe`'
              : 'the verifier log above says which instruction',
          );
    }
    for (let m = bpf.objectNextMap(obj, null); m; m = bpf.objectNextMap(obj, m)) {
      const name = bpf.mapName(m);
      if (names.includes(name)) mapFds.set(name, bpf.mapFd(m));
    }
    return obj;
  }

  /** The idempotent core: reuse, replace or create one pinned link. */
  private attachPinned(name: string, program: Ptr, targetId: bigint, attach: () => Ptr | null): AttachAction {
    const pin = path.join(this.linksDir, name);
    const newProgFd = bpf.programFd(program);
    if (fs.existsSync(pin)) {
      const linkFd = bpf.objGet(pin);
      if (linkFd >= 0) {
        try {
          const info = linkInfo(linkFd);
          if (info.targetId === targetId) {
            if (!this.countersRecreated && progTag(info.progId) === progTagByFd(newProgFd)) return 'reused';
            const rc = bpf.linkUpdate(linkFd, newProgFd, null);
            if (rc < 0) throw new AmbitError('AMBIT_E_BPF_ATTACH', `replacing the program of link ${pin} failed: ${errnoName(rc)}`);
            return 'replaced';
          }
        } finally {
          libcFns.close(linkFd);
        }
      }
      // Attached elsewhere (config changed) or the target is gone: start over.
      unpinLink(pin);
    }
    const link = attach();
    if (!link) {
      const code = errnoName(errno());
      throw new AmbitError(
        'AMBIT_E_BPF_ATTACH',
        `attaching ${name} failed: ${code}`,
        code === 'EINVAL' ? 'the kernel may lack bpf_link for this hook; run `ambit datapath probe`' : undefined,
      );
    }
    try {
      const rc = bpf.linkPin(link, pin);
      if (rc < 0) throw new AmbitError('AMBIT_E_BPF_ATTACH', `pinning ${pin} failed: ${errnoName(rc)}`, 'is bpffs mounted at /sys/fs/bpf?');
    } finally {
      bpf.linkDestroy(link); // closes our fd only; the pin keeps the link alive
    }
    return 'attached';
  }
}

const COUNTERS_MAP = 'counters';

/**
 * The counters map grows by one slot with every new reason, and libbpf
 * refuses a pin of another size. Its content is only statistics, so an
 * upgrade drops the old pin (counts restart from 0) instead of asking for
 * a cleanup that would drop capture state too. Links reattached or
 * replaced by this load count into the new map.
 */
function dropResizedCounters(pin: string): boolean {
  if (!fs.existsSync(pin)) return false;
  const fd = bpf.objGet(pin);
  if (fd < 0) return false;
  try {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries (u32 each).
    const info = Buffer.alloc(80);
    if (bpf.objGetInfoByFd(fd, info, [info.length]) < 0 || info.readUInt32LE(16) === REASONS.length) return false;
  } finally {
    libcFns.close(fd);
  }
  fs.rmSync(pin, { force: true });
  return true;
}

const netnsLinkName = (podKey: string): string => `netns-${podKey.replace(/[^A-Za-z0-9_.-]/g, '_')}`;

function findProgram(obj: Ptr, name: string): Ptr {
  const p = bpf.objectFindProgram(obj, name);
  if (!p) throw new AmbitError('AMBIT_E_BPF_LOAD', `program ${name} missing from the BPF objects`, 'rebuild with `make bpf`');
  return p;
}

function openDir(p: string, what: string, directory = true): number {
  const fd = libcFns.open(p, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0)
    throw new AmbitError(
      what === 'netns' ? 'AMBIT_E_NETNS' : 'AMBIT_E_MOUNT',
      `cannot open ${what} ${p}: ${errnoName(errno())}`,
      what === 'cgroup'
        ? 'the path must be a directory on a cgroup v2 mount'
        : 'the path must be a network namespace file such as /var/run/netns/NAME or /proc/PID/ns/net',
    );
  return fd;
}

// struct bpf_link_info: type u32, id u32, prog_id u32, then an 8-aligned
// union: cgroup { u64 cgroup_id; ... } / netns { u32 netns_ino; ... }.
interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  targetId: bigint;
}
const LINK_TYPE_CGROUP = 3;
const LINK_TYPE_NETNS = 5;

export function linkInfo(fd: number): LinkInfo {
  const buf = Buffer.alloc(128);
  const rc = bpf.objGetInfoByFd(fd, buf, [buf.length]);
  if (rc < 0) throw new AmbitError('AMBIT_E_BPF_ATTACH', `reading link info failed: ${errnoName(rc)}`);
  const type = buf.readUInt32LE(0);
  const targetId = type === LINK_TYPE_CGROUP ? buf.readBigUInt64LE(16) : type === LINK_TYPE_NETNS ? BigInt(buf.readUInt32LE(16)) : 0n;
  return { type, id: buf.readUInt32LE(4), progId: buf.readUInt32LE(8), targetId };
}

// struct bpf_prog_info: type u32, id u32, tag[8] at offset 8; name at 64.
export function progTagByFd(fd: number): string {
  const buf = Buffer.alloc(256);
  const rc = bpf.objGetInfoByFd(fd, buf, [buf.length]);
  if (rc < 0) throw new AmbitError('AMBIT_E_BPF_LOAD', `reading program info failed: ${errnoName(rc)}`);
  return buf.subarray(8, 16).toString('hex');
}

export function progTag(progId: number): string {
  const fd = bpf.progGetFdById(progId);
  if (fd < 0) return '';
  try {
    return progTagByFd(fd);
  } finally {
    libcFns.close(fd);
  }
}

/** Detaches a pinned link and removes the pin; absent pins are fine. */
export function unpinLink(pin: string): void {
  if (!fs.existsSync(pin)) return;
  const fd = bpf.objGet(pin);
  if (fd >= 0) {
    // Explicit detach: another process may still hold an fd to this link.
    bpf.linkDetach(fd);
    libcFns.close(fd);
  }
  fs.rmSync(pin, { force: true });
}
