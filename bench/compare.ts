// Side by side, cross-node, pod j of n1 → pod j of n2: no mesh, ambient
// (one ambit per node), sidecar (one ambit per pod) and stunnel (one
// stunnel per pod, the C/OpenSSL mutual-TLS reference). See bench/modes.ts
// for how each mode is started and checked.
//
// Measured at K = 1 pair (bench/load.ts in the client pod, bench/server.ts
// in the server pod): 1 KiB request/response latency p50/p90/p99 at 100 and
// at 1,000 req/s on one persistent connection, open loop from the intended
// send time; new connections per second (32 at a time); single-stream and
// 8-stream throughput; the CPU time (utime + stime, all threads) the mesh
// processes spent during the 1,000 req/s run and the connection run.
// Measured at K = 1, 10, 50 pairs: total resident memory of the mesh
// processes once ready and after 20 connections on every pair (so pools
// and TLS state exist), once per K.
// Then HTTP/1.1 at 1,000 req/s through no mesh, ambient L4 and ambient +
// waypoint (bench/waypoint.ts): added p50/p99 and CPU per 1,000 requests.
//
// Why it is fair: every mode runs in the same topology with identical client
// and server programs, and only one mode's processes run at a time. Each
// repeat starts, checks, measures and stops every mode in turn, so drift on
// a noisy machine hits all alike; medians over the repeats are compared and
// the min–max spread is shown. Every mesh process logs at warning level.
//
//   node dist/bench/compare.js   (root; BENCH_REPEATS=3, BENCH_PODS=1,10,50,
//   BENCH_MODES=nomesh,ambient,sidecar,stunnel,waypoint: the L4 table runs
//   when its four modes are listed, the HTTP one for waypoint with whichever
//   of nomesh and ambient are listed)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderChart } from './chart';
import { MESH_MODES, MODE_LABEL, MODES, type Mode, Testbed } from './modes';
import { goals, type MemoryPoint, mainTable, mediansOf, memoryTable, type RawByMode, summarise } from './report';
import { append, CLOCK_TICKS, cpuTicks, fmt, median, rssBytes } from './util';
import {
  HTTP_LABEL,
  HTTP_MIN_PODS,
  HTTP_MODES,
  HTTP_RUN,
  type HttpRaw,
  type HttpSummary,
  httpPhase,
  httpTable,
  summariseHttp,
} from './waypoint';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const PODS = (process.env.BENCH_PODS ?? '1,10,50').split(',').map((s) => Number(s.trim()));
const KNOWN_MODES = [...MODES, 'waypoint'];
const SELECTED = (process.env.BENCH_MODES ?? KNOWN_MODES.join(',')).split(',').map((s) => s.trim());
/** The L4 table compares its four modes with one another: all or none. */
const L4_PHASES = MODES.every((m) => SELECTED.includes(m));
const HTTP_SELECTED = SELECTED.includes('waypoint') ? HTTP_MODES.filter((m) => SELECTED.includes(m)) : [];
const RR_WARMUP_S = 0.5;
const RR_SECONDS = { 100: 10, 1000: 5 } as const; // 1,000 and 5,000 measured requests
const CONN = { concurrency: 32, seconds: 3 };
const STREAM = { seconds: 3, parallel: 8 };
const WARMUP = { connections: 20, concurrency: 4 };
const ROOT = path.resolve(__dirname, '../..');
const RESULTS_DIR = path.join(ROOT, 'bench/results');
const DOCS_SVG = path.join(ROOT, 'docs/bench/compare.svg');

const ticksOf = (pids: number[]): number => pids.reduce((a, pid) => a + cpuTicks(pid), 0);

/** Runs one load measure on pair 1; with the mesh processes' CPU seconds per 1,000 of `units(result)`. */
async function measure(
  bed: Testbed,
  args: string[],
  seconds: number,
  units?: (r: Record<string, unknown>) => number,
): Promise<Record<string, number | string | object>> {
  const pids = bed.meshPids();
  const before = ticksOf(pids);
  const r = await bed.load(bed.pair(1).client, args, (seconds + 40) * 1000);
  const cpuS = (ticksOf(pids) - before) / CLOCK_TICKS;
  return units ? { ...r, cpu_s: cpuS, cpu_s_per_1k: cpuS / (units(r) / 1000) } : r;
}

async function latencyPhase(bed: Testbed, raw: RawByMode, warnings: string[]): Promise<void> {
  for (let rep = 1; rep <= REPEATS; rep++) {
    for (const mode of MODES) {
      await bed.start(mode, 1);
      const pair = bed.pair(1);
      const t = (m: 'rr' | 'conn' | 'stream'): string[] => {
        const { ip, port } = bed.target(pair, m);
        return [ip, String(port)];
      };
      const push = (name: string, r: Record<string, number | string | object>, show: string): void => {
        append(raw[mode], name, r);
        console.error(`repeat ${rep}/${REPEATS} ${MODE_LABEL[mode].padEnd(8)} ${name.padEnd(7)} ${show}`);
      };
      for (const rate of [100, 1000] as const) {
        const secs = RR_SECONDS[rate];
        // The CPU window covers every request sent, warm-up included.
        const r = await measure(
          bed,
          ['rr', ...t('rr'), String(rate), String(RR_WARMUP_S), String(secs)],
          RR_WARMUP_S + secs,
          () => rate * (RR_WARMUP_S + secs),
        );
        push(
          `rr${rate}`,
          r,
          `p50 ${fmt(r.p50_us)} µs, p90 ${fmt(r.p90_us)} µs, p99 ${fmt(r.p99_us)} µs${rate === 1000 ? `, mesh CPU ${fmt(r.cpu_s)} s` : ''}`,
        );
      }
      const c = await measure(
        bed,
        ['conn', ...t('conn'), String(CONN.concurrency), String(CONN.seconds)],
        CONN.seconds,
        (x) => Number(x.ok) + Number(x.failed),
      );
      push('conn', c, `${fmt(c.per_s)} conn/s, ${String(c.failed)} failed, mesh CPU ${fmt(c.cpu_s)} s`);
      if (Number(c.failed) > 0)
        warnings.push(`repeat ${rep} conn ${mode}: ${String(c.failed)} failed connections ${JSON.stringify(c.errors)}`);
      const s1 = await measure(bed, ['stream', ...t('stream'), String(STREAM.seconds)], STREAM.seconds);
      push('stream', s1, `${fmt(s1.mib_per_s)} MiB/s`);
      const s8 = await measure(bed, ['streams', ...t('stream'), String(STREAM.parallel), String(STREAM.seconds)], STREAM.seconds);
      push('streams', s8, `${fmt(s8.mib_per_s)} MiB/s over ${STREAM.parallel} streams`);
      warnings.push(...bed.deaths().map((d) => `repeat ${rep} ${mode}: ${d}`));
      await bed.stopMode();
    }
  }
}

async function memoryPhase(bed: Testbed, warnings: string[]): Promise<MemoryPoint[]> {
  const points: MemoryPoint[] = [];
  const rssMiB = (): number => bed.meshPids().reduce((a, pid) => a + rssBytes(pid), 0) / 2 ** 20;
  for (const k of PODS) {
    for (const mode of MESH_MODES) {
      const t0 = Date.now();
      await bed.start(mode, k);
      const startS = (Date.now() - t0) / 1000;
      const rssReadyMiB = rssMiB();
      const warmupFailed = await bed.warmUp(k, WARMUP.connections, WARMUP.concurrency);
      if (warmupFailed) warnings.push(`memory K=${k} ${mode}: ${warmupFailed} warm-up connections failed`);
      await new Promise((r) => setTimeout(r, 1000)); // let connection teardown finish
      const point: MemoryPoint = { mode, k, processes: bed.meshPids().length, rssReadyMiB, rssMiB: rssMiB(), startS, warmupFailed };
      points.push(point);
      console.error(
        `memory K=${String(k).padEnd(3)} ${MODE_LABEL[mode].padEnd(8)} ${fmt(point.rssMiB)} MiB in ${point.processes} processes` +
          ` (ready: ${fmt(rssReadyMiB)} MiB, up in ${startS.toFixed(1)} s)`,
      );
      warnings.push(...bed.deaths().map((d) => `memory K=${k} ${mode}: ${d}`));
      await bed.stopMode();
    }
  }
  return points;
}

function sourceVersion(): { commit: string; dirty: boolean | null } {
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no').length > 0 };
  } catch {
    return { commit: 'unknown', dirty: null };
  }
}

async function run(bed: Testbed): Promise<void> {
  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    kernel: os.release(),
    node: process.version,
    memoryGiB: os.totalmem() / 2 ** 30,
  };
  const stunnelVersion = execFileSync('stunnel', ['-version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  const source = sourceVersion();
  const loadBefore = os.loadavg();
  console.log(
    `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB.toFixed(1)} GiB, kernel ${machine.kernel}, node ${machine.node}`,
  );
  console.log(`source: ${source.commit}${source.dirty ? ' with uncommitted changes' : ''}`);
  console.log(`load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')} (anything else running on the machine adds noise)`);
  if (L4_PHASES)
    console.log(
      `repeats: ${REPEATS}; rr 1 KiB at 100 req/s for ${RR_SECONDS[100]} s and 1,000 req/s for ${RR_SECONDS[1000]} s after ${RR_WARMUP_S} s each; ` +
        `conn ×${CONN.concurrency} for ${CONN.seconds} s; stream 1 and ${STREAM.parallel} for ${STREAM.seconds} s; memory at K = ${PODS.join(', ')}`,
    );
  const started = Date.now();
  if (HTTP_SELECTED.length)
    console.log(
      `repeats: ${REPEATS}; HTTP/1.1 keep-alive, 1 KiB each way at ${HTTP_RUN.rate} req/s for ${HTTP_RUN.seconds} s after ${HTTP_RUN.warmupS} s: ` +
        HTTP_SELECTED.map((m) => HTTP_LABEL[m]).join(', '),
    );
  const podsPerNode = Math.max(...(L4_PHASES ? PODS : [1]), HTTP_SELECTED.length ? HTTP_MIN_PODS : 1);
  await bed.setUp(podsPerNode);
  console.error(`topology ${bed.topology.prefix} up with ${podsPerNode} pods per node (${((Date.now() - started) / 1000).toFixed(1)} s)`);

  const warnings: string[] = [];
  const l4 = L4_PHASES ? await l4Phases(bed, machine, warnings) : undefined;
  let http: { raw: HttpRaw; summary: HttpSummary } | undefined;
  if (HTTP_SELECTED.length) {
    const raw = await httpPhase(bed, HTTP_SELECTED, REPEATS, warnings);
    const summary = summariseHttp(raw, HTTP_SELECTED);
    http = { raw, summary };
    console.log(`
HTTP: medians of ${REPEATS} repeats (min–max), cross-node, 1 pair; added over no mesh
`);
    console.log(httpTable(summary));
  }
  const loadAfter = os.loadavg();
  console.log(`load average after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`);
  for (const w of warnings) console.log(`warning: ${w}`);

  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const json = path.join(RESULTS_DIR, `compare-${stamp}.json`);
  fs.writeFileSync(
    json,
    `${JSON.stringify(
      {
        benchmark: 'compare',
        date: new Date().toISOString(),
        machine,
        stunnel: stunnelVersion.split('\n').slice(0, 3),
        source,
        repeats: REPEATS,
        modes: SELECTED,
        config: {
          rrWarmupS: RR_WARMUP_S,
          rrSeconds: RR_SECONDS,
          rrSize: 1024,
          conn: CONN,
          stream: STREAM,
          warmUp: WARMUP,
          pods: PODS,
          http: HTTP_RUN,
          clockTicks: CLOCK_TICKS,
        },
        ...(l4 ? { summary: l4.summary, goals: l4.goals, memory: l4.memory, raw: l4.raw } : {}),
        ...(http ? { http } : {}),
        warnings,
        loadAverage: { before: loadBefore, after: loadAfter },
        durationS: (Date.now() - started) / 1000,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nresults: ${json}`);
  if (l4) {
    const svgFile = path.join(RESULTS_DIR, `compare-${stamp}.svg`);
    fs.writeFileSync(svgFile, l4.svg);
    fs.mkdirSync(path.dirname(DOCS_SVG), { recursive: true });
    fs.copyFileSync(svgFile, DOCS_SVG);
    console.log(`chart: ${svgFile} (copied to ${path.relative(ROOT, DOCS_SVG)})`);
  }
  console.log(`duration: ${((Date.now() - started) / 60_000).toFixed(1)} min`);
}

interface Machine {
  cpu: string;
  cores: number;
  kernel: string;
  node: string;
}

/** The L4 comparison: latency, connections, throughput and memory of the four modes; prints its tables. */
async function l4Phases(
  bed: Testbed,
  machine: Machine,
  warnings: string[],
): Promise<{ raw: RawByMode; summary: ReturnType<typeof summarise>; goals: ReturnType<typeof goals>; memory: MemoryPoint[]; svg: string }> {
  const raw = Object.fromEntries(MODES.map((m) => [m, {}])) as RawByMode;
  await latencyPhase(bed, raw, warnings);
  const memory = await memoryPhase(bed, warnings);

  const summary = summarise(raw);
  const gs = goals(summary, memory);
  console.log(`\nmedians of ${REPEATS} repeats, cross-node, 1 pair; cells: median (ratio to no mesh, added over no mesh for latencies)\n`);
  console.log(mainTable(summary, gs));
  const lag = MODES.map((m) => `${MODE_LABEL[m]} p99 ${fmt(median((raw[m].rr1000 ?? []).map((r) => Number(r.sendLag_p99_us))))} µs`);
  console.log(`\nload generator send lag at 1,000 req/s (included in the latencies): ${lag.join('; ')}`);
  console.log(
    `\nmesh memory: total RSS of the mesh processes after ${WARMUP.connections} connections on every pair` +
      ' (one measurement per K; K mesh pods on each of 2 nodes)\n',
  );
  console.log(memoryTable(memory, gs));
  console.log(`\ngoals: ${gs.filter((g) => g.met).length} of ${gs.length} met`);
  for (const g of gs) console.log(`  ${g.met ? 'met    ' : 'not met'}  ${g.text}: ${g.measured}`);
  const p = (key: string): Record<Mode, number> => mediansOf(summary, key);
  const svg = renderChart({
    title: 'ambit: no mesh vs ambient vs sidecar vs stunnel (cross-node)',
    subtitle:
      `${machine.cpu}, ${machine.cores} cores, kernel ${machine.kernel}, node ${machine.node}; ` +
      `medians of ${REPEATS} repeats; ${new Date().toISOString().slice(0, 10)}`,
    latency: Object.fromEntries(MODES.map((m) => [m, { p50: p('p50_1000')[m], p90: p('p90_1000')[m], p99: p('p99_1000')[m] }])) as Record<
      Mode,
      { p50: number; p90: number; p99: number }
    >,
    memory: memory.map((m) => ({ mode: m.mode, k: m.k, mib: m.rssMiB })),
  });
  return { raw, summary, goals: gs, memory, svg };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, cgroups, eBPF): run `sudo make compare`');
  if (!Number.isInteger(REPEATS) || REPEATS < 1)
    throw new Error(`BENCH_REPEATS must be a positive integer, got ${process.env.BENCH_REPEATS}`);
  if (!PODS.length || PODS.some((k) => !Number.isInteger(k) || k < 1 || k > 240))
    throw new Error(`BENCH_PODS must be a list of pod counts 1–240, got ${process.env.BENCH_PODS}`);
  if (!Number.isInteger(HTTP_RUN.rate) || HTTP_RUN.rate < 1 || HTTP_RUN.rate > 100_000)
    throw new Error(`BENCH_HTTP_RATE must be requests per second 1–100,000, got ${process.env.BENCH_HTTP_RATE}`);
  const unknown = SELECTED.filter((m) => !KNOWN_MODES.includes(m));
  if (unknown.length || (!L4_PHASES && !HTTP_SELECTED.length))
    throw new Error(
      `BENCH_MODES ${JSON.stringify(process.env.BENCH_MODES)}: list modes of ${KNOWN_MODES.join(', ')}; ` +
        `all of ${MODES.join(', ')} for the L4 table, waypoint (with nomesh and ambient beside it) for the HTTP one`,
    );
  const bed = new Testbed();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      void bed.cleanup().finally(() => process.exit(130));
    });
  }
  try {
    await run(bed);
  } finally {
    await bed.cleanup();
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
