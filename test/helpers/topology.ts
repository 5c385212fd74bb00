// The test bed: N "nodes" × M "pods" on one machine, from real kernel
// objects. A node is a network namespace; nodes are joined through a
// bridge in a "switch" namespace (the wire). A pod is a network namespace
// with a veth to its node plus its own cgroup v2 directory under the node's
// pods cgroup. Every name carries a unique prefix so concurrent runs never
// collide, and destroy() removes processes, cgroups and namespaces even
// after a failure part-way through create(). Processes started in a node or
// the switch live in a cgroup of their own beside the nodes' (outside every
// pods cgroup, so capture leaves them alone): destroy() kills whatever they
// started too, not only the process it was handed.
//
// Addressing: node i has 10.201.0.i on the wire, the switch itself
// 10.201.0.254 (where a control plane runs, reachable from every node) and routes 10.200.k.0/24
// to node k; pod j of node i is 10.200.i.(10+j)/32 behind a veth whose node
// end holds the gateway address 169.254.1.1 (every pod has the same
// gateway, as in Calico). With `ula`, IPv6 beside it: node i has
// fd00:201::i/64 on the wire and routes fd00:200:k::/64 to node k; pod j of
// node i is fd00:200:i::(10+j)/128 with the gateway fe80::1 on every
// pod-facing veth.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cgroup2Root } from '../../src/datapath/probe';
import { sh } from './proc';

export interface TestPod {
  name: string; // p1, p2, … (unique within its node)
  uid: string; // <prefix>/<node>-<pod>: unique across runs
  node: TestNode;
  netns: string; // netns name
  netnsPath: string; // /var/run/netns/<name>
  ip: string;
  /** Its IPv6 (ULA) address, when the topology was built with `ula`. */
  ip6?: string;
  cgroup: string; // absolute cgroup v2 directory
}

export interface TestNode {
  name: string; // n1, n2, …
  index: number;
  netns: string;
  netnsPath: string;
  wireIp: string;
  wireIp6?: string;
  podsCgroup: string;
  pods: TestPod[];
}

/** The switch namespace's address on the wire: a place for a control plane every node reaches. */
export const SWITCH_IP = '10.201.0.254';

export interface TopologyOptions {
  nodes: number;
  podsPerNode: number;
  prefix?: string;
  /** Add IPv6 unique local addresses (fd00::/8) to nodes and pods, beside the IPv4 ones. */
  ula?: boolean;
}

const NETNS_DIR = '/var/run/netns';

export class Topology {
  readonly nodes: TestNode[] = [];
  readonly cgroupRoot: string;
  /** Where node and switch processes run: outside the pods cgroups, inside the tree destroy() kills. */
  private readonly hostCgroup: string;
  private readonly switchNs: string;
  private readonly children = new Set<ChildProcess>();

  private constructor(readonly prefix: string) {
    const root = cgroup2Root();
    if (!root) throw new Error('no cgroup v2 mount: mount -t cgroup2 none /sys/fs/cgroup/unified');
    this.cgroupRoot = path.join(root, prefix);
    this.hostCgroup = path.join(this.cgroupRoot, 'host');
    this.switchNs = `${prefix}-sw`;
  }

  static async create(opts: TopologyOptions): Promise<Topology> {
    const t = new Topology(opts.prefix ?? uniquePrefix());
    try {
      await t.build(opts);
      return t;
    } catch (err) {
      await t.destroy();
      throw err;
    }
  }

  get pods(): TestPod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /** Node i (1-based, as in the names n1, n2, …). */
  node(i: number): TestNode {
    const n = this.nodes[i - 1];
    if (!n) throw new Error(`no node n${i}: the topology has ${this.nodes.length}`);
    return n;
  }

  /** Pod j of node i (1-based, as in the names n1p1, …). */
  pod(node: number, pod: number): TestPod {
    const p = this.node(node).pods[pod - 1];
    if (!p) throw new Error(`no pod p${pod} on n${node}: it has ${this.node(node).pods.length}`);
    return p;
  }

  private async build({ nodes, podsPerNode, ula }: TopologyOptions): Promise<void> {
    fs.mkdirSync(this.cgroupRoot);
    fs.mkdirSync(this.hostCgroup);
    await sh('ip', ['netns', 'add', this.switchNs]);
    const ipSw = ['-n', this.switchNs];
    await sh('ip', [...ipSw, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh('ip', [...ipSw, 'link', 'set', 'br0', 'up']);
    await sh('ip', [...ipSw, 'link', 'set', 'lo', 'up']);
    await sh('ip', [...ipSw, 'addr', 'add', `${SWITCH_IP}/24`, 'dev', 'br0']);

    for (let i = 1; i <= nodes; i++) {
      const node: TestNode = {
        name: `n${i}`,
        index: i,
        netns: `${this.prefix}-n${i}`,
        netnsPath: '',
        wireIp: `10.201.0.${i}`,
        podsCgroup: path.join(this.cgroupRoot, `n${i}`),
        pods: [],
      };
      node.netnsPath = path.join(NETNS_DIR, node.netns);
      this.nodes.push(node);
      fs.mkdirSync(node.podsCgroup);
      await sh('ip', ['netns', 'add', node.netns]);
      const ipN = ['-n', node.netns];
      await sh('ip', [...ipN, 'link', 'set', 'lo', 'up']);
      await sh('ip', [...ipN, 'link', 'add', 'wire0', 'type', 'veth', 'peer', 'name', `w${i}`, 'netns', this.switchNs]);
      await sh('ip', [...ipSw, 'link', 'set', `w${i}`, 'master', 'br0', 'up']);
      await sh('ip', [...ipN, 'addr', 'add', `${node.wireIp}/24`, 'dev', 'wire0']);
      await sh('ip', [...ipN, 'link', 'set', 'wire0', 'up']);
      await this.sysctl(node.netnsPath, 'net.ipv4.ip_forward', '1');
      if (ula) {
        node.wireIp6 = `fd00:201::${i}`;
        // nodad: usable at once, not after duplicate address detection.
        await sh('ip', [...ipN, '-6', 'addr', 'add', `${node.wireIp6}/64`, 'dev', 'wire0', 'nodad']);
        await this.sysctl(node.netnsPath, 'net.ipv6.conf.all.forwarding', '1');
      }

      for (let j = 1; j <= podsPerNode; j++) {
        const pod: TestPod = {
          name: `p${j}`,
          uid: `${this.prefix}/n${i}-p${j}`,
          node,
          netns: `${this.prefix}-n${i}p${j}`,
          netnsPath: '',
          ip: `10.200.${i}.${10 + j}`,
          cgroup: path.join(node.podsCgroup, `p${j}`),
        };
        pod.netnsPath = path.join(NETNS_DIR, pod.netns);
        node.pods.push(pod);
        fs.mkdirSync(pod.cgroup);
        await sh('ip', ['netns', 'add', pod.netns]);
        const ipP = ['-n', pod.netns];
        await sh('ip', [...ipN, 'link', 'add', `p${j}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns]);
        // Every pod-facing veth carries the gateway address: the node answers ARP for it.
        await sh('ip', [...ipN, 'addr', 'add', '169.254.1.1/32', 'dev', `p${j}`]);
        await sh('ip', [...ipN, 'link', 'set', `p${j}`, 'up']);
        await sh('ip', [...ipN, 'route', 'add', `${pod.ip}/32`, 'dev', `p${j}`]);
        await sh('ip', [...ipP, 'link', 'set', 'lo', 'up']);
        await sh('ip', [...ipP, 'addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
        await sh('ip', [...ipP, 'link', 'set', 'eth0', 'up']);
        await sh('ip', [...ipP, 'route', 'add', '169.254.1.1', 'dev', 'eth0']);
        await sh('ip', [...ipP, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0', 'onlink']);
        if (ula) {
          pod.ip6 = `fd00:200:${i}::${10 + j}`;
          await sh('ip', [...ipN, '-6', 'addr', 'add', 'fe80::1/64', 'dev', `p${j}`, 'nodad']);
          await sh('ip', [...ipN, '-6', 'route', 'add', `${pod.ip6}/128`, 'dev', `p${j}`]);
          await sh('ip', [...ipP, '-6', 'addr', 'add', `${pod.ip6}/128`, 'dev', 'eth0', 'nodad']);
          await sh('ip', [...ipP, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0']);
        }
      }
    }
    for (const a of this.nodes) {
      for (const b of this.nodes) {
        if (a !== b) await sh('ip', ['-n', a.netns, 'route', 'add', `10.200.${b.index}.0/24`, 'via', b.wireIp]);
        if (a !== b && b.wireIp6) await sh('ip', ['-n', a.netns, '-6', 'route', 'add', `fd00:200:${b.index}::/64`, 'via', b.wireIp6]);
      }
    }
  }

  private sysctl(nsPath: string, key: string, value: string): Promise<string> {
    return sh('nsenter', [`--net=${nsPath}`, '--', 'sysctl', '-qw', `${key}=${value}`]);
  }

  /** Starts a process inside a pod: in its cgroup (before exec) and its netns. */
  spawnInPod(pod: TestPod, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.spawnIn(pod.cgroup, pod.netnsPath, cmd, args, opts);
  }

  /** Starts a process in a node's netns (outside every pod cgroup, as the agent runs). */
  spawnInNode(node: TestNode, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.spawnIn(this.hostCgroup, node.netnsPath, cmd, args, opts);
  }

  /** Starts a process in the switch netns (reachable from every node at SWITCH_IP). */
  spawnInSwitch(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.spawnIn(this.hostCgroup, path.join(NETNS_DIR, this.switchNs), cmd, args, opts);
  }

  /** Joins the cgroup before exec, so whatever the command starts is in it as well. */
  private spawnIn(cgroup: string, netnsPath: string, cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
    return this.track(
      spawn('bash', ['-c', `echo $$ > ${cgroup}/cgroup.procs && exec nsenter --net=${netnsPath} -- "$@"`, 'bash', cmd, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...opts,
      }),
    );
  }

  private track(child: ChildProcess): ChildProcess {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Removes everything; safe to call twice and after a partial create(). */
  async destroy(): Promise<void> {
    const children = [...this.children];
    for (const c of children) c.kill('SIGKILL');
    killCgroupTree(this.cgroupRoot);
    // Namespaces go even if a process outlives its SIGKILL; the error says which one after.
    const stuck = (await Promise.allSettled(children.map((c) => exited(c, 10_000)))).flatMap((r) =>
      r.status === 'rejected' ? [r.reason as Error] : [],
    );
    const names = [...this.nodes.flatMap((n) => [...n.pods.map((p) => p.netns), n.netns]), this.switchNs];
    for (const ns of names) {
      if (fs.existsSync(path.join(NETNS_DIR, ns))) await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
    await removeCgroupTree(this.cgroupRoot);
    if (stuck.length) throw new AggregateError(stuck, stuck.map((e) => e.message).join('; '));
  }
}

/** Resolves once child has exited; rejects naming it if that takes longer than ms. */
function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`pid ${child.pid} (${child.spawnargs.join(' ')}) still running ${ms} ms after SIGKILL`)),
      ms,
    );
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function uniquePrefix(): string {
  return `at${randomBytes(3).toString('hex')}`;
}

function killCgroupTree(dir: string): void {
  if (!fs.existsSync(dir)) return;
  // cgroup.kill (Linux 5.14+) kills the whole subtree at once, even processes forking meanwhile.
  const kill = path.join(dir, 'cgroup.kill');
  if (fs.existsSync(kill)) {
    fs.writeFileSync(kill, '1');
    return;
  }
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) killCgroupTree(path.join(dir, e.name));
  for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** rmdir children first; a cgroup is removable once its killed processes are reaped. */
async function removeCgroupTree(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) await removeCgroupTree(path.join(dir, e.name));
  for (let i = 0; ; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || i >= 100) throw err;
      await new Promise((r) => setTimeout(r, 20)); // processes still exiting
    }
  }
}
