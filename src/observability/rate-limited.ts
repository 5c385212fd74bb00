// Warnings a peer can trigger at will (failed handshakes, refused streams)
// must not let it flood the log: the first line per reason in each interval
// is written, the rest are counted and reported with the next line written.
import type { Logger } from './log';

export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Logs at warn level unless a line with this key (by default the reason)
   * was written less than an interval ago.
   */
  warn(reason: string, fields: Record<string, unknown>, msg: string, key = reason): void {
    const t = this.now();
    const seen = this.last.get(key);
    if (seen && t - seen.at < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    // Bounded: keys are a small set (reasons, policies), but never trust that with a peer's input.
    if (!seen && this.last.size >= 256) this.last.clear();
    this.log.warn({ ...fields, reason, ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}) }, msg);
    this.last.set(key, { at: t, suppressed: 0 });
  }
}
