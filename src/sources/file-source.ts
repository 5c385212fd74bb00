// Files as live sources (the standalone configuration, a node's pods
// file): read once with an error that says what to fix, then re-read when
// the content changes; a valid change is delivered, an invalid one is
// reported and dropped, so the last good state keeps serving. Polling
// (stat, then content hash) rather than inotify: editors and ConfigMap
// mounts replace files by rename, which inotify watches lose.
//
// A reload runs inside a timer callback, where an exception would end the
// process: everything it calls (read, parse, apply, report) is caught and
// turned into a report, so no file content can take a running node down.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { AmbitError } from '../errors';
import { MAX_CONFIG_BYTES, oversizeError } from './yaml-bounded';

/** The file's text, or AMBIT_E_CONFIG naming the file, the errno or the size limit, and the flag that gave it. */
export function readTextFile(file: string, flag: string): string {
  let got: Bounded;
  try {
    got = readAtMost(file, MAX_CONFIG_BYTES);
  } catch (err) {
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      `pass an existing file with ${flag}`,
    );
  }
  return textOf(got, `${file} (${flag})`);
}

/** The text of a bounded read; without its content (over the limit), AMBIT_E_CONFIG with the size. */
function textOf(got: Bounded, source: string): string {
  if (got.data === undefined) throw oversizeError(got.size, source);
  return got.data.toString('utf8');
}

/** A file's content, or only its size (at least limit + 1) when over the limit: no data means too big. */
interface Bounded {
  data?: Buffer;
  size: number;
  mtimeMs: number;
}

/**
 * The file's content when it is at most limit bytes: a huge file, a device
 * such as /dev/zero or a file growing while read is never read whole. Size
 * and content come through one descriptor, so a file swapped in between
 * cannot dodge the check.
 */
function readAtMost(file: string, limit: number): Bounded {
  const fd = fs.openSync(file, 'r');
  try {
    const st = fs.fstatSync(fd);
    if (st.size > limit) return { size: st.size, mtimeMs: st.mtimeMs };
    const chunks: Buffer[] = [];
    let total = 0;
    while (total <= limit) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, limit + 1 - total));
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      total += n;
    }
    if (total > limit) return { size: total, mtimeMs: st.mtimeMs };
    return { data: Buffer.concat(chunks, total), size: total, mtimeMs: st.mtimeMs };
  } finally {
    fs.closeSync(fd);
  }
}

const asConfigError = (err: unknown): AmbitError =>
  err instanceof AmbitError ? err : new AmbitError('AMBIT_E_CONFIG', String((err as Error)?.message ?? err));

export function watchParsedFile<T>(
  file: string,
  parse: (text: string, source: string) => T,
  onValid: (value: T) => void,
  onInvalid: (err: AmbitError) => void,
  intervalMs = 500,
): () => void {
  let lastStat = statOf(file); // before the read: a change in between is then seen as a change
  let lastHash = read(file)?.hash;
  const report = (err: unknown): void => {
    try {
      onInvalid(asConfigError(err));
    } catch (inner) {
      // The reporter itself failed (a closed log stream?): one line on stderr, and keep serving.
      process.stderr.write(`ambit: AMBIT_E_CONFIG: ${file}: reporting a rejected change failed: ${String(inner)}\n`);
    }
  };
  /** False when the file could not be read (mid-replace): the next tick tries again. */
  const check = (): boolean => {
    const now = read(file);
    if (now === undefined) return false;
    if (now.hash === lastHash) return true;
    lastHash = now.hash;
    let value: T;
    try {
      value = parse(textOf(now, file), file);
    } catch (err) {
      report(err);
      return true;
    }
    try {
      onValid(value);
    } catch (err) {
      // Valid but not applicable: a rule parse() missed. Reported like an invalid file; the caller's state decides what serves.
      report(new AmbitError('AMBIT_E_CONFIG', `${file} could not be applied: ${asConfigError(err).message}`));
    }
    return true;
  };
  // Our own poll rather than fs.watchFile: its first stat is taken later, asynchronously, so a change
  // landing between the read above and that stat would go unseen until the next one.
  const timer = setInterval(() => {
    const st = statOf(file);
    if (st === lastStat) return;
    lastStat = st;
    if (!check()) lastStat = '';
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** What tells a changed file without reading it: inode (a rename), size, mtime, ctime. */
function statOf(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code}`;
  }
}

/** The file's content and hash; of an oversized file only its size, unread (the hash is size and mtime). */
function read(file: string): (Bounded & { hash: string }) | undefined {
  try {
    const got = readAtMost(file, MAX_CONFIG_BYTES);
    return { ...got, hash: got.data ? createHash('sha256').update(got.data).digest('hex') : `oversized:${got.size}:${got.mtimeMs}` };
  } catch {
    return undefined; // mid-replace: the next poll sees the new file
  }
}
