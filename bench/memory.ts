// What one `ambit node` holds in memory: the resident set (VmRSS) of the
// agent and of each of its tunnel workers, and the V8 heap in use (agent and
// workers summed, from the agent's /metrics), on the ambient test bed of
// bench/modes.ts (2 nodes, pod j of n1 → pod j of n2) at K pods per node:
//   ready   every pair takes the mesh path, nothing else happened
//   warm    after 20 short connections on every pair (pools and TLS state exist)
//   load    the peak, sampled every 100 ms, while pair 1 carries 1 KiB
//           request/response at 1,000 req/s, then 32 connections at a time,
//           then one stream as fast as it goes (3 s each)
//   after   2 s after the load
// Per node: the RSS of each process and their sum (what `make compare`
// reports), and the footprint: each process's private pages plus the pages
// they share (Node's own code, mapped by all of them) counted once.
// A memory figure is not noisy the way latency is: one run is enough.
//
//   node dist/bench/memory.js   (root; BENCH_PODS=1,50)
import fs from 'node:fs';
import path from 'node:path';
import { httpInNetns } from '../test/helpers/fixture';
import { type MeshProc, Testbed } from './modes';
import { CLOCK_TICKS, cpuTicks, fmt, pidOf, rssBytes, withDescendants } from './util';

const PODS = (process.env.BENCH_PODS ?? '1,50').split(',').map((s) => Number(s.trim()));
const WARMUP = { connections: 20, concurrency: 4 };
const LOAD = { rate: 1000, seconds: 3, concurrency: 32 };
const ROOT = path.resolve(__dirname, '../..');
const MiB = 2 ** 20;

interface NodeFigures {
  node: string;
  agentMiB: number;
  workersMiB: number[];
  totalMiB: number;
  /** What the node pays: each process's private pages, plus the pages they share (Node's code) once. */
  footprintMiB: number;
  /** V8's heap (used of total) and the memory outside it that V8 knows of (Buffers), agent and workers summed. */
  heap?: { usedMiB: number; totalMiB: number; externalMiB: number };
}
type Phase = 'ready' | 'warm' | 'load' | 'after';

/** Private and shared resident pages (/proc/<pid>/smaps_rollup); 0 for a process that exited meanwhile. */
function pages(pid: number): { privateMiB: number; sharedMiB: number } {
  let text = '';
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return { privateMiB: 0, sharedMiB: 0 };
  }
  const kB = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return {
    privateMiB: (kB('Private_Clean') + kB('Private_Dirty')) / 1024,
    sharedMiB: (kB('Shared_Clean') + kB('Shared_Dirty')) / 1024,
  };
}

/** 0 for a process that exited meanwhile (a worker being replaced): it holds nothing. */
function rssMiB(pid: number): number {
  try {
    return rssBytes(pid) / MiB;
  } catch {
    return 0;
  }
}

function figures(proc: MeshProc): NodeFigures {
  const agent = pidOf(proc.child, proc.label);
  const workers = withDescendants([agent]).filter((pid) => pid !== agent);
  const agentMiB = rssMiB(agent);
  const workersMiB = workers.map(rssMiB);
  const split = [agent, ...workers].map(pages);
  const footprintMiB = split.reduce((a, p) => a + p.privateMiB, 0) + Math.max(0, ...split.map((p) => p.sharedMiB));
  return { node: proc.label, agentMiB, workersMiB, totalMiB: agentMiB + workersMiB.reduce((a, b) => a + b, 0), footprintMiB };
}

/** Agent and workers summed: the agent aggregates its workers' prom-client metrics. */
async function heap(bed: Testbed, i: number): Promise<NodeFigures['heap']> {
  const node = bed.topology.nodes[i];
  if (!node) return undefined;
  const text = (await httpInNetns(node, '127.0.0.1', 15020, 'GET', '/metrics').catch(() => ({ body: '' }))).body;
  const metric = (name: string): number => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    return m?.[1] ? Number(m[1]) / MiB : NaN;
  };
  return {
    usedMiB: metric('nodejs_heap_size_used_bytes'),
    totalMiB: metric('nodejs_heap_size_total_bytes'),
    externalMiB: metric('nodejs_external_memory_bytes'),
  };
}

async function snapshot(bed: Testbed): Promise<NodeFigures[]> {
  return Promise.all(bed.procs.map(async (p, i) => ({ ...figures(p), heap: await heap(bed, i) })));
}

/** The larger total of each node, sampled while `work` runs. */
async function peakDuring(bed: Testbed, work: () => Promise<unknown>): Promise<NodeFigures[]> {
  let peak = bed.procs.map(figures);
  const sample = setInterval(() => {
    peak = bed.procs.map((p, i) => {
      const now = figures(p);
      const before = peak[i];
      return before && before.totalMiB > now.totalMiB ? before : now;
    });
  }, 100);
  try {
    await work();
  } finally {
    clearInterval(sample);
  }
  return peak;
}

const line = (k: number, phase: Phase, f: NodeFigures): string =>
  `K=${String(k).padEnd(3)} ${phase.padEnd(6)} ${f.node.padEnd(12)} total ${fmt(f.totalMiB).padStart(6)} MiB = agent ${fmt(f.agentMiB)}` +
  ` + workers ${f.workersMiB.map(fmt).join(' + ') || '(none)'}; footprint ${fmt(f.footprintMiB)} MiB` +
  (f.heap ? `; V8 heap ${fmt(f.heap.usedMiB)} of ${fmt(f.heap.totalMiB)} MiB, external ${fmt(f.heap.externalMiB)} MiB` : '');

async function main(): Promise<void> {
  const bed = new Testbed();
  const results: { k: number; phase: Phase; nodes: NodeFigures[] }[] = [];
  const cleanupOnSignal = (): void => void bed.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', cleanupOnSignal);
  process.once('SIGTERM', cleanupOnSignal);
  try {
    await bed.setUp(Math.max(...PODS));
    for (const k of PODS) {
      await bed.start('ambient', k);
      const record = (phase: Phase, nodes: NodeFigures[]): void => {
        results.push({ k, phase, nodes });
        for (const f of nodes) console.log(line(k, phase, f));
      };
      record('ready', await snapshot(bed));
      const failed = await bed.warmUp(k, WARMUP.connections, WARMUP.concurrency);
      if (failed) console.error(`K=${k}: ${failed} warm-up connections failed`);
      await new Promise((r) => setTimeout(r, 1000)); // connection teardown
      record('warm', await snapshot(bed));
      const pair = bed.pair(1);
      const { ip, port } = bed.target(pair, 'rr');
      const conn = bed.target(pair, 'conn');
      const stream = bed.target(pair, 'stream');
      const peak = await peakDuring(bed, async () => {
        const pids = bed.meshPids();
        const ticks = (): number => pids.reduce((a, pid) => a + cpuTicks(pid), 0);
        const t0 = ticks();
        const rr = await bed.load(pair.client, ['rr', ip, String(port), String(LOAD.rate), '0.5', String(LOAD.seconds)], 60_000);
        const c = await bed.load(pair.client, ['conn', conn.ip, String(conn.port), String(LOAD.concurrency), String(LOAD.seconds)], 60_000);
        const s = await bed.load(pair.client, ['stream', stream.ip, String(stream.port), String(LOAD.seconds)], 60_000);
        const cpuS = (ticks() - t0) / CLOCK_TICKS;
        // Not a latency benchmark (make compare is): a sanity check that the settings measured here do not cost the load.
        console.log(
          `K=${String(k).padEnd(3)} load: rr ${LOAD.rate}/s p50 ${fmt(rr.p50_us)} µs p90 ${fmt(rr.p90_us)} µs; ` +
            `${fmt(c.per_s)} conn/s; stream ${fmt(s.mib_per_s)} MiB/s; mesh CPU ${fmt(cpuS)} s`,
        );
      });
      record('load', peak);
      await new Promise((r) => setTimeout(r, 2000));
      record('after', await snapshot(bed));
      for (const d of bed.deaths()) console.error(`K=${k}: ${d}`);
      await bed.stopMode();
    }
  } finally {
    await bed.cleanup();
  }
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `memory-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ node: process.version, results }, null, 2)}\n`);
  console.log(`results: ${path.relative(ROOT, file)}`);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
