// The last line of defence of a long-lived process (agent, tunnel worker,
// control plane). Every stream and socket handles its own errors where it is
// created; an error that still reaches the process is a bug, and one bug in
// one connection's path must not cut every other connection. So: log it
// with its stack, count it, keep serving. Two cases exit instead, because
// the process's state can no longer be trusted: an error marked fatal, and
// a storm of them (a loop failing on every event is not one bad connection).
import type { Logger } from './log';

export interface LastResortOptions {
  log: Logger;
  /** What this process is, for the log line ("node agent", "tunnel worker", …). */
  role: string;
  /** More than this many uncaught errors within windowMs ends the process. */
  maxPerWindow?: number;
  windowMs?: number;
  /** Counts each error (a metric), when the process has one. */
  count?: (kind: 'exception' | 'rejection') => void;
  /** Exit code when state is not intact; the supervisor (the agent, the kubelet) starts a replacement. */
  exitCode?: number;
}

/** Marks an error as leaving the process's state broken: the last-resort handler exits for it. */
export function fatal<E extends Error>(err: E): E {
  return Object.assign(err, { fatal: true });
}

export function installLastResort(opts: LastResortOptions): { uncaught: () => number } {
  const maxPerWindow = opts.maxPerWindow ?? 100;
  const windowMs = opts.windowMs ?? 60_000;
  let total = 0;
  let recent: number[] = [];
  const handle = (kind: 'exception' | 'rejection', reason: unknown): void => {
    total++;
    opts.count?.(kind);
    const err = reason instanceof Error ? reason : new Error(String(reason));
    const now = Date.now();
    recent = recent.filter((t) => now - t < windowMs);
    recent.push(now);
    const broken = (err as { fatal?: boolean }).fatal === true || recent.length > maxPerWindow;
    const fields = { kind, code: (err as NodeJS.ErrnoException).code, err: err.stack ?? err.message, recent: recent.length };
    if (!broken) {
      opts.log.error(fields, `${opts.role}: uncaught error; this connection's work is lost, the process keeps serving`);
      return;
    }
    opts.log.fatal(fields, `${opts.role}: uncaught error leaves the process in an unknown state; exiting for a replacement`);
    process.exit(opts.exitCode ?? 70);
  };
  process.on('uncaughtException', (err) => handle('exception', err));
  process.on('unhandledRejection', (reason) => handle('rejection', reason));
  return { uncaught: () => total };
}
