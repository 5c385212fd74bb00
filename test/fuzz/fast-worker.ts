// Runs one in-process fuzz target in a worker thread, so the campaign can
// tell a hang (no progress) from slowness and a crash from a finding. The
// index of the input being checked is published in shared memory before
// each check: the parent's watchdog reads it to name the input that hung.

import { parentPort, workerData } from 'node:worker_threads';
import fc from 'fast-check';
import { must } from '../helpers/must';
import { TARGETS } from './targets';

export interface FastWorkerData {
  target: string;
  inputs: number;
  seed: number;
  chunk: number;
  progress: SharedArrayBuffer;
}
export interface Failure {
  chunk: number;
  index: number;
  input: string;
  error: string;
}
export interface FastResult {
  inputs: number;
  crashes: number;
  failures: Failure[];
  outcomes: Record<string, number>;
}

export const chunkSeedOf = (seed: number, chunk: number): number => (Math.imul(seed ^ 0x2545f491, 0x9e3779b1) + chunk) | 0;

/** Regenerates input `index` of chunk `chunk` (a reproducer from a report). */
export function inputAt(target: string, seed: number, chunkSize: number, chunk: number, index: number): unknown {
  const t = must(
    TARGETS.find((x) => x.name === target),
    `fuzz target ${target}`,
  );
  return fc.sample(t.arb, { seed: chunkSeedOf(seed, chunk), numRuns: chunkSize })[index];
}

function show(v: unknown): string {
  try {
    return (typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v))).slice(0, 2000);
  } catch {
    return String(v).slice(0, 2000);
  }
}

if (parentPort && workerData) {
  const d = workerData as FastWorkerData;
  const t = must(
    TARGETS.find((x) => x.name === d.target),
    `fuzz target ${d.target}`,
  );
  const progress = new Int32Array(d.progress);
  const r: FastResult = { inputs: 0, crashes: 0, failures: [], outcomes: {} };
  for (let chunk = 0; r.inputs < d.inputs; chunk++) {
    const n = Math.min(d.chunk, d.inputs - r.inputs);
    const values = fc.sample(t.arb, { seed: chunkSeedOf(d.seed, chunk), numRuns: d.chunk }).slice(0, n);
    for (let index = 0; index < values.length; index++) {
      Atomics.store(progress, 0, chunk);
      Atomics.store(progress, 1, index);
      try {
        const o = t.check(values[index]);
        r.outcomes[o] = (r.outcomes[o] ?? 0) + 1;
      } catch (err) {
        r.crashes++;
        if (r.failures.length < 20)
          r.failures.push({
            chunk,
            index,
            input: show(values[index]),
            error: (err as Error)?.stack?.split('\n').slice(0, 4).join(' | ') ?? String(err),
          });
      }
      r.inputs++;
      Atomics.add(progress, 2, 1);
    }
    parentPort.postMessage({ t: 'progress', inputs: r.inputs });
  }
  parentPort.postMessage({ t: 'done', result: r });
}
