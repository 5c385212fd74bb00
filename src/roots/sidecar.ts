// `ambit sidecar`: the composition root of one workload's sidecar. The same
// tunnel as a node agent, scoped to the pod it runs beside: state from the
// standalone file, certificates from the built-in CA, the tunnel in this
// process unless --workers asks for worker processes.
import { createLogger } from '../observability/log';
import { configFileSource } from '../sources/state-source';
import type { PodAgent } from './pod-agent';
import { type ServingSettings, serve, servedBy } from './serve';

export interface SidecarSettings extends ServingSettings {
  /** The uid of the workload this sidecar serves. */
  workload: string;
  configFile: string;
}

export function runSidecar(s: SidecarSettings): Promise<PodAgent> {
  return serve({
    role: 'sidecar',
    source: configFileSource(s.configFile),
    agent: {
      scope: { sidecar: s.workload },
      ...servedBy(s),
    },
    drainMs: s.drainMs,
    summary: { workload: s.workload, mode: s.mode, workers: s.workers, limits: s.limits },
    log: createLogger(),
  });
}
