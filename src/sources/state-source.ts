// What a serving process needs of wherever its mesh state comes from — the
// standalone YAML file here, a control plane's xDS in ./xds-mesh.ts: a
// first valid state, then every later one (or why it was rejected; the
// last good state keeps serving meanwhile).
import type client from 'prom-client';
import type { AmbitError } from '../errors';
import type { MeshConfig } from '../state/types';
import { loadConfigFile, parseConfig } from './config';
import { watchParsedFile } from './file-source';

export interface StateSource {
  /** Named in logs: the file or the xDS address. */
  readonly name: string;
  /** What readiness lists until the first state arrives. */
  readonly waitingFor: string;
  initial(): Promise<MeshConfig>;
  /** Calls back with every later valid state, or why one was rejected; returns the unwatch. */
  watch(onValid: (cfg: MeshConfig) => void, onInvalid: (err: AmbitError) => void): () => void;
  registerMetrics?(registry: client.Registry): void;
  /** The source's own status, for the config dump. */
  status?(): unknown;
}

/** The standalone YAML, re-read when it changes on disk. */
export function configFileSource(file: string): StateSource {
  return {
    name: file,
    waitingFor: 'configuration',
    initial: () => Promise.resolve(loadConfigFile(file)),
    watch: (onValid, onInvalid) => watchParsedFile(file, parseConfig, onValid, onInvalid),
  };
}
