// Teardown for tests: what a test file creates is registered as it is
// created and undone in reverse order at the end, every step even when one
// fails, with every failure reported.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Resolves once child has exited (at once if it already has). */
export function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
}

/** SIGKILLs child and waits for its exit; rejects naming it if it outlives that by 10 s. */
export async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`pid ${child.pid} (${child.spawnargs.join(' ')}) still running 10 s after SIGKILL`)), 10_000);
  });
  try {
    await Promise.race([waitExit(child), stuck]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What a test file created, undone in reverse order when it is done
 * (`after(() => cleanup.run())`). Every step runs even when an earlier one
 * throws, and the failures are reported together: a teardown that stops at
 * its first error leaves the rest (a namespace, a pinned program, a
 * process) to trouble the next run.
 */
export class Cleanup {
  private readonly steps: { what: string; undo: () => unknown }[] = [];

  /** Registers undo, to run before everything registered earlier. */
  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
  }

  /** A process started outside the topology: SIGKILLed and waited for. */
  process<T extends ChildProcess>(child: T): T {
    this.add(`process ${child.pid} (${child.spawnargs.join(' ')})`, () => killAndWait(child));
    return child;
  }

  /** A fresh directory under the system's temporary one, removed with everything in it. */
  tempDir(prefix: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    this.add(`directory ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Runs every step, newest first; then throws one error naming each step that failed. */
  async run(): Promise<void> {
    const failed: Error[] = [];
    for (const step of this.steps.splice(0).reverse()) {
      try {
        await step.undo();
      } catch (err) {
        failed.push(new Error(`${step.what}: ${(err as Error).message}`, { cause: err }));
      }
    }
    if (failed.length) throw new AggregateError(failed, `teardown failed:\n${failed.map((e) => `- ${e.message}`).join('\n')}`);
  }
}
