#!/usr/bin/env node
// `ambit` — one binary: node, sidecar, control-plane, worker, ca, datapath.
// Each command's flags are in ./usage.ts (`ambit COMMAND --help`); how a
// mistake on the command line is reported is in ./args.ts.
import fs from 'node:fs';
import os from 'node:os';
import client from 'prom-client';
import { NodeApp, type TunnelMode } from '../app';
import { watchParsedFile } from '../state/file-source';
import { cgroup2Root } from '../datapath/probe';
import { AmbitError } from '../errors';
import { WorkersDataPlane } from '../agent/workers';
import { startAdmin } from '../observability/admin';
import { installLastResort } from '../observability/last-resort';
import { runWorker } from '../tunnel/worker';
import { createLogger } from '../observability/log';
import { loadConfigFile, parseConfig } from '../state/config';
import { ControlPlane } from '../control-plane/server';
import { IstioCaClient } from '../identity/ca-client';
import type { Logger } from '../observability/log';
import { LocalPodsFile, NoLocalPods } from '../state/local-pods';
import type { MeshConfig } from '../state/types';
import { XdsMeshSource } from '../state/xds-mesh';
import { PodLocator } from '../agent/pod-locator';
import { KubeClient } from '../kube/client';
import { KubeNodePods } from '../kube/node-pods';
import { nodeMessage, XdsClient } from '../state/xds-source';
import { HelpRequested, parseCount, parseFlags, UsageError } from './args';
import { limitOptions, limitsFromFlags } from './limit-flags';
import { ca, datapath } from './tools';
import { CONTROL_PLANE_USAGE, NODE_USAGE, SIDECAR_USAGE, USAGE, WORKER_USAGE } from './usage';

const SERVE_OPTIONS = {
  config: { type: 'string' }, 'pods-cgroup': { type: 'string' }, 'pin-dir': { type: 'string' }, tunnel: { type: 'string' },
  workers: { type: 'string' }, 'drain-seconds': { type: 'string' }, ...limitOptions,
} as const;
const NODE_OPTIONS = {
  ...SERVE_OPTIONS, node: { type: 'string' },
  xds: { type: 'string' }, 'xds-root': { type: 'string' }, 'xds-token': { type: 'string' }, 'xds-server-name': { type: 'string' },
  'xds-max-message-bytes': { type: 'string' },
  pods: { type: 'string' }, 'trust-domain': { type: 'string' }, 'cluster-id': { type: 'string' },
  kubernetes: { type: 'boolean' }, 'kube-api': { type: 'string' }, proc: { type: 'string' },
} as const;
const SIDECAR_OPTIONS = { ...SERVE_OPTIONS, workload: { type: 'string' } } as const;

/** Counts what reached the last-resort handler, on the process's own /metrics. */
function uncaughtCounter(registry: client.Registry): (kind: 'exception' | 'rejection') => void {
  const c = new client.Counter({ name: 'ambit_uncaught_errors_total', help: "Errors that escaped their connection's handling (bugs), by kind; the process kept serving", labelNames: ['kind'], registers: [registry] });
  return (kind) => c.inc({ kind });
}

/** `ambit node` and `ambit sidecar`: the same tunnel, scoped to a node's ambient pods or to one pod. */
async function serve(kind: 'node' | 'sidecar', argv: string[]): Promise<void> {
  const usage = kind === 'node' ? NODE_USAGE : SIDECAR_USAGE;
  const values = parseFlags(argv, kind === 'node' ? NODE_OPTIONS : SIDECAR_OPTIONS, usage).values as Record<string, string | boolean | undefined>;
  const target = (kind === 'node' ? values.node : values.workload) as string | undefined;
  if (!target) throw new UsageError(`${kind === 'node' ? '--node NAME' : '--workload UID'} is required`, usage);
  if (!values.config && !values.xds) throw new UsageError(kind === 'node' ? '--config FILE (standalone) or --xds HOST:PORT (control plane) is required' : '--config FILE is required', usage);
  if (values.config && values.xds) throw new UsageError('--config and --xds exclude each other (with --xds, node-local pod facts go in --pods FILE)', usage);
  if (values.kubernetes && !values.xds) throw new UsageError('--kubernetes needs --xds (in Kubernetes the node takes its state from the control plane; --kubernetes finds its pods)', usage);
  if (values.kubernetes && values.pods) throw new UsageError('--kubernetes and --pods exclude each other (with --kubernetes the node finds its pods itself)', usage);
  const mode = (values.tunnel ?? 'hbone') as TunnelMode;
  if (mode !== 'hbone' && mode !== 'plain') throw new UsageError(`--tunnel ${JSON.stringify(values.tunnel)} is not hbone or plain (hbone is the mesh; plain relays TCP without encryption, to measure the datapath alone)`, usage);
  // A node agent runs the tunnel in one worker per core by default; a sidecar serves one pod in-process.
  const workers = parseCount('--workers', values.workers as string | undefined, kind === 'node' ? os.cpus().length : 0, usage, 0, 1024);
  const drainMs = parseCount('--drain-seconds', values['drain-seconds'] as string | undefined, 25, usage, 0, 3600) * 1000;
  const limits = limitsFromFlags(values, usage);
  const log = createLogger();
  const source = values.xds ? await xdsSource(values, target, log) : undefined;
  // The endpoints come up first, so readiness can say what is still pending.
  let app: NodeApp | undefined;
  let unwatch: (() => void) | undefined;
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainSeconds: drainMs / 1000 }, 'draining: no new connections, open ones finish');
    unwatch?.();
    await app?.drain(drainMs);
    admin.close();
    app?.stop();
    log.info('stopped');
    process.exit(0);
  };
  const admin = await startAdmin({
    metrics: () => app?.metricsText(),
    readiness: () => app?.readiness() ?? { pending: [source ? `first full xDS sync from ${values.xds}` : 'configuration', 'datapath attach', 'pod listeners and certificates'] },
    configDump: () => app?.configDump() ?? { starting: true },
    log,
    setLogLevel: (level) => (app ? app.setLogLevel(level) : (log.level = level)),
    quit: () => void stop('quitquitquit'),
  });
  const pinDir = values['pin-dir'] as string | undefined;
  const config = source ? await source.mesh.initial(XDS_SYNC_TIMEOUT_MS) : loadConfigFile(values.config as string);
  app = await NodeApp.start({
    config,
    ca: source?.ca,
    podsLocatedSeparately: !!source,
    sourceStatus: source ? () => ({ xds: values.xds, ...source.mesh.status() }) : undefined,
    scope: kind === 'node' ? { node: target } : { sidecar: target },
    podsCgroup: values['pods-cgroup'] as string | undefined,
    pinDir,
    mode,
    dataPlane: workers > 0 ? (ctx) => new WorkersDataPlane(ctx, { count: workers, pinDir: ctx.datapath.pinDir, cli: __filename }) : undefined,
    limits,
    log,
  });
  const running = app;
  source?.mesh.registerMetrics(app.metrics.registry);
  const from = String(values.xds ?? values.config);
  const warn = (cfg: MeshConfig): void => { if (cfg.warnings?.length) log.warn({ warnings: cfg.warnings }, 'policies accepted with warnings'); };
  warn(config);
  const onValid = (cfg: MeshConfig): void => void running.update(cfg).then(
    () => { warn(cfg); log.info({ from }, 'configuration applied'); },
    (err: Error) => log.error({ from, err: err.message }, 'configuration change could not be applied'),
  );
  const onInvalid = (err: AmbitError): void => {
    running.metrics.configRejected.inc();
    log.error({ from, code: err.code, err: err.message }, 'configuration change rejected; the last good state keeps serving');
  };
  unwatch = source ? source.mesh.watch(onValid, onInvalid) : watchParsedFile(values.config as string, parseConfig, onValid, onInvalid);
  // From here on an error that escapes its connection is a bug to log, not a reason to cut every pod's traffic.
  installLastResort({ log, role: kind === 'node' ? 'node agent' : 'sidecar', count: uncaughtCounter(app.metrics.registry) });
  log.info({ [kind === 'node' ? 'node' : 'workload']: target, mode, workers, pods: app.enrolment.list().length, limits }, `${kind} ready`);
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  // SIGHUP: a rolling replacement of the tunnel workers (new code on disk is picked up).
  process.on('SIGHUP', () => {
    const roll = running.dataPlane.roll;
    if (!roll) return void log.warn('SIGHUP: no tunnel workers to replace (--workers 0)');
    log.info('rolling the tunnel workers');
    roll.call(running.dataPlane, drainMs).then(() => log.info('tunnel workers replaced'), (err: Error) => log.error({ err: err.message }, 'rolling the tunnel workers failed'));
  });
}

const XDS_SYNC_TIMEOUT_MS = 10 * 60_000;

/** `ambit node --xds`: state from a control plane's delta xDS, certificates from its CA. */
async function xdsSource(values: Record<string, string | boolean | undefined>, nodeName: string, log: Logger): Promise<{ mesh: XdsMeshSource; ca: IstioCaClient }> {
  const address = String(values.xds);
  const rootFile = values['xds-root'] as string | undefined;
  if (!rootFile) throw new UsageError("--xds-root FILE is required with --xds: the control plane's root certificate (ambit: <ca.dir>/root-cert.pem; istiod: the istio-ca-root-cert ConfigMap)", NODE_USAGE);
  let rootsPem: string;
  try {
    rootsPem = fs.readFileSync(rootFile, 'utf8');
  } catch (err) {
    throw new AmbitError('AMBIT_E_CONFIG', `cannot read --xds-root ${rootFile}: ${(err as NodeJS.ErrnoException).code}`);
  }
  const tokenFile = values['xds-token'] as string | undefined;
  const serverName = values['xds-server-name'] as string | undefined;
  const trustDomain = (values['trust-domain'] as string | undefined) ?? 'cluster.local';
  const podsFile = values.pods as string | undefined;
  const ip = process.env.INSTANCE_IP ?? firstIpv4() ?? '127.0.0.1';
  const node = nodeMessage({ nodeName, podName: process.env.POD_NAME ?? `ambit-${nodeName}`, podNamespace: process.env.POD_NAMESPACE ?? 'ambit-system', ip });
  const maxReceiveBytes = values['xds-max-message-bytes'] === undefined ? undefined
    : parseCount('--xds-max-message-bytes', values['xds-max-message-bytes'] as string, 0, NODE_USAGE, 1 << 20, 1 << 30);
  const client = new XdsClient({ address, rootsPem, serverName, tokenFile, node, trustDomain, maxReceiveBytes, log });
  const pods = values.kubernetes ? await kubeNodePods(values, nodeName, log) : podsFile ? new LocalPodsFile(podsFile) : new NoLocalPods();
  const ca = new IstioCaClient({ address, rootsPem, serverName, tokenFile, clusterId: values['cluster-id'] as string | undefined });
  return { mesh: new XdsMeshSource(client, { node: nodeName, trustDomain }, pods), ca };
}

/** This node's pods from the API server, located in the host's /proc. */
async function kubeNodePods(values: Record<string, string | boolean | undefined>, nodeName: string, log: Logger): Promise<KubeNodePods> {
  const root = cgroup2Root();
  if (!root) throw new AmbitError('AMBIT_E_MOUNT', 'no cgroup v2 mount: pods cannot be located', 'mount cgroup2 (the kubelet needs it too)');
  const locator = new PodLocator((values.proc as string | undefined) ?? '/proc', root);
  const pods = new KubeNodePods(KubeClient.inCluster(values['kube-api'] as string | undefined), nodeName, locator, log.child({ component: 'kubernetes' }));
  await pods.start();
  return pods;
}

function firstIpv4(): string | undefined {
  return Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
}

async function controlPlane(argv: string[]): Promise<void> {
  const { values } = parseFlags(argv, {
    config: { type: 'string' }, listen: { type: 'string' }, 'server-ip': { type: 'string', multiple: true }, 'server-name': { type: 'string', multiple: true },
    kubernetes: { type: 'boolean' }, 'kube-api': { type: 'string' }, 'xds-max-response-bytes': { type: 'string' },
  }, CONTROL_PLANE_USAGE);
  const maxResponseBytes = values['xds-max-response-bytes'] === undefined ? undefined
    : parseCount('--xds-max-response-bytes', values['xds-max-response-bytes'], 0, CONTROL_PLANE_USAGE, 64 << 10, 1 << 30);
  if (!values.config) throw new UsageError('--config FILE is required', CONTROL_PLANE_USAGE);
  const log = createLogger();
  const cp = await ControlPlane.start({
    configFile: values.config, listen: values.listen, log,
    names: { dns: values['server-name'] ?? [], ips: values['server-ip'] ?? [] },
    kube: values.kubernetes ? KubeClient.inCluster(values['kube-api']) : undefined,
    xds: maxResponseBytes === undefined ? undefined : { maxResponseBytes },
  });
  const stop = (signal: string): void => {
    log.info({ signal }, 'control plane stopping');
    void cp.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  installLastResort({ log, role: 'control plane' });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'node': return serve('node', rest);
    case 'sidecar': return serve('sidecar', rest);
    case 'control-plane': return controlPlane(rest);
    case 'worker':
      // Started by `ambit node` over IPC, not by hand; its flags are its init message.
      parseFlags(rest, {}, WORKER_USAGE);
      return runWorker();
    case 'ca': return ca(rest);
    case 'datapath': return datapath(rest);
    case '-h': case '--help': case 'help': throw new HelpRequested(USAGE);
    case undefined: throw new HelpRequested(USAGE);
    default: throw new UsageError(`unknown command ${JSON.stringify(cmd)}`, USAGE);
  }
}

/**
 * One line on stderr and an exit code a script can act on: 0 help, 2 a
 * mistake of the operator's (flags, configuration), 1 anything else. A
 * stack is for developers: only with AMBIT_LOG_LEVEL=debug or trace.
 */
function fail(err: unknown): never {
  if (err instanceof HelpRequested) {
    console.log(err.usage);
    process.exit(0);
  }
  if (err instanceof UsageError) {
    console.error(`ambit: ${err.message}\n${err.usage}`);
    process.exit(2);
  }
  if (err instanceof AmbitError) {
    console.error(`ambit: ${err.code}: ${err.message}`);
    process.exit(2);
  }
  const e = err instanceof Error ? err : new Error(String(err));
  const sys = (e as NodeJS.ErrnoException).code;
  const verbose = /^(debug|trace)$/.test(process.env.AMBIT_LOG_LEVEL ?? '');
  console.error(`ambit: AMBIT_E_INTERNAL: ${sys ? `${sys}: ` : ''}${e.message.split('\n')[0]}${verbose ? `\n${e.stack}` : ' (AMBIT_LOG_LEVEL=debug shows the stack)'}`);
  process.exit(1);
}

main(process.argv.slice(2)).catch(fail);
