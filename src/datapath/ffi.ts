// The only place that loads native libraries. Everything ambit needs from
// libbpf (object loading, links, pins, map access) and from libc (setns and
// raw socket set-up inside a pod's netns) is declared here, typed once.
//
// koffi facts this file relies on:
// - pointer results arrive as opaque externals; null means failure and
//   errno must be read at once with koffi.errno(), before any other call;
// - libbpf >= 1.0 returns -errno from int functions and sets errno too;
// - setns() changes the calling *thread*: it must only ever be called
//   synchronously on the main thread (never through `.async`).

import os from 'node:os';
import koffi from 'koffi';

const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');
koffi.opaque('bpf_link');

export type Ptr = unknown; // an opaque koffi external

export const bpf = {
  objectOpenFile: libbpf.func('bpf_object *bpf_object__open_file(const char *path, void *opts)') as (p: string, o: null) => Ptr | null,
  objectLoad: libbpf.func('int bpf_object__load(bpf_object *obj)') as (o: Ptr) => number,
  objectClose: libbpf.func('void bpf_object__close(bpf_object *obj)') as (o: Ptr) => void,
  objectNextMap: libbpf.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *prev)') as (o: Ptr, prev: Ptr | null) => Ptr | null,
  objectFindProgram: libbpf.func('bpf_program *bpf_object__find_program_by_name(bpf_object *obj, const char *name)') as (
    o: Ptr,
    n: string,
  ) => Ptr | null,
  mapName: libbpf.func('const char *bpf_map__name(bpf_map *map)') as (m: Ptr) => string,
  mapFd: libbpf.func('int bpf_map__fd(bpf_map *map)') as (m: Ptr) => number,
  mapSetPinPath: libbpf.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)') as (m: Ptr, p: string) => number,
  programFd: libbpf.func('int bpf_program__fd(bpf_program *prog)') as (p: Ptr) => number,
  programAttachCgroup: libbpf.func('bpf_link *bpf_program__attach_cgroup(bpf_program *prog, int cgroup_fd)') as (
    p: Ptr,
    fd: number,
  ) => Ptr | null,
  programAttachNetns: libbpf.func('bpf_link *bpf_program__attach_netns(bpf_program *prog, int netns_fd)') as (
    p: Ptr,
    fd: number,
  ) => Ptr | null,
  linkPin: libbpf.func('int bpf_link__pin(bpf_link *link, const char *path)') as (l: Ptr, p: string) => number,
  linkFd: libbpf.func('int bpf_link__fd(bpf_link *link)') as (l: Ptr) => number,
  linkDestroy: libbpf.func('int bpf_link__destroy(bpf_link *link)') as (l: Ptr) => number,
  linkUpdate: libbpf.func('int bpf_link_update(int link_fd, int new_prog_fd, void *opts)') as (l: number, p: number, o: null) => number,
  linkDetach: libbpf.func('int bpf_link_detach(int link_fd)') as (l: number) => number,
  objGet: libbpf.func('int bpf_obj_get(const char *path)') as (p: string) => number,
  objGetInfoByFd: libbpf.func('int bpf_obj_get_info_by_fd(int fd, _Out_ uint8_t *info, _Inout_ uint32_t *len)') as (
    fd: number,
    info: Buffer,
    len: number[],
  ) => number,
  progGetFdById: libbpf.func('int bpf_prog_get_fd_by_id(uint32_t id)') as (id: number) => number,
  mapUpdate: libbpf.func('int bpf_map_update_elem(int fd, const uint8_t *key, const uint8_t *value, uint64_t flags)') as (
    fd: number,
    k: Buffer,
    v: Buffer,
    f: number,
  ) => number,
  mapLookup: libbpf.func('int bpf_map_lookup_elem(int fd, const uint8_t *key, _Out_ uint8_t *value)') as (
    fd: number,
    k: Buffer,
    v: Buffer,
  ) => number,
  mapDelete: libbpf.func('int bpf_map_delete_elem(int fd, const uint8_t *key)') as (fd: number, k: Buffer) => number,
  mapNextKey: libbpf.func('int bpf_map_get_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)') as (
    fd: number,
    k: Buffer | null,
    n: Buffer,
  ) => number,
  probeProgType: libbpf.func('int libbpf_probe_bpf_prog_type(int type, void *opts)') as (t: number, o: null) => number,
  probeMapType: libbpf.func('int libbpf_probe_bpf_map_type(int type, void *opts)') as (t: number, o: null) => number,
  probeHelper: libbpf.func('int libbpf_probe_bpf_helper(int prog_type, int helper, void *opts)') as (
    t: number,
    h: number,
    o: null,
  ) => number,
  numPossibleCpus: libbpf.func('int libbpf_num_possible_cpus(void)') as () => number,
};

export const libcFns = {
  open: libc.func('int open(const char *path, int flags)') as (p: string, f: number) => number,
  close: libc.func('int close(int fd)') as (fd: number) => number,
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)') as (fd: number, cmd: number, type: 'int', arg: number) => number,
  setns: libc.func('int setns(int fd, int nstype)') as (fd: number, t: number) => number,
  socket: libc.func('int socket(int domain, int type, int protocol)') as (d: number, t: number, p: number) => number,
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)') as (
    fd: number,
    l: number,
    n: number,
    v: Buffer,
    len: number,
  ) => number,
  bind: libc.func('int bind(int fd, const uint8_t *addr, uint32_t len)') as (fd: number, a: Buffer, l: number) => number,
  listen: libc.func('int listen(int fd, int backlog)') as (fd: number, b: number) => number,
};

export const errno = (): number => koffi.errno();

/** `ENOENT` for 2, etc.: names make error messages searchable. */
export function errnoName(code: number): string {
  const n = Math.abs(code);
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === n) return name;
  return `errno ${n}`;
}

// Linux constants (x86_64/arm64 share these values).
/** fcntl: duplicate with FD_CLOEXEC set (plain dup() would leak the socket into every child process). */
export const F_DUPFD_CLOEXEC = 1030;
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const O_DIRECTORY = 0o200000;
export const CLONE_NEWNET = 0x40000000;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_MARK = 36;
/** AMBIT_SOCKET_MARK of bpf/lib/types.h: connect4 never captures a socket with it. */
export const AMBIT_SOCKET_MARK = 0x616d6274;
export const IPPROTO_TCP = 6;
