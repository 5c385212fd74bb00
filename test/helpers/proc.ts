// Process and waiting helpers: run a command, wait for a condition (never a
// fixed sleep), wait for a line from a child process.
import { type ChildProcess, execFile } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { must } from './must';

export function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * Multiplier for every timeout below, from AMBIT_TEST_TIME_SCALE (default 1).
 * The timeouts are sized for a real machine; scripts/vm-test.sh runs the
 * tests in QEMU without hardware virtualisation (~10x slower) and sets it
 * to 10 there, so the waits stretch instead of the conditions changing.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.AMBIT_TEST_TIME_SCALE) || 1);

/**
 * Whether a process is running. A zombie is not: a killed orphan stays one
 * until whoever adopted it (PID 1 or a subreaper) reaps it, which may be late.
 */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state …: comm may hold spaces and parentheses, so the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls until cond() is truthy; fails with `what` after timeoutMs (× TIME_SCALE). */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 20): Promise<NonNullable<T>> {
  timeoutMs *= TIME_SCALE;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Resolves with the first stdout line matching; rejects if the child exits first or after timeoutMs (× TIME_SCALE). */
export function waitForLine(child: ChildProcess, match: (line: string) => boolean, what: string, timeoutMs = 15_000): Promise<string> {
  timeoutMs *= TIME_SCALE;
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    const rl = readline.createInterface({ input: must(child.stdout, "the child's stdout pipe") });
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${stderr}`)), timeoutMs);
    const onExit = (code: number | null): void => finish(new Error(`process exited (${code}) before ${what}; stderr: ${stderr}`));
    const finish = (result: Error | string): void => {
      clearTimeout(timer);
      rl.removeAllListeners('line');
      child.off('exit', onExit);
      if (typeof result === 'string') resolve(result);
      else reject(result);
    };
    rl.on('line', (line) => {
      if (match(line)) finish(line);
    });
    child.once('exit', onExit);
  });
}

/** Collects a child's whole stdout and exit code. */
export function collect(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The last line of a child's output parsed as JSON (podapp and the clients print their summary last). */
export function lastJson<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as T;
}

/** Every JSON line a child prints on stdout, parsed, as it arrives (a live array). */
export function jsonLines(child: ChildProcess): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  readline.createInterface({ input: must(child.stdout, "the child's stdout pipe") }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  });
  return lines;
}
