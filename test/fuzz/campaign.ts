// `make fuzz`: a fuzz campaign over every target. Goal printed up front:
// FUZZ_INPUTS inputs per target (1,000,000), 0 crashes, 0 leaked fds.
//   FUZZ_SEED            reproduce a campaign (printed at the start)
//   FUZZ_INPUTS          inputs per target
//   FUZZ_TARGETS         comma list (config,xds,policy-crd,policy-engine,hbone)
//   FUZZ_HBONE_SECONDS   time budget of the HBONE target (600); it stops at
//                        FUZZ_INPUTS or then, whichever comes first
// In-process targets run in worker threads with a watchdog: an input that
// makes no progress for FUZZ_HANG_MS (30 s) is reported as a hang. The
// HBONE target needs root (it builds the namespace test bed). Results go
// to bench/results/fuzz-<date>.json; the exit code is 1 on any crash, hang
// or leaked fd.
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fmt } from '../../bench/util';
import { waitFor } from '../helpers/proc';
import type { FastResult, FastWorkerData } from './fast-worker';
import { HboneBed, processTree } from './hbone-bed';
import { fuzzHbone, type HboneResult } from './hbone-fuzz';
import { TARGETS } from './targets';

const INPUTS = Number(process.env.FUZZ_INPUTS ?? 1_000_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 0x7fffffff);
const HBONE_SECONDS = Number(process.env.FUZZ_HBONE_SECONDS ?? 600);
const HANG_MS = Number(process.env.FUZZ_HANG_MS ?? 30_000);
const CHUNK = 1000;
const WANTED = (process.env.FUZZ_TARGETS ?? [...TARGETS.map((t) => t.name), 'hbone'].join(',')).split(',');

interface Row {
  target: string;
  inputs: number;
  crashes: number;
  hangs: number;
  seconds: number;
  rate: number;
  health?: Record<string, unknown>;
  failures?: unknown[];
  outcomes?: unknown;
  note?: string;
}

function runFast(name: string): Promise<Row> {
  const progress = new SharedArrayBuffer(12);
  const view = new Int32Array(progress);
  const data: FastWorkerData = { target: name, inputs: INPUTS, seed: SEED, chunk: CHUNK, progress };
  const started = Date.now();
  return new Promise((resolve) => {
    const w = new Worker(path.join(__dirname, 'fast-worker.js'), { workerData: data });
    let last = -1;
    let lastChange = Date.now();
    const finish = (row: Omit<Row, 'seconds' | 'rate'>): void => {
      clearInterval(watchdog);
      const seconds = (Date.now() - started) / 1000;
      resolve({ ...row, seconds, rate: row.inputs / seconds });
    };
    const watchdog = setInterval(() => {
      const done = Atomics.load(view, 2);
      if (done !== last) {
        last = done;
        lastChange = Date.now();
        return;
      }
      if (Date.now() - lastChange < HANG_MS) return;
      const at = { chunk: Atomics.load(view, 0), index: Atomics.load(view, 1) };
      void w.terminate();
      finish({
        target: name,
        inputs: done,
        crashes: 0,
        hangs: 1,
        failures: [
          {
            hang: `no progress for ${HANG_MS} ms`,
            ...at,
            reproduce: `inputAt('${name}', ${SEED}, ${CHUNK}, ${at.chunk}, ${at.index}) in dist/test/fuzz/fast-worker.js`,
          },
        ],
      });
    }, 1000);
    w.on('message', (m: { t: string; result?: FastResult }) => {
      if (m.t === 'done' && m.result)
        finish({
          target: name,
          inputs: m.result.inputs,
          crashes: m.result.crashes,
          hangs: 0,
          failures: m.result.failures,
          outcomes: m.result.outcomes,
        });
    });
    w.on('error', (err) =>
      finish({ target: name, inputs: Atomics.load(view, 2), crashes: 1, hangs: 0, failures: [{ worker: err.stack ?? String(err) }] }),
    );
  });
}

async function runHbone(): Promise<Row> {
  if (process.getuid?.() !== 0)
    return { target: 'hbone', inputs: 0, crashes: 0, hangs: 0, seconds: 0, rate: 0, note: 'not run: needs root (sudo make fuzz)' };
  const bed = await HboneBed.create();
  try {
    const pidsBefore = bed.pids();
    const fdsBefore = bed.destinationFds();
    let shown = 0;
    const started = Date.now();
    let r: HboneResult;
    try {
      r = await fuzzHbone(bed, {
        inputs: INPUTS,
        seed: SEED,
        maxSeconds: HBONE_SECONDS,
        honestEveryMs: 30_000,
        progress: (n) => {
          if (n - shown >= 1000) {
            shown = n;
            process.stdout.write(`  hbone: ${n} sequences\n`);
          }
        },
      });
    } catch (err) {
      // The tunnel stopped serving this peer: a finding, reported with what the tunnel said.
      const seconds = (Date.now() - started) / 1000;
      return {
        target: 'hbone',
        inputs: shown,
        crashes: 0,
        hangs: 0,
        seconds,
        rate: shown / seconds,
        note: `stopped serving: ${(err as Error).message.split('\n')[0]}`,
        health: {
          pidsSame: JSON.stringify(pidsBefore) === JSON.stringify(bed.pids()),
          fdsBaseline: fdsBefore,
          fdsAfter: bed.destinationFds(),
          leakedFds: Math.max(0, bed.destinationFds() - fdsBefore),
          honestAfter: await bed.honest(5).catch(() => false),
        },
        failures: [{ error: (err as Error).message }],
        outcomes: { tunnelWarnings: bed.destination.warnings },
      };
    }
    const pidsAfter = bed.pids();
    // As in the test slice: sessions whose end the tunnel could not read go when
    // PING goes unanswered (30 s by default; after tens of thousands of sequences
    // the last ones were seen going between 60 and 90 s), and the honest checks may
    // leave one pooled session per source worker (the tunnel working, not a leak).
    const pooled = processTree(bed.sourceAgent.pid).workers.length;
    let fdsAfter = bed.destinationFds();
    await waitFor(
      'fds back to baseline',
      () => {
        fdsAfter = bed.destinationFds();
        return fdsAfter <= fdsBefore + pooled;
      },
      120_000,
      250,
    ).catch(() => undefined);
    const honest = await bed.honest(20).catch(() => false);
    return {
      target: 'hbone',
      inputs: r.inputs,
      crashes: r.crashes.length,
      hangs: 0,
      seconds: r.seconds,
      rate: r.inputs / r.seconds,
      health: {
        pidsSame: JSON.stringify(pidsBefore) === JSON.stringify(pidsAfter),
        pidsBefore,
        pidsAfter,
        fdsBaseline: fdsBefore,
        fdsAfter,
        leakedFds: Math.max(0, fdsAfter - fdsBefore - pooled),
        honestAfter: honest,
        honestDuring: r.honestChecks,
      },
      failures: r.crashes,
      outcomes: { ...r.outcomes, connections: r.connections, replies: r.replies, tunnelWarnings: bed.destination.warnings },
    };
  } finally {
    await bed.destroy();
  }
}

async function main(): Promise<void> {
  console.log(`fuzz campaign: seed ${SEED} (FUZZ_SEED=${SEED} reproduces it)`);
  console.log(
    `goal: ${INPUTS.toLocaleString('en-US')} inputs per target, 0 crashes, 0 leaked fds (FUZZ_INPUTS changes it; the HBONE target stops after ${HBONE_SECONDS} s)`,
  );
  const rows: Row[] = [];
  for (const t of TARGETS.filter((x) => WANTED.includes(x.name))) {
    process.stdout.write(`  ${t.name}: ${t.what}…\n`);
    rows.push(await runFast(t.name));
  }
  if (WANTED.includes('hbone')) {
    process.stdout.write('  hbone: random HTTP/2 frame sequences after mutual TLS, against a running tunnel…\n');
    rows.push(await runHbone());
  }
  console.log('\n| target | inputs | crashes | hangs | inputs/s | process health |');
  console.log('|---|---:|---:|---:|---:|---|');
  for (const r of rows) {
    const h = r.health
      ? `${r.note ? `${r.note}; ` : ''}pids same: ${r.health.pidsSame ? 'yes' : 'no'}; fds baseline ${String(r.health.fdsBaseline)} → after ${String(r.health.fdsAfter)}; honest traffic after: ${r.health.honestAfter ? 'ok' : 'FAILED'}`
      : (r.note ?? 'in-process');
    console.log(`| ${r.target} | ${r.inputs.toLocaleString('en-US')} | ${r.crashes} | ${r.hangs} | ${fmt(r.rate)} | ${h} |`);
  }
  const bad = rows.filter(
    (r) => r.crashes > 0 || r.hangs > 0 || (r.health && (!r.health.pidsSame || Number(r.health.leakedFds) > 0 || !r.health.honestAfter)),
  );
  for (const r of bad) console.log(`\n${r.target}: first findings:\n${JSON.stringify(r.failures?.slice(0, 3), null, 2)?.slice(0, 4000)}`);
  const out = path.resolve(__dirname, '../../../bench/results');
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, `fuzz-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(
    file,
    `${JSON.stringify({ benchmark: 'fuzz', seed: SEED, goal: { inputs: INPUTS, crashes: 0, leakedFds: 0 }, rows }, null, 2)}\n`,
  );
  console.log(`\nresults: ${file}`);
  process.exitCode = bad.length ? 1 : 0;
}

main().catch((err: Error) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
