// The comparison's test bed and its four ways of carrying a pod's traffic
// to a pod on the other node. Pod j of n1 is the client of pod j of n2; the
// first K pairs are in the mesh while a mode runs, the same server program
// (bench/server.ts) answers in every server pod, and the same load program
// (bench/load.ts) runs in the client pod:
//   nomesh   no mesh process; the client dials the server pod directly
//   ambient  one `ambit node` per node (HBONE between the nodes' agents)
//   sidecar  one `ambit sidecar` inside every mesh pod (its netns, its cgroup)
//   stunnel  one stunnel per mesh pod; the client dials its local stunnel
// A mode is ready once a probe from every client pod took the mode's path
// (the server sees the client's address directly, its own address through
// ambit, 127.0.0.1 through stunnel), and, for ambit, only after each
// process has enrolled its pods: a server-side ambit alone would also
// deliver a plain connection from inside the server pod. Ambit processes
// log at warn: readiness is that probe, not the info-level "ready" line,
// and per-connection access logs are not part of the measured cost.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { cleanupDatapath, datapathStatus } from '../src/datapath/status';
import { CLI, cleanupPins, PODAPP, pinDirFor, workloadOf } from '../test/helpers/fixture';
import { collect, sh, waitFor, waitForLine } from '../test/helpers/proc';
import { type TestPod, Topology } from '../test/helpers/topology';
import { PORTS } from './server';
import { CLIENT_OFFSET, clientConfig, issueCert, type Measure, serverConfig } from './stunnel';
import { commOf, eachLimited, exited, lastJson, pidOf, stop, tail, withDescendants } from './util';

export type Mode = 'nomesh' | 'ambient' | 'sidecar' | 'stunnel';
export const MODES: Mode[] = ['nomesh', 'ambient', 'sidecar', 'stunnel'];
export const MESH_MODES: Mode[] = ['ambient', 'sidecar', 'stunnel'];
export const MODE_LABEL: Record<Mode, string> = { nomesh: 'no mesh', ambient: 'ambient', sidecar: 'sidecar', stunnel: 'stunnel' };
export type Raw = Record<string, number | string | object>;
export interface Pair {
  j: number;
  client: TestPod;
  server: TestPod;
}

const LOAD = path.resolve(__dirname, 'load.js');
const SERVER = path.resolve(__dirname, 'server.js');
/** Pairs started (and probed) at the same time; each ambit process costs ~1 s of CPU to start. */
const START_CONCURRENCY = 6;
const QUIET = { ...process.env, AMBIT_LOG_LEVEL: 'warn' };

export interface MeshProc {
  label: string;
  child: ChildProcess;
  output: () => string;
  pinDir?: string;
}

export class Testbed {
  topo?: Topology;
  dir = '';
  mode?: Mode;
  k = 0;
  procs: MeshProc[] = [];
  /** Changes the mesh file of the next mode started (bench/waypoint.ts adds its service, waypoint and routes). */
  meshExtras?: (mesh: { workloads: Record<string, unknown>[] } & Record<string, unknown>) => void;
  private readonly servers: ChildProcess[] = [];
  private readonly pinDirs = new Set<string>();
  private cleaning?: Promise<void>;

  get caDir(): string {
    return path.join(this.dir, 'ca');
  }

  /** The topology, once setUp() built it. */
  get topology(): Topology {
    if (!this.topo) throw new Error('the test bed is not set up: call setUp() first');
    return this.topo;
  }

  /** 2 nodes × maxPairs pods, the run's CA, and a server in every server pod. */
  async setUp(maxPairs: number): Promise<void> {
    const topo = await Topology.create({ nodes: 2, podsPerNode: maxPairs });
    this.topo = topo;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-`));
    await sh(process.execPath, [CLI, 'ca', 'init', '--dir', this.caDir]);
    await eachLimited(topo.node(2).pods, 8, async (pod) => {
      const child = topo.spawnInPod(pod, process.execPath, [SERVER]);
      this.servers.push(child);
      const output = tail(child);
      await waitForLine(child, (l) => l.includes('"listening"'), `server in ${pod.netns}`, 30_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${output()}`);
      });
    });
  }

  /** Pair j (from 1): pod j of n1 and pod j of n2. */
  pair(j: number): Pair {
    return { j, client: this.topology.pod(1, j), server: this.topology.pod(2, j) };
  }

  pairs(k: number): Pair[] {
    return Array.from({ length: k }, (_, i) => this.pair(i + 1));
  }

  /** Where the client program dials in the current mode. */
  target(pair: Pair, measure: Measure): { ip: string; port: number } {
    return this.mode === 'stunnel'
      ? { ip: '127.0.0.1', port: PORTS[measure] + CLIENT_OFFSET }
      : { ip: pair.server.ip, port: PORTS[measure] };
  }

  private expectedRemote(pair: Pair): string {
    switch (this.mode) {
      case 'nomesh':
        return pair.client.ip;
      case 'stunnel':
        return '127.0.0.1';
      default:
        return pair.server.ip;
    }
  }

  /** Starts a mode for the first k pairs and waits until every pair takes its path. */
  async start(mode: Mode, k: number): Promise<void> {
    if (this.mode) await this.stopMode();
    this.mode = mode;
    this.k = k;
    const pairs = this.pairs(k);
    if (mode === 'ambient') {
      const config = this.writeConfig(mode, k);
      const topo = this.topology;
      for (const node of topo.nodes) {
        const pinDir = pinDirFor(topo, node);
        const args = [CLI, 'node', '--config', config, '--node', node.name, '--pods-cgroup', node.podsCgroup, '--pin-dir', pinDir];
        this.spawn(`agent ${node.name}`, topo.spawnInNode(node, process.execPath, args, { env: QUIET }), pinDir);
      }
      await this.enrolled(this.procs, k);
    }
    if (mode === 'sidecar') this.writeConfig(mode, k);
    await eachLimited(pairs, START_CONCURRENCY, async (pair) => {
      if (mode === 'sidecar')
        await this.enrolled(
          [pair.server, pair.client].map((pod) => this.startSidecar(pod)),
          1,
        );
      if (mode === 'stunnel') await this.startStunnels(pair);
      await this.expectPath(pair);
    });
    for (const p of this.procs) {
      const pid = pidOf(p.child, p.label);
      const comm = commOf(pid);
      if (comm === 'bash' || comm === 'nsenter') throw new Error(`${p.label}: pid ${pid} is ${comm}, not the mesh process itself`);
    }
  }

  /** Stops the mode's processes and removes the capture they left pinned (it would fail the next mode closed). */
  async stopMode(): Promise<void> {
    await Promise.all(this.procs.map((p) => stop(p.child, 'SIGTERM', 5000)));
    this.procs = [];
    for (const dir of this.pinDirs) cleanupDatapath(dir);
    this.pinDirs.clear();
    this.mode = undefined;
  }

  /** Every mesh process: those started here and their descendants (an agent's tunnel workers). */
  meshPids(): number[] {
    return withDescendants(this.procs.map((p) => pidOf(p.child, p.label)));
  }

  /** Mesh processes that died; each with the end of its output. */
  deaths(): string[] {
    return this.procs
      .filter((p) => exited(p.child))
      .map((p) => `${p.label} exited (${p.child.exitCode ?? p.child.signalCode}): ${p.output()}`);
  }

  async load(pod: TestPod, args: string[], timeoutMs: number): Promise<Raw> {
    const child = this.topology.spawnInPod(pod, process.execPath, [LOAD, ...args]);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const r = await collect(child);
    clearTimeout(timer);
    if (r.code !== 0)
      throw new Error(
        `load ${args.join(' ')} in ${pod.netns} failed (exit ${r.code}): ${r.stderr.trim()}${this.deaths()
          .map((d) => `; ${d}`)
          .join('')}`,
      );
    return lastJson<Raw>(r.stdout, `load ${args.join(' ')} in ${pod.netns}`);
  }

  /** Opens n short connections (c at a time) on every pair, so pools and TLS state exist; returns the failures. */
  async warmUp(k: number, n: number, c: number): Promise<number> {
    let failed = 0;
    await eachLimited(this.pairs(k), 8, async (pair) => {
      const { ip, port } = this.target(pair, 'probe');
      const r = await collect(
        this.topology.spawnInPod(pair.client, process.execPath, [PODAPP, 'dial', ip, String(port), String(n), String(c), '5000']),
      );
      if (r.code !== 0) throw new Error(`warm-up dial in ${pair.client.netns} failed: ${r.stderr}`);
      failed += lastJson<{ failed: number }>(r.stdout, `warm-up dial in ${pair.client.netns}`).failed;
    });
    return failed;
  }

  /** Idempotent: mesh processes, servers, topology (netns, cgroups), every pin of this run, temp dir. */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      await Promise.all(this.procs.map((p) => stop(p.child, 'SIGKILL', 1000)));
      this.procs = [];
      await Promise.all(this.servers.map((s) => stop(s, 'SIGKILL', 1000)));
      if (this.topo) {
        await this.topo.destroy();
        cleanupPins(this.topo);
        const prefix = this.topo.prefix;
        for (const name of fs.readdirSync('/sys/fs/bpf').filter((n) => n.startsWith(`${prefix}-`)))
          cleanupDatapath(path.join('/sys/fs/bpf', name));
      }
      if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.cleaning;
  }

  /** Counts a process as the current mode's: its CPU and memory are measured, it is stopped with the mode. */
  spawn(label: string, child: ChildProcess, pinDir?: string): MeshProc {
    const p: MeshProc = { label, child, output: tail(child), pinDir };
    this.procs.push(p);
    if (pinDir) this.pinDirs.add(pinDir);
    return p;
  }

  /** The mesh file a mode runs with. */
  configFile(mode: Mode, k: number): string {
    return path.join(this.dir, `mesh-${mode}-k${k}.yaml`);
  }

  private writeConfig(mode: Mode, k: number): string {
    const topo = this.topology;
    const file = this.configFile(mode, k);
    const mesh = {
      trustDomain: 'cluster.local',
      ca: { dir: this.caDir },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: topo.pods.map((p): Record<string, unknown> => {
        const inMesh = Number(p.name.slice(1)) <= k;
        return {
          ...workloadOf(p),
          serviceAccount: `sa-${p.node.name}-${p.name}`,
          protocol: inMesh ? 'HBONE' : 'NONE',
          dataplane: mode === 'sidecar' && inMesh ? 'sidecar' : 'ambient',
        };
      }),
    };
    this.meshExtras?.(mesh);
    fs.writeFileSync(file, YAML.stringify(mesh));
    return file;
  }

  private startSidecar(pod: TestPod): MeshProc {
    const pinDir = `/sys/fs/bpf/${this.topology.prefix}-sc-${pod.node.name}-${pod.name}`;
    const args = [
      CLI,
      'sidecar',
      '--config',
      path.join(this.dir, `mesh-sidecar-k${this.k}.yaml`),
      '--workload',
      pod.uid,
      '--pin-dir',
      pinDir,
    ];
    return this.spawn(
      `sidecar ${pod.node.name}-${pod.name}`,
      this.topology.spawnInPod(pod, process.execPath, args, { env: QUIET }),
      pinDir,
    );
  }

  private async startStunnels(pair: Pair): Promise<void> {
    for (const pod of [pair.server, pair.client]) {
      const certDir = path.join(this.dir, 'stunnel', `${pod.node.name}-${pod.name}`);
      await issueCert(this.caDir, certDir, pod);
      const conf = path.join(certDir, 'stunnel.conf');
      fs.writeFileSync(conf, pod === pair.server ? serverConfig(certDir) : clientConfig(certDir, pair.server.ip));
      this.spawn(`stunnel ${pod.node.name}-${pod.name}`, this.topology.spawnInPod(pod, 'stunnel', [conf]));
    }
  }

  /** Waits until each ambit process has enrolled `count` pods (read from its pinned maps). */
  private async enrolled(procs: MeshProc[], count: number): Promise<void> {
    for (const p of procs) {
      const { pinDir } = p;
      if (pinDir === undefined) throw new Error(`${p.label} has no pin directory to read its enrolled pods from`);
      await waitFor(
        `${p.label} to enrol ${count} pod(s)`,
        () => {
          if (exited(p.child)) throw new Error(`${p.label} exited: ${p.output()}`);
          try {
            return datapathStatus(pinDir).enrolledCgroups === count;
          } catch {
            return false;
          }
        },
        120_000,
        50,
      );
    }
  }

  /** A probe from the client pod until the server reports the mode's peer address. */
  private async expectPath(pair: Pair): Promise<void> {
    const want = this.expectedRemote(pair);
    const { ip, port } = this.target(pair, 'probe');
    let seen = 'nothing';
    await waitFor(
      `${this.mode} path of pair ${pair.j}`,
      async () => {
        const dead = this.deaths();
        if (dead.length) throw new Error(dead.join('; '));
        try {
          seen = String((await this.load(pair.client, ['probe', ip, String(port)], 10_000)).remote);
        } catch (err) {
          seen = (err as Error).message;
        }
        return seen === want;
      },
      60_000,
      100,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: expected the server to see ${want}, last saw ${seen}`);
    });
  }
}
