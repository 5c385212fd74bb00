// `ambit sidecar`: the composition root of one workload's sidecar. The same
// tunnel as a node agent, scoped to the pod it runs beside: state from the
// standalone file, certificates from the built-in CA, the tunnel in this
// process unless --workers asks for worker processes.
import { createLogger } from '../observability/log';
import { configFileSource } from '../sources/state-source';
import type { TunnelLimits } from '../tunnel/limits';
import type { TunnelMode } from '../tunnel/tunnel';
import { WorkersDataPlane } from '../tunnel/worker-host';
import type { PodAgent } from './pod-agent';
import { serve } from './serve';

export interface SidecarSettings {
  /** The uid of the workload this sidecar serves. */
  workload: string;
  configFile: string;
  mode: TunnelMode;
  workers: number;
  workerScript: string;
  drainMs: number;
  limits: Partial<TunnelLimits>;
  podsCgroup?: string;
  pinDir?: string;
}

export function runSidecar(s: SidecarSettings): Promise<PodAgent> {
  return serve({
    role: 'sidecar',
    source: configFileSource(s.configFile),
    agent: {
      scope: { sidecar: s.workload },
      podsCgroup: s.podsCgroup,
      pinDir: s.pinDir,
      mode: s.mode,
      dataPlane:
        s.workers > 0
          ? (ctx) => new WorkersDataPlane(ctx, { count: s.workers, pinDir: ctx.datapath.pinDir, cli: s.workerScript })
          : undefined,
      limits: s.limits,
    },
    drainMs: s.drainMs,
    summary: { workload: s.workload, mode: s.mode, workers: s.workers, limits: s.limits },
    log: createLogger(),
  });
}
