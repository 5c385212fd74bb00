// Files as live sources (the standalone configuration, a node's pods
// file): read once with an error that says what to fix, then re-read when
// the content changes; a valid change is delivered, an invalid one is
// reported and dropped, so the last good state keeps serving. Polling
// (stat + content hash) rather than inotify: editors and ConfigMap mounts
// replace files by rename, which inotify watches lose.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { AmbitError } from '../errors';

/** The file's text, or AMBIT_E_CONFIG naming the file, the errno and the flag that gave it. */
export function readTextFile(file: string, flag: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AmbitError('AMBIT_E_CONFIG', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, `pass an existing file with ${flag}`);
  }
}

export function watchParsedFile<T>(file: string, parse: (text: string, source: string) => T, onValid: (value: T) => void, onInvalid: (err: AmbitError) => void, intervalMs = 500): () => void {
  let lastHash = hashOf(file);
  const check = (): void => {
    const hash = hashOf(file);
    if (hash === undefined || hash === lastHash) return;
    lastHash = hash;
    let value: T;
    try {
      value = parse(fs.readFileSync(file, 'utf8'), file);
    } catch (err) {
      return onInvalid(err instanceof AmbitError ? err : new AmbitError('AMBIT_E_CONFIG', String(err)));
    }
    onValid(value);
  };
  fs.watchFile(file, { interval: intervalMs, persistent: false }, check);
  return () => fs.unwatchFile(file, check);
}

function hashOf(file: string): string | undefined {
  try {
    return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  } catch {
    return undefined; // mid-replace: the next poll sees the new file
  }
}
