// What the mesh costs, cross-node, in three paths measured in one run:
//   direct  n1p2 → n2p2 (NONE pods: not captured)
//   plain   n1p1 → n2p1 with `ambit node --tunnel plain`: the datapath alone
//           (connect4 → n1 relay → wire → sk_lookup → n2 relay → app)
//   hbone   n1p1 → n2p1 with `ambit node --workers 1` (HBONE: HTTP/2 CONNECT in mutual TLS)
//   hbone2  the same with two tunnel workers per node (`--workers 2`)
// Topology: 2 nodes × 2 pods; p1 of each node is in the mesh, p2 is not.
//
// Measures (bench/load.ts in the client pod, bench/server.ts in the server
// pod): 1 KiB request/response latency p50/p99 at a fixed rate, measured
// from the intended send time; new connections per second; single-stream
// throughput.
//
// Why it is fair: all pairs live in the same topology and the client and
// server programs are identical; the only differences are enrolment and the
// agents' tunnel mode and worker count. Every repeat measures direct and
// plain (agents in plain mode), then hbone and hbone2 (agents restarted in
// HBONE mode with one, then two tunnel workers, reusing their pinned
// datapath), so drift on a noisy machine hits all alike; medians over
// the repeats are compared and the min–max spread is shown. Before
// measuring, a probe checks which path each pair really takes. Agents log
// at warn: per-connection access logs are not part of the measured cost.
//
//   node dist/bench/steering.js        (BENCH_REPEATS=5 by default; root)
import { type ChildProcess, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { CLI, cleanupPins, pinDirFor, workloadOf } from '../test/helpers/fixture';
import { collect, waitFor, waitForLine } from '../test/helpers/proc';
import { type TestNode, type TestPod, Topology } from '../test/helpers/topology';
import { PORTS } from './server';
import { append, exited, fmt, lastJson, median, stop, tail } from './util';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const RR = { rate: 1000, warmupS: 0.5, seconds: 3 };
const CONN = { concurrency: 32, seconds: 3 };
const STREAM = { seconds: 3 };
const LOAD = path.resolve(__dirname, 'load.js');
const SERVER = path.resolve(__dirname, 'server.js');
const RESULTS_DIR = path.resolve(__dirname, '../../bench/results');

type PathName = 'direct' | 'plain' | 'hbone' | 'hbone2';
type Mode = 'plain' | 'hbone' | 'hbone2';
const PATHS: PathName[] = ['direct', 'plain', 'hbone', 'hbone2'];
/** How the agents run in each mode. */
const MODE_ARGS: Record<Mode, string[]> = {
  plain: ['--tunnel', 'plain', '--workers', '1'],
  hbone: ['--workers', '1'],
  hbone2: ['--workers', '2'],
};
/** Which paths are measured while the agents run in each mode. */
const MODE_PATHS: Record<Mode, PathName[]> = { plain: ['direct', 'plain'], hbone: ['hbone'], hbone2: ['hbone2'] };
type Raw = Record<string, number | string | object>;

interface Measure {
  name: string;
  args: (ip: string) => string[];
  seconds: number;
  show: (r: Raw) => string;
}
const MEASURES: Measure[] = [
  {
    name: 'rr',
    args: (ip) => ['rr', ip, String(PORTS.rr), String(RR.rate), String(RR.warmupS), String(RR.seconds)],
    seconds: RR.warmupS + RR.seconds,
    show: (r) => `p50 ${fmt(r.p50_us)} µs, p99 ${fmt(r.p99_us)} µs`,
  },
  {
    name: 'conn',
    args: (ip) => ['conn', ip, String(PORTS.conn), String(CONN.concurrency), String(CONN.seconds)],
    seconds: CONN.seconds,
    show: (r) => `${fmt(r.per_s)} conn/s, ${r.failed} failed`,
  },
  {
    name: 'stream',
    args: (ip) => ['stream', ip, String(PORTS.stream), String(STREAM.seconds)],
    seconds: STREAM.seconds,
    show: (r) => `${fmt(r.mib_per_s)} MiB/s`,
  },
];

type Medians = Record<PathName, number>;
interface Metric {
  label: string;
  measure: string;
  field: string;
  target?: (m: Medians) => { text: string; met: boolean };
}
const METRICS: Metric[] = [
  {
    label: 'request/response latency p50 (µs)',
    measure: 'rr',
    field: 'p50_us',
    target: (m) => ({ text: `added ${fmt(m.hbone - m.direct)} µs ≤ 100 µs`, met: m.hbone - m.direct <= 100 }),
  },
  {
    label: 'request/response latency p99 (µs)',
    measure: 'rr',
    field: 'p99_us',
    target: (m) => ({ text: `added ${fmt(m.hbone - m.direct)} µs ≤ 400 µs`, met: m.hbone - m.direct <= 400 }),
  },
  { label: 'new connections per second', measure: 'conn', field: 'per_s', target: (m) => ({ text: '≥ 2,000/s', met: m.hbone >= 2000 }) },
  {
    label: 'single-stream throughput (MiB/s)',
    measure: 'stream',
    field: 'mib_per_s',
    target: (m) => ({ text: '≥ 500 MiB/s', met: m.hbone >= 500 }),
  },
];

class Bench {
  topo?: Topology;
  configDir?: string;
  configFile = '';
  agents: { node: TestNode; child: ChildProcess; output: () => string }[] = [];
  readonly servers: ChildProcess[] = [];
  private cleaning?: Promise<void>;

  /** The topology, once setUp() built it. */
  get topology(): Topology {
    if (!this.topo) throw new Error('the benchmark is not set up: call setUp() first');
    return this.topo;
  }

  async setUp(): Promise<void> {
    const topo = await Topology.create({ nodes: 2, podsPerNode: 2 });
    this.topo = topo;
    this.configDir = fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-`));
    this.configFile = path.join(this.configDir, 'mesh.yaml');
    fs.writeFileSync(
      this.configFile,
      YAML.stringify({
        trustDomain: 'cluster.local',
        ca: { dir: path.join(this.configDir, 'ca') }, // kept inside the run's own directory
        nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
        workloads: topo.pods.map((p) => ({ ...workloadOf(p), protocol: p.name === 'p1' ? 'HBONE' : 'NONE' })),
      }),
    );
    for (const pod of [topo.pod(2, 1), topo.pod(2, 2)]) {
      const child = topo.spawnInPod(pod, process.execPath, [SERVER]);
      this.servers.push(child);
      const output = tail(child);
      await waitForLine(child, (l) => l.includes('"listening"'), `server in ${pod.netns}`).catch((err: Error) => {
        throw new Error(`${err.message}\n${output()}`);
      });
    }
  }

  /** (Re)starts one agent per node in the given tunnel mode and checks the paths it serves. */
  async startAgents(mode: Mode): Promise<void> {
    await this.stopAgents();
    const topo = this.topology;
    for (const node of topo.nodes) {
      const args = [
        CLI,
        'node',
        '--config',
        this.configFile,
        '--node',
        node.name,
        '--pods-cgroup',
        node.podsCgroup,
        '--pin-dir',
        pinDirFor(topo, node),
        ...MODE_ARGS[mode],
      ];
      const child = topo.spawnInNode(node, process.execPath, args, { env: { ...process.env, AMBIT_LOG_LEVEL: 'warn' } });
      this.agents.push({ node, child, output: tail(child) });
    }
    // Agents log "node ready" at info only; at warn, readiness is a probe that took the expected path.
    for (const p of MODE_PATHS[mode]) {
      const pair = this.pair(p);
      await this.expectPath(p, pair, p === 'direct' ? pair.client.ip : pair.server.ip);
    }
  }

  async stopAgents(): Promise<void> {
    await Promise.all(this.agents.map((a) => stop(a.child, 'SIGTERM', 5000)));
    this.agents = [];
  }

  pair(p: PathName): { client: TestPod; server: TestPod } {
    const j = p === 'direct' ? 2 : 1;
    return { client: this.topology.pod(1, j), server: this.topology.pod(2, j) };
  }

  /** Direct: the server sees the client pod. Through the mesh: it sees its own address (its node's tunnel delivers from inside the pod). */
  private async expectPath(name: PathName, pair: { client: TestPod; server: TestPod }, remote: string): Promise<void> {
    let seen = 'nothing';
    await waitFor(
      `${name} path`,
      async () => {
        for (const a of this.agents) if (exited(a.child)) throw new Error(`agent ${a.node.name} exited: ${a.output()}`);
        try {
          const r = await this.load(pair.client, ['probe', pair.server.ip, String(PORTS.probe)], 10_000);
          seen = String(r.remote);
        } catch (err) {
          seen = (err as Error).message;
        }
        return seen === remote;
      },
      30_000,
      200,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: expected the server to see ${remote}, last saw ${seen}`);
    });
  }

  async load(pod: TestPod, args: string[], timeoutMs: number): Promise<Raw> {
    const child = this.topology.spawnInPod(pod, process.execPath, [LOAD, ...args]);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const r = await collect(child);
    clearTimeout(timer);
    if (r.code !== 0) {
      const dead = this.agents
        .filter((a) => exited(a.child))
        .map((a) => `; agent ${a.node.name} had exited (${a.child.exitCode ?? a.child.signalCode}): ${a.output()}`);
      throw new Error(`load ${args.join(' ')} in ${pod.netns} failed (exit ${r.code}): ${r.stderr.trim()}${dead.join('')}`);
    }
    return lastJson<Raw>(r.stdout, `load ${args.join(' ')} in ${pod.netns}`);
  }

  /** Idempotent: agents, servers, topology (netns, cgroups), pins, config. */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      await this.stopAgents();
      await Promise.all(this.servers.map((s) => stop(s, 'SIGKILL', 1000)));
      if (this.topo) {
        await this.topo.destroy();
        cleanupPins(this.topo);
      }
      if (this.configDir) fs.rmSync(this.configDir, { recursive: true, force: true });
    })();
    return this.cleaning;
  }
}

/** The commit measured, and whether the work tree differed from it. */
function sourceVersion(): { commit: string; dirty: boolean | null } {
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', path.resolve(__dirname, '../..'), ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no').length > 0 };
  } catch {
    return { commit: 'unknown', dirty: null };
  }
}

async function run(bench: Bench): Promise<void> {
  const machine = { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, kernel: os.release(), node: process.version };
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, kernel ${machine.kernel}, node ${machine.node}`);
  const source = sourceVersion();
  console.log(`source: ${source.commit}${source.dirty ? ' with uncommitted changes' : ''}`);
  const [loadBefore = NaN] = os.loadavg();
  console.log(`load average before: ${loadBefore.toFixed(2)} (anything else running on the machine adds noise)`);
  console.log(
    `repeats: ${REPEATS}; rr ${RR.rate} req/s for ${RR.seconds} s after ${RR.warmupS} s; ` +
      `conn ×${CONN.concurrency} for ${CONN.seconds} s; stream ${STREAM.seconds} s`,
  );
  const started = Date.now();
  await bench.setUp();
  const topo = bench.topology;
  console.error(`topology ${topo.prefix} up (${((Date.now() - started) / 1000).toFixed(1)} s)`);

  const raw: Record<PathName, Record<string, Raw[]>> = { direct: {}, plain: {}, hbone: {}, hbone2: {} };
  const odd: string[] = [];
  for (let rep = 1; rep <= REPEATS; rep++) {
    for (const mode of ['plain', 'hbone', 'hbone2'] as const) {
      await bench.startAgents(mode);
      for (const m of MEASURES) {
        for (const p of MODE_PATHS[mode]) {
          const { client, server } = bench.pair(p);
          const r = await bench.load(client, m.args(server.ip), (m.seconds + 40) * 1000);
          append(raw[p], m.name, r);
          console.error(`repeat ${rep}/${REPEATS} ${m.name.padEnd(6)} ${p.padEnd(6)} ${m.show(r)}`);
          if (Number(r.failed) > 0) odd.push(`repeat ${rep} ${m.name} ${p}: ${r.failed} failed connections ${JSON.stringify(r.errors)}`);
        }
      }
      for (const a of bench.agents) if (exited(a.child)) odd.push(`agent ${a.node.name} (${mode}) exited during the run: ${a.output()}`);
    }
  }
  await bench.stopAgents();

  const summary = METRICS.map((mt) => {
    const values = Object.fromEntries(PATHS.map((p) => [p, (raw[p][mt.measure] ?? []).map((r) => Number(r[mt.field]))])) as Record<
      PathName,
      number[]
    >;
    const med = Object.fromEntries(PATHS.map((p) => [p, median(values[p])])) as Record<PathName, number>;
    const spread = Object.fromEntries(PATHS.map((p) => [p, { min: Math.min(...values[p]), max: Math.max(...values[p]) }])) as Record<
      PathName,
      { min: number; max: number }
    >;
    const target = mt.target?.(med);
    return {
      metric: mt.label,
      median: med,
      ratio: { plain: med.plain / med.direct, hbone: med.hbone / med.direct, hbone2: med.hbone2 / med.hbone },
      spread,
      target,
      values,
    };
  });

  const lines = [
    '| metric | direct | plain relay | HBONE (1 worker) | HBONE (2 workers) | plain / direct | HBONE / direct | 2 workers / 1 |' +
      ' HBONE target (1 worker) | spread (min–max) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---|',
    ...summary.map(
      (s) =>
        `| ${s.metric} | ${fmt(s.median.direct)} | ${fmt(s.median.plain)} | ${fmt(s.median.hbone)} | ${fmt(s.median.hbone2)} ` +
        `| ${s.ratio.plain.toFixed(2)}× | ${s.ratio.hbone.toFixed(2)}× | ${s.ratio.hbone2.toFixed(2)}× ` +
        `| ${s.target ? `${s.target.text}: ${s.target.met ? 'met' : 'not met'}` : ''} ` +
        `| ${PATHS.map((p) => `${p} ${fmt(s.spread[p].min)}–${fmt(s.spread[p].max)}`).join(', ')} |`,
    ),
  ];
  console.log(`\nmedians of ${REPEATS} repeats, cross-node; direct = n1p2 → n2p2; plain and HBONE = n1p1 → n2p1 through ambit\n`);
  console.log(lines.join('\n'));
  const lag = PATHS.map(
    (p) =>
      `${p} p50 ${fmt(median((raw[p].rr ?? []).map((r) => Number(r.sendLag_p50_us))))} µs, ` +
      `p99 ${fmt(median((raw[p].rr ?? []).map((r) => Number(r.sendLag_p99_us))))} µs`,
  );
  console.log(`\nload generator send lag behind the intended time (included in the latencies): ${lag.join('; ')}`);
  const [loadAfter = NaN] = os.loadavg();
  for (const o of odd) console.log(`warning: ${o}`);

  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `steering-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(
    file,
    `${JSON.stringify(
      {
        benchmark: 'steering',
        date: new Date().toISOString(),
        machine,
        source,
        repeats: REPEATS,
        config: {
          rr: { ...RR, size: 1024 },
          conn: CONN,
          stream: STREAM,
          pairs: {
            direct: 'n1p2 → n2p2 (NONE)',
            plain: 'n1p1 → n2p1 (ambit node --tunnel plain)',
            hbone: 'n1p1 → n2p1 (ambit node --workers 1, HBONE)',
            hbone2: 'n1p1 → n2p1 (ambit node --workers 2, HBONE)',
          },
        },
        summary,
        raw,
        warnings: odd,
        loadAverage: { before: loadBefore, after: loadAfter },
        durationS: (Date.now() - started) / 1000,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nresults: ${file}`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, cgroups, eBPF): run `sudo make bench`');
  if (!Number.isInteger(REPEATS) || REPEATS < 1)
    throw new Error(`BENCH_REPEATS must be a positive integer, got ${process.env.BENCH_REPEATS}`);
  const bench = new Bench();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      void bench.cleanup().finally(() => process.exit(130));
    });
  }
  try {
    await run(bench);
  } finally {
    await bench.cleanup();
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
