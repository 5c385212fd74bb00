// The standalone configuration as a live source: the file is re-read when
// it changes; a valid change is delivered, an invalid one is reported and
// dropped, so the last good state keeps serving. Polling (stat) rather than
// inotify: editors and ConfigMap mounts replace files by rename, which
// inotify watches lose.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { AmbitError } from '../errors';
import { parseConfig } from './config';
import type { MeshConfig } from './types';

export function watchConfigFile(file: string, onValid: (cfg: MeshConfig) => void, onInvalid: (err: AmbitError) => void, intervalMs = 500): () => void {
  let lastHash = hashOf(file);
  const check = (): void => {
    const hash = hashOf(file);
    if (hash === undefined || hash === lastHash) return;
    lastHash = hash;
    try {
      onValid(parseConfig(fs.readFileSync(file, 'utf8'), file));
    } catch (err) {
      onInvalid(err instanceof AmbitError ? err : new AmbitError('AMBIT_E_CONFIG', String(err)));
    }
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
