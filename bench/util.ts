// Small helpers shared by the comparison benchmark: statistics, number
// formatting, child process bookkeeping, bounded concurrency, and the
// kernel's own accounting of a process's CPU time and resident memory.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on Linux for x86 and arm64). */
export const CLOCK_TICKS = 100;

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  // Odd: the middle value twice; even: the two around the middle.
  const upper = s[Math.floor(s.length / 2)];
  const lower = s[Math.ceil(s.length / 2) - 1];
  return upper === undefined || lower === undefined ? NaN : (lower + upper) / 2;
};

/** Appends v to the list under key, starting the list if there is none. */
export function append<T>(lists: Record<string, T[]>, key: string, v: T): void {
  const list = lists[key];
  if (list) list.push(v);
  else lists[key] = [v];
}

/** The JSON object a child program printed on its last line (how the load and pod programs answer). */
export function lastJson<T>(stdout: string, what: string): T {
  const line = stdout.trim().split('\n').at(-1);
  if (!line) throw new Error(`${what} printed no result`);
  return JSON.parse(line) as T;
}

/** A spawned child's pid; a child without one failed to start (its 'error' event says why). */
export function pidOf(child: ChildProcess, label: string): number {
  if (child.pid === undefined) throw new Error(`${label} did not start (no pid)`);
  return child.pid;
}

export function fmt(v: unknown): string {
  const n = Number(v);
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 1) return n.toFixed(1);
  return n.toFixed(3);
}

export const exited = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;

/** Keeps the last few KiB a child printed (and keeps its pipes drained). */
export function tail(child: ChildProcess): () => string {
  let out = '';
  const add = (d: Buffer): void => {
    out = (out + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => out.trim();
}

/** Signals a child and waits for it to exit, escalating to SIGKILL after graceMs. */
export async function stop(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

/** Runs fn over items, at most `limit` at a time; rejects with the first failure once all settled. */
export async function eachLimited<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  const queue = items.entries(); // shared: each worker takes the next item
  let failure: unknown;
  const worker = async (): Promise<void> => {
    for (let n = queue.next(); !n.done && failure === undefined; n = queue.next()) {
      const [i, item] = n.value;
      try {
        await fn(item, i);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure;
}

/** utime + stime of a whole process (all its threads), in clock ticks. */
export function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; fields after it start at state (field 3).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // fields 14 and 15
}

/** Resident set size of a process, in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export function commOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '(gone)';
  }
}

/** pids and all their descendants, from the kernel's children lists (/proc/<pid>/task/<tid>/children). */
export function withDescendants(pids: number[]): number[] {
  const out: number[] = [];
  const visit = (pid: number): void => {
    out.push(pid);
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      return;
    }
    for (const tid of tasks) {
      let kids = '';
      try {
        kids = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(' ').filter(Boolean)) visit(Number(k));
    }
  };
  for (const p of pids) visit(p);
  return [...new Set(out)];
}
