// The life of a serving process, shared by the node and sidecar roots:
// admin endpoints first (so readiness can say what is still pending), then
// the first state, the pods, reloads, the last-resort handler, and the
// signals — SIGTERM/SIGINT drain and stop, SIGHUP rolls the tunnel workers.
import client from 'prom-client';
import { startAdmin } from '../observability/admin';
import { installLastResort } from '../observability/last-resort';
import type { Logger } from '../observability/log';
import type { StateSource } from '../sources/state-source';
import type { MeshConfig } from '../state/types';
import type { TunnelLimits } from '../tunnel/limits';
import type { ProbeSources } from '../tunnel/node-origin';
import type { TunnelMode } from '../tunnel/tunnel';
import { WorkersDataPlane } from '../tunnel/worker-host';
import { PodAgent, type PodAgentOptions } from './pod-agent';

/** How a node or a sidecar serves its pods (the flags both commands share). */
export interface ServingSettings {
  mode: TunnelMode;
  /** Tunnel worker processes; 0 runs the tunnel in this process. */
  workers: number;
  /** The script the workers run (`ambit worker`). */
  workerScript: string;
  drainMs: number;
  limits: Partial<TunnelLimits>;
  /** Plaintext connections that are the node's own (kubelet probes) and skip policy (a node's; a sidecar has none). */
  probeSources?: ProbeSources;
  /** cgroup v2 directory holding the pods (a node's; a sidecar uses its pod's own). */
  podsCgroup?: string;
  pinDir?: string;
}

/** The parts of the pod agent's options that ServingSettings decide: where the datapath lives and who serves it. */
export function servedBy(
  s: ServingSettings,
): Pick<PodAgentOptions, 'podsCgroup' | 'pinDir' | 'mode' | 'dataPlane' | 'limits' | 'probeSources'> {
  return {
    podsCgroup: s.podsCgroup,
    pinDir: s.pinDir,
    mode: s.mode,
    limits: s.limits,
    probeSources: s.probeSources,
    dataPlane:
      s.workers > 0
        ? (ctx) => new WorkersDataPlane(ctx, { count: s.workers, pinDir: ctx.datapath.pinDir, cli: s.workerScript })
        : undefined,
  };
}

export interface ServeSpec {
  role: 'node agent' | 'sidecar';
  source: StateSource;
  /** How the pods are served; config and log are filled in here. */
  agent: Omit<PodAgentOptions, 'config' | 'log' | 'sourceStatus'>;
  drainMs: number;
  /** Logged with "ready". */
  summary: Record<string, unknown>;
  log: Logger;
}

export async function serve(spec: ServeSpec): Promise<PodAgent> {
  const { source, log, drainMs } = spec;
  let app: PodAgent | undefined;
  let unwatch: (() => void) | undefined;
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainSeconds: drainMs / 1000 }, 'draining: no new connections, open ones finish');
    unwatch?.();
    await app?.drain(drainMs);
    admin.close();
    // A restart or an upgrade must not leave the pods open meanwhile.
    app?.stop({ keepCapture: true });
    log.info('stopped');
    process.exit(0);
  };
  const admin = await startAdmin({
    metrics: () => app?.metricsText(),
    readiness: () => app?.readiness() ?? { pending: [source.waitingFor, 'datapath attach', 'pod listeners and certificates'] },
    configDump: () => app?.configDump() ?? { starting: true },
    connections: () => app?.connections(),
    log,
    setLogLevel: (level) => {
      if (app) app.setLogLevel(level);
      else log.level = level;
    },
    quit: () => void stop('quitquitquit'),
  });
  const config = await source.initial();
  app = await PodAgent.start({ ...spec.agent, config, sourceStatus: source.status && (() => source.status?.()), log });
  const running = app;
  source.registerMetrics?.(app.metrics.registry);
  const warn = (cfg: MeshConfig): void => {
    if (cfg.warnings?.length) log.warn({ warnings: cfg.warnings }, 'policies accepted with warnings');
    if (cfg.notes?.length) log.info({ notes: cfg.notes }, 'policies enforced elsewhere');
  };
  warn(config);
  unwatch = source.watch(
    (cfg) =>
      void running.update(cfg).then(
        () => {
          warn(cfg);
          log.info({ from: source.name }, 'configuration applied');
        },
        (err: Error) => log.error({ from: source.name, err: err.message }, 'configuration change could not be applied'),
      ),
    (err) => {
      running.metrics.configRejected.inc();
      log.error(
        { from: source.name, code: err.code, err: err.message },
        'configuration change rejected; the last good state keeps serving',
      );
    },
  );
  // From here on an error that escapes its connection is a bug to log, not a reason to cut every pod's traffic.
  installLastResort({ log, role: spec.role, count: uncaughtCounter(app.metrics.registry) });
  log.info({ ...spec.summary, pods: app.enrolment.list().length }, `${spec.role === 'node agent' ? 'node' : 'sidecar'} ready`);
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  // SIGHUP: a rolling replacement of the tunnel workers (new code on disk is picked up).
  process.on('SIGHUP', () => {
    const roll = running.dataPlane.roll;
    if (!roll) return void log.warn('SIGHUP: no tunnel workers to replace (--workers 0)');
    log.info('rolling the tunnel workers');
    roll.call(running.dataPlane, drainMs).then(
      () => log.info('tunnel workers replaced'),
      (err: Error) => log.error({ err: err.message }, 'rolling the tunnel workers failed'),
    );
  });
  return app;
}

/** Counts what reached the last-resort handler, on the process's own /metrics. */
function uncaughtCounter(registry: client.Registry): (kind: 'exception' | 'rejection') => void {
  const c = new client.Counter({
    name: 'ambit_uncaught_errors_total',
    help: "Errors that escaped their connection's handling (bugs), by kind; the process kept serving",
    labelNames: ['kind'],
    registers: [registry],
  });
  return (kind) => c.inc({ kind });
}
