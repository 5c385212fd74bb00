// The HBONE fuzz loop: seeded sequences of raw HTTP/2 operations, several
// lanes in parallel, each lane carrying many sequences on one TLS
// connection (a PING round trip between sequences; a fresh connection when
// the server closed the last one, when a sequence was terminal, or after
// SEQUENCES_PER_CONNECTION so the streams a sequence left open do not
// pile up). An input is one sequence. A crash is a pid of the agents or
// their workers that went away; the sequences in flight at that moment are
// the suspects and are reported with how to regenerate them.
import fc from 'fast-check';
import { Netns } from '../../src/datapath/netns';
import { PORT_INBOUND_HBONE } from '../../src/datapath/ports';
import { alive, TIME_SCALE } from '../helpers/proc';
import type { HboneBed } from './hbone-bed';
import { FuzzConn, type ServerReplies } from './hbone-conn';
import { describe, encode, type Op, sequenceArb } from './hbone-ops';

const SEQUENCES_PER_CONNECTION = 50;
const CHUNK = 250;

export interface Suspect {
  chunk: number;
  index: number;
  ops: string;
}
export interface HboneCrash {
  afterInputs: number;
  gone: number[];
  suspects: Suspect[];
  evidence: string[];
}

export interface HboneResult {
  inputs: number;
  crashes: HboneCrash[];
  seconds: number;
  outcomes: { synced: number; closedByServer: number; terminal: number; unanswered: number };
  connections: number;
  replies: ServerReplies;
  honestChecks: { ok: number; failed: number };
}

export interface HboneOptions {
  inputs: number;
  seed: number;
  lanes?: number;
  /** Stop at the first crash (tests) rather than wait for the respawn and carry on (campaigns). */
  stopOnCrash?: boolean;
  /** Also stop when this much time has passed (campaigns with a time budget). */
  maxSeconds?: number;
  /** How often honest traffic is tried while fuzzing. */
  honestEveryMs?: number;
  progress?: (done: number) => void;
}

/** The seed of chunk c of a campaign with seed s: regenerate input i with fc.sample(sequenceArb(t), { seed, numRuns: CHUNK })[i]. */
export const chunkSeed = (seed: number, chunk: number): number => (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + chunk * 0x27d4eb2f) | 0;

export function sequencesOf(bed: HboneBed, seed: number, chunk: number): Op[][] {
  return fc.sample(sequenceArb(bed.target), { seed: chunkSeed(seed, chunk), numRuns: CHUNK });
}

export async function fuzzHbone(bed: HboneBed, opts: HboneOptions): Promise<HboneResult> {
  const started = Date.now();
  const lanes = opts.lanes ?? 6;
  const ns = Netns.open(bed.source.netnsPath);
  const result: HboneResult = {
    inputs: 0,
    crashes: [],
    seconds: 0,
    connections: 0,
    honestChecks: { ok: 0, failed: 0 },
    outcomes: { synced: 0, closedByServer: 0, terminal: 0, unanswered: 0 },
    replies: { headers: 0, rst: 0, goaway: 0, data: 0 },
  };
  let pids = bed.pids();
  let chunk = -1;
  let queue: { chunk: number; index: number; ops: Op[] }[] = [];
  const inFlight = new Set<{ chunk: number; index: number; ops: Op[] }>();
  let stop = false;
  const next = (): { chunk: number; index: number; ops: Op[] } | undefined => {
    if (stop || result.inputs + inFlight.size >= opts.inputs) return undefined;
    if (opts.maxSeconds !== undefined && Date.now() - started > opts.maxSeconds * 1000) return undefined;
    if (queue.length === 0) {
      chunk++;
      queue = sequencesOf(bed, opts.seed, chunk).map((ops, index) => ({ chunk, index, ops }));
    }
    return queue.shift();
  };

  let checking: Promise<void> | undefined;
  /** Compares the pids with the last known set; on a change records a crash and waits for the respawn. */
  const checkHealth = (): Promise<void> => {
    checking ??= (async () => {
      const gone = pids.filter((p) => !alive(p));
      if (gone.length === 0) return;
      result.crashes.push({
        afterInputs: result.inputs,
        gone,
        suspects: [...inFlight].map((s) => ({ chunk: s.chunk, index: s.index, ops: describe(s.ops) })),
        evidence: bed.agents.flatMap((a) => a.problems.slice(-20)),
      });
      if (opts.stopOnCrash) {
        stop = true;
        return;
      }
      const before = pids.length;
      const deadline = Date.now() + 30_000 * TIME_SCALE;
      while (bed.pids().filter(alive).length < before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      pids = bed.pids();
    })().finally(() => {
      checking = undefined;
    });
    return checking;
  };

  const lane = async (): Promise<void> => {
    let conn: FuzzConn | undefined;
    try {
      for (let item = next(); item; item = next()) {
        inFlight.add(item);
        if (!conn || conn.closed || conn.goaway || conn.sequences >= SEQUENCES_PER_CONNECTION) {
          conn?.destroy();
          conn = undefined;
          for (let attempt = 0; !conn; attempt++) {
            const crashesBefore = result.crashes.length;
            try {
              conn = await openWithRetry(ns, bed, result);
            } catch (err) {
              // A worker that died takes a moment to be replaced: that is a crash, reported as such.
              await checkHealth();
              if (result.crashes.length === crashesBefore || attempt >= 3) {
                const evidence = bed.agents.flatMap((a) => a.problems.slice(-10)).join('\n');
                throw new Error(`${(err as Error).message}\nlast problems the agents logged:\n${evidence}`);
              }
              if (stop) {
                inFlight.delete(item);
                return;
              }
            }
          }
        }
        conn.sequences++;
        let terminal = false;
        for (const op of item.ops) {
          const step = encode(op, conn.ids);
          if ('wait' in step) {
            if (step.wait === 'sync') await conn.sync(2000 * TIME_SCALE);
            else await conn.awaitAnswer(step.streamId, 1000 * TIME_SCALE);
            continue;
          }
          conn.write(step.bytes);
          if (step.terminal) {
            terminal = true;
            break;
          }
        }
        if (terminal) {
          result.outcomes.terminal++;
          conn.destroy();
        } else {
          const r = await conn.sync(5000 * TIME_SCALE);
          if (r === 'ok') result.outcomes.synced++;
          else if (r === 'closed') result.outcomes.closedByServer++;
          else {
            result.outcomes.unanswered++;
            conn.destroy();
          }
        }
        if (conn.closed) await checkHealth();
        inFlight.delete(item);
        result.inputs++;
        opts.progress?.(result.inputs);
      }
    } finally {
      conn?.destroy();
    }
  };

  const watchdog = setInterval(() => {
    void checkHealth();
  }, 500);
  let honestTimer: NodeJS.Timeout | undefined;
  const honestLoop = (): void => {
    honestTimer = setTimeout(() => {
      void bed
        .honest(4)
        .then(
          (ok) => {
            if (ok) result.honestChecks.ok++;
            else result.honestChecks.failed++;
          },
          () => {
            result.honestChecks.failed++;
          },
        )
        .finally(() => {
          if (!stop) honestLoop();
        });
    }, opts.honestEveryMs ?? 30_000);
  };
  honestLoop();
  try {
    await Promise.all(Array.from({ length: lanes }, lane));
    await checkHealth();
  } finally {
    stop = true;
    clearInterval(watchdog);
    clearTimeout(honestTimer);
    ns.close();
  }
  result.seconds = (Date.now() - started) / 1000;
  return result;
}

/**
 * A new fuzzing connection. While a worker is being replaced the listener
 * may refuse for a moment; a handful of tries spread over a few seconds
 * tells that from a tunnel that stopped serving.
 */
async function openWithRetry(ns: Netns, bed: HboneBed, result: HboneResult): Promise<FuzzConn> {
  let last: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      const c = await FuzzConn.open(ns, bed.target.ip, PORT_INBOUND_HBONE, bed.tlsOptions, result.replies, 10_000 * TIME_SCALE);
      result.connections++;
      return c;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`the destination's :15008 no longer completes a TLS handshake: ${(last as Error).message}`);
}
