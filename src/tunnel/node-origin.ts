// Kubelet probes under STRICT. The kubelet probes a pod from the node itself,
// in plaintext and without an identity, so a PeerAuthentication STRICT (or
// any ALLOW policy) would keep every pod it selects unready. Istio exempts
// probe traffic from mesh policy; ambit exempts the plaintext connections it
// can show come from the node, and nothing else:
//
// - `node`: the other end of the connection is a TCP socket of this
//   process's network namespace, the host's (the node agent runs with
//   hostNetwork, beside the kubelet). It is the test istio-cni's probe SNAT
//   rule makes (`-m owner --socket-exists`), done here by reading the
//   namespace's socket table. Traffic that only passes through the node has
//   no socket in it: another node, another pod, NodePort traffic kube-proxy
//   masqueraded to the node's own address (conntrack never hands out a
//   tuple a local socket holds). A packet forged with a node address as its
//   source does not get that far: the node's kernel drops it as a martian
//   (accept_local=0), and were it delivered, the pod's SYN-ACK would go to
//   the node, which holds no such socket and answers RST.
// - addresses (`--probe-sources`): trusted on the address alone, for a
//   kubelet outside the agent's network namespace or probes the operator's
//   own rule SNATs to one address (istio-cni uses 169.254.7.127). Anyone who
//   can send from such an address is exempt too, so it must be one nothing
//   outside the node can use.
//
// The socket table is read only for connections whose source is one of the
// namespace's own addresses (a socket of the node connecting to a pod has
// one): plaintext from pods never pays for it.
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';

/** Which plaintext connections count as the node's own (kubelet probes) and skip policy. */
export interface ProbeSources {
  /** A connection whose other end is a socket of this process's network namespace. */
  node: boolean;
  /** Sources trusted on the address alone. */
  addresses: string[];
}

/** How an exempted connection was recognised (the metric's label). */
export type NodeOriginVia = 'node_socket' | 'probe_address';

/** A plaintext connection as the pod's side saw it: the source, and the destination the source dialed. */
export interface PlainConnection {
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

/** What the host is asked; tests replace it. */
export interface HostView {
  /** Addresses held by this process's network namespace. */
  localAddresses(): string[];
  /** The text of /proc/net/tcp (family 4) or /proc/net/tcp6 (6) of this network namespace. */
  socketTable(family: 4 | 6): Promise<string>;
}

/** The host this process runs in. */
export const THIS_HOST: HostView = {
  localAddresses: () =>
    Object.values(os.networkInterfaces())
      .flat()
      .flatMap((a) => (a ? [a.address] : [])),
  // thread-self, not self: libuv's threads never leave this namespace, while
  // the main thread may be inside a pod's for a moment (datapath/netns.ts).
  socketTable: (family) => fs.readFile(`/proc/thread-self/net/${family === 4 ? 'tcp' : 'tcp6'}`, 'latin1'),
};

/** The flag's value (`node`, `none`, addresses, comma-separated); a string says what is wrong. */
export function parseProbeSources(raw: string): ProbeSources | string {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) return 'is empty; give node, none, or addresses such as node,169.254.7.127';
  if (items.includes('none')) return items.length === 1 ? { node: false, addresses: [] } : 'none excludes every other item';
  const bad = items.filter((s) => s !== 'node' && net.isIP(s) === 0);
  if (bad.length) return `${bad.map((b) => JSON.stringify(b)).join(', ')}: neither node nor an IP address`;
  return { node: items.includes('node'), addresses: [...new Set(items.filter((s) => s !== 'node'))] };
}

export const DEFAULT_PROBE_SOURCES: ProbeSources = { node: true, addresses: [] };

/** The address:port form of /proc/net/tcp{,6} ("0100007F:1F90" on a little-endian host). */
export function procAddress(ip: string, port: number, family: 4 | 6, littleEndian = os.endianness() === 'LE'): string | undefined {
  const bytes = family === 4 ? ipv4Bytes(ip) : ipv6Bytes(ip);
  if (!bytes) return undefined;
  let hex = '';
  // The kernel prints each 32-bit word of the address as a number: its bytes in host order.
  for (let w = 0; w < bytes.length; w += 4) {
    const word = bytes.slice(w, w + 4);
    if (littleEndian) word.reverse();
    hex += word.map((b) => b.toString(16).padStart(2, '0')).join('');
  }
  return `${hex.toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Whether a socket table holds a socket with this local and remote address (a listener's remote is all zeros). */
export function tableHolds(table: string, local: string, remote: string): boolean {
  for (const line of table.split('\n')) {
    const [, l, r] = line.trim().split(/\s+/);
    if (l === local && r === remote) return true;
  }
  return false;
}

/** Decides whether a plaintext connection is the node's own; one per process, shared by its pods. */
export class NodeOrigin {
  private readonly trusted: Set<string>;
  private local: { at: number; addresses: Set<string> } | undefined;

  constructor(
    private readonly sources: ProbeSources,
    private readonly host: HostView = THIS_HOST,
    private readonly now: () => number = Date.now,
  ) {
    this.trusted = new Set(sources.addresses.map(canonical));
  }

  /** False when the connection cannot be the node's: decided at once, at no cost. */
  candidate(srcIp: string): boolean {
    const ip = canonical(srcIp);
    return this.trusted.has(ip) || (this.sources.node && this.localAddresses().has(ip));
  }

  /** How the connection was recognised as the node's, or undefined: it is not (policy applies as to anyone). */
  async check(c: PlainConnection): Promise<NodeOriginVia | undefined> {
    const src = canonical(c.srcIp);
    if (this.trusted.has(src)) return 'probe_address';
    if (!this.sources.node || !this.localAddresses().has(src)) return undefined;
    const dst = canonical(c.dstIp);
    const v4 = net.isIPv4(src) && net.isIPv4(dst);
    // An AF_INET6 socket dialing an IPv4 address shows in tcp6 with v4-mapped addresses.
    const tables: [4 | 6, string, string][] = v4
      ? [
          [4, src, dst],
          [6, `::ffff:${src}`, `::ffff:${dst}`],
        ]
      : [[6, src, dst]];
    for (const [family, s, d] of tables) {
      const local = procAddress(s, c.srcPort, family);
      const remote = procAddress(d, c.dstPort, family);
      if (!local || !remote) continue;
      if (tableHolds(await this.host.socketTable(family), local, remote)) return 'node_socket';
    }
    return undefined;
  }

  /** Re-read at most once a second: addresses change seldom, connections come often. */
  private localAddresses(): Set<string> {
    const t = this.now();
    if (!this.local || t - this.local.at >= 1000) this.local = { at: t, addresses: new Set(this.host.localAddresses().map(canonical)) };
    return this.local.addresses;
  }
}

/** One spelling per address: v4-mapped IPv6 as IPv4 (a dual-stack listener reports those). */
function canonical(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m?.[1] ?? ip.toLowerCase();
}

function ipv4Bytes(ip: string): number[] | undefined {
  if (!net.isIPv4(ip)) return undefined;
  return ip.split('.').map(Number);
}

function ipv6Bytes(ip: string): number[] | undefined {
  if (!net.isIPv6(ip)) return undefined;
  let text = ip;
  // A trailing dotted quad (::ffff:1.2.3.4) is the last two groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (quad) {
    const [a = 0, b = 0, c = 0, d = 0] = quad.split('.').map(Number);
    text = text.slice(0, -quad.length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const groups = (s: string): string[] => (s ? s.split(':') : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...Array.from({ length: 8 - h.length - t.length }, () => '0'), ...t];
  return all.flatMap((g) => {
    const n = Number.parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}
