#!/usr/bin/env node
// `ambit` — one binary: node, sidecar, control-plane, worker, ca, datapath,
// config (what a running node holds) and version.
// This file only reads the command line: each command's flags become the
// settings of its composition root in src/roots/ (or, for the one-shot
// tools, ./tools.ts). Flags are listed in ./usage.ts (`ambit COMMAND
// --help`); how a mistake on the command line is reported is in ./args.ts.
// A command's root is imported only once the command is known: every
// process pays in memory for each module it loads, and a tunnel worker
// (`ambit worker`, one or more per node) must not carry gRPC, Kubernetes or
// X.509 issuing that only the agent or the control plane use.
import { DEFAULT_CNI_SOCKET } from '../cni/protocol';
import { AmbitError } from '../errors';
import type { PodFacts, XdsSettings } from '../roots/node';
import type { ServingSettings } from '../roots/serve';
import { DEFAULT_PROBE_SOURCES, parseProbeSources } from '../tunnel/node-origin';
import type { TunnelMode } from '../tunnel/tunnel';
import { HelpRequested, parseCount, parseFlags, UsageError } from './args';
import { cni } from './cni';
import { limitOptions, limitsFromFlags } from './limit-flags';
import { CONTROL_PLANE_USAGE, NODE_USAGE, SIDECAR_USAGE, USAGE, VERSION_USAGE, WAYPOINT_USAGE, WORKER_USAGE } from './usage';
import { versionLine } from './version';

const SERVE_OPTIONS = {
  config: { type: 'string' },
  'pods-cgroup': { type: 'string' },
  'pin-dir': { type: 'string' },
  tunnel: { type: 'string' },
  workers: { type: 'string' },
  'drain-seconds': { type: 'string' },
  ...limitOptions,
} as const;
const NODE_OPTIONS = {
  ...SERVE_OPTIONS,
  node: { type: 'string' },
  xds: { type: 'string' },
  'xds-root': { type: 'string' },
  'xds-token': { type: 'string' },
  'xds-server-name': { type: 'string' },
  'xds-max-message-bytes': { type: 'string' },
  pods: { type: 'string' },
  'trust-domain': { type: 'string' },
  'cluster-id': { type: 'string' },
  kubernetes: { type: 'boolean' },
  'kube-api': { type: 'string' },
  proc: { type: 'string' },
  cni: { type: 'boolean' },
  'cni-socket': { type: 'string' },
  'probe-sources': { type: 'string' },
} as const;
const SIDECAR_OPTIONS = { ...SERVE_OPTIONS, workload: { type: 'string' } } as const;
const WAYPOINT_OPTIONS = {
  config: { type: 'string' },
  xds: { type: 'string' },
  'xds-root': { type: 'string' },
  'xds-token': { type: 'string' },
  'xds-server-name': { type: 'string' },
  'ca-address': { type: 'string' },
  'trust-domain': { type: 'string' },
  name: { type: 'string' },
  namespace: { type: 'string' },
  listen: { type: 'string' },
  'admin-port': { type: 'string' },
  'stats-port': { type: 'string' },
  'ready-port': { type: 'string' },
  'drain-seconds': { type: 'string' },
  ...limitOptions,
} as const;
const CONTROL_PLANE_OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  'server-ip': { type: 'string', multiple: true },
  'server-name': { type: 'string', multiple: true },
  kubernetes: { type: 'boolean' },
  'kube-api': { type: 'string' },
  'xds-max-response-bytes': { type: 'string' },
} as const;

type Values = Record<string, string | boolean | undefined>;

/** The flags `ambit node` and `ambit sidecar` share. */
function servingFlags(values: Values, usage: string, defaultWorkers: number): ServingSettings {
  const mode = (values.tunnel ?? 'hbone') as TunnelMode;
  if (mode !== 'hbone' && mode !== 'plain') {
    throw new UsageError(
      `--tunnel ${JSON.stringify(values.tunnel)} is not hbone or plain (hbone is the mesh; plain relays TCP without encryption, to measure the datapath alone)`,
      usage,
    );
  }
  return {
    mode,
    workers: parseCount('--workers', values.workers as string | undefined, defaultWorkers, usage, 0, 1024),
    workerScript: __filename,
    drainMs: parseCount('--drain-seconds', values['drain-seconds'] as string | undefined, 25, usage, 0, 3600) * 1000,
    limits: limitsFromFlags(values, usage),
    podsCgroup: values['pods-cgroup'] as string | undefined,
    pinDir: values['pin-dir'] as string | undefined,
  };
}

async function node(argv: string[]): Promise<void> {
  const u = NODE_USAGE;
  const values = parseFlags(argv, NODE_OPTIONS, u).values as Values;
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const name = str('node');
  const configFile = str('config');
  if (!name) throw new UsageError('--node NAME is required', u);
  if (!configFile && !values.xds) throw new UsageError('--config FILE (standalone) or --xds HOST:PORT (control plane) is required', u);
  if (values.config && values.xds)
    throw new UsageError('--config and --xds exclude each other (with --xds, node-local pod facts go in --pods FILE)', u);
  if (values.kubernetes && !values.xds) {
    throw new UsageError(
      '--kubernetes needs --xds (in Kubernetes the node takes its state from the control plane; --kubernetes finds its pods)',
      u,
    );
  }
  if (values.kubernetes && values.pods)
    throw new UsageError('--kubernetes and --pods exclude each other (with --kubernetes the node finds its pods itself)', u);
  // A node agent runs the tunnel in one worker per CPU it may use by default.
  const { defaultWorkerCount } = await import('../tunnel/worker-host');
  const serving = servingFlags(values, u, defaultWorkerCount());
  const probeSources = str('probe-sources') === undefined ? DEFAULT_PROBE_SOURCES : parseProbeSources(str('probe-sources') ?? '');
  if (typeof probeSources === 'string') throw new UsageError(`--probe-sources ${probeSources}`, u);
  const cniSocket = str('cni-socket') ?? (values.cni ? DEFAULT_CNI_SOCKET : undefined);
  const { runNode } = await import('../roots/node');
  await runNode({ node: name, state: configFile ? { file: configFile } : xdsState(values, u), ...serving, probeSources, cniSocket });
}

function xdsState(values: Values, u: string): { xds: XdsSettings; pods: PodFacts } {
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const rootFile = str('xds-root');
  if (!rootFile) {
    throw new UsageError(
      "--xds-root FILE is required with --xds: the control plane's root certificate (ambit: <ca.dir>/root-cert.pem; istiod: the istio-ca-root-cert ConfigMap)",
      u,
    );
  }
  const maxMessage = str('xds-max-message-bytes');
  const xds: XdsSettings = {
    address: String(values.xds),
    rootFile,
    tokenFile: str('xds-token'),
    serverName: str('xds-server-name'),
    trustDomain: str('trust-domain') ?? 'cluster.local',
    clusterId: str('cluster-id'),
    maxReceiveBytes: maxMessage === undefined ? undefined : parseCount('--xds-max-message-bytes', maxMessage, 0, u, 1 << 20, 1 << 30),
  };
  const podsFile = str('pods');
  const pods: PodFacts = values.kubernetes
    ? { kubernetes: { api: str('kube-api'), proc: str('proc') ?? '/proc' } }
    : podsFile
      ? { file: podsFile }
      : 'none';
  return { xds, pods };
}

async function sidecar(argv: string[]): Promise<void> {
  const u = SIDECAR_USAGE;
  const values = parseFlags(argv, SIDECAR_OPTIONS, u).values as Values;
  const workload = values.workload as string | undefined;
  if (!workload) throw new UsageError('--workload UID is required', u);
  if (!values.config) throw new UsageError('--config FILE is required', u);
  // A sidecar serves one pod in-process by default.
  const { runSidecar } = await import('../roots/sidecar');
  await runSidecar({ workload, configFile: values.config as string, ...servingFlags(values, u, 0) });
}

async function waypoint(argv: string[]): Promise<void> {
  const u = WAYPOINT_USAGE;
  const values = parseFlags(argv, WAYPOINT_OPTIONS, u).values as Values;
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const configFile = str('config');
  const name = str('name');
  const namespace = str('namespace');
  const xdsAddress = str('xds');
  if (configFile && xdsAddress)
    throw new UsageError('--config and --xds exclude each other (the waypoint takes its routes from one place)', u);
  if (!configFile && !xdsAddress)
    throw new UsageError('--config FILE or --xds HOST:PORT is required (the standalone YAML, or `ambit control-plane`)', u);
  for (const flag of ['xds-root', 'xds-token', 'xds-server-name', 'ca-address', 'trust-domain'])
    if (configFile && values[flag] !== undefined) throw new UsageError(`--${flag} goes with --xds, not --config`, u);
  const rootFile = str('xds-root');
  if (xdsAddress && !rootFile)
    throw new UsageError("--xds-root FILE is required with --xds: the control plane's root certificate (<ca.dir>/root-cert.pem)", u);
  if (!name) throw new UsageError("--name NAME is required (the waypoint Gateway's name, also its service account)", u);
  if (!namespace) throw new UsageError('--namespace NS is required (where the waypoint Gateway is)', u);
  const listen = str('listen') ?? '0.0.0.0:15008';
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(listen);
  if (!m?.[1] || !(Number(m[2]) <= 65535))
    throw new UsageError(`--listen ${JSON.stringify(listen)} is not IPv4:PORT (e.g. 0.0.0.0:15008)`, u);
  const port = (flag: string, fallback: number): number => parseCount(`--${flag}`, str(flag), fallback, u, 0, 65535);
  const { runWaypoint } = await import('../roots/waypoint');
  await runWaypoint({
    configFile,
    xds:
      xdsAddress && rootFile
        ? {
            address: xdsAddress,
            rootFile,
            tokenFile: str('xds-token'),
            serverName: str('xds-server-name'),
            caAddress: str('ca-address'),
            trustDomain: str('trust-domain') ?? 'cluster.local',
          }
        : undefined,
    name,
    namespace,
    listen: { host: m[1], port: Number(m[2]) },
    adminPorts: { admin: port('admin-port', 15000), stats: port('stats-port', 15020), ready: port('ready-port', 15021) },
    drainMs: parseCount('--drain-seconds', str('drain-seconds'), 25, u, 0, 3600) * 1000,
    limits: limitsFromFlags(values, u),
  });
}

async function controlPlane(argv: string[]): Promise<void> {
  const u = CONTROL_PLANE_USAGE;
  const { values } = parseFlags(argv, CONTROL_PLANE_OPTIONS, u);
  const maxResponse = values['xds-max-response-bytes'];
  const maxResponseBytes =
    maxResponse === undefined ? undefined : parseCount('--xds-max-response-bytes', maxResponse, 0, u, 64 << 10, 1 << 30);
  if (!values.config) throw new UsageError('--config FILE is required', u);
  const { runControlPlane } = await import('../roots/control-plane');
  await runControlPlane({
    configFile: values.config,
    listen: values.listen,
    maxResponseBytes,
    names: { dns: values['server-name'] ?? [], ips: values['server-ip'] ?? [] },
    kubernetes: values.kubernetes ? { api: values['kube-api'] } : undefined,
  });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'node':
      return node(rest);
    case 'sidecar':
      return sidecar(rest);
    case 'waypoint':
      return waypoint(rest);
    case 'control-plane':
      return controlPlane(rest);
    case 'worker':
      // Started by `ambit node` over IPC, not by hand; its flags are its init message.
      parseFlags(rest, {}, WORKER_USAGE);
      return (await import('../tunnel/worker')).runWorker();
    case 'ca':
      return (await import('./tools')).ca(rest);
    case 'datapath':
      return (await import('./tools')).datapath(rest);
    case 'cni':
      return cni(rest);
    case 'config':
      return (await import('./inspect')).config(rest);
    case '--version':
    case 'version':
      parseFlags(rest, {}, VERSION_USAGE);
      console.log(versionLine());
      return;
    case '-h':
    case '--help':
    case 'help':
      throw new HelpRequested(USAGE);
    case undefined:
      throw new HelpRequested(USAGE);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`, USAGE);
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
  console.error(
    `ambit: AMBIT_E_INTERNAL: ${sys ? `${sys}: ` : ''}${e.message.split('\n')[0]}${verbose ? `\n${e.stack}` : ' (AMBIT_LOG_LEVEL=debug shows the stack)'}`,
  );
  process.exit(1);
}

main(process.argv.slice(2)).catch(fail);
