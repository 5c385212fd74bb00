#!/usr/bin/env node
// `ambit` — one binary, subcommands:
//   ambit node --config FILE --node NAME [--pods-cgroup DIR] [--pin-dir DIR] [--tunnel hbone|plain]
//   ambit node --xds HOST:PORT --xds-root FILE --node NAME [--pods FILE] …
//   ambit control-plane --config FILE [--listen HOST:PORT]
//   ambit sidecar --config FILE --workload UID [--pin-dir DIR] [--tunnel hbone|plain]
//   ambit datapath probe|status|cleanup [--pin-dir DIR] [--json]
//   ambit ca init|issue …
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NodeApp, type TunnelMode } from '../app';
import { BuiltinCa } from '../identity/builtin-ca';
import { requestCertificate } from '../identity/cert-manager';
import { parseSpiffe } from '../identity/spiffe';
import { watchParsedFile } from '../state/file-source';
import { DEFAULT_PIN_DIR } from '../datapath/loader';
import { cgroup2Root, formatFindings, probe } from '../datapath/probe';
import { cleanupDatapath, datapathStatus } from '../datapath/status';
import { AmbitError } from '../errors';
import os from 'node:os';
import { WorkersDataPlane } from '../agent/workers';
import { startAdmin } from '../observability/admin';
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

const USAGE = `usage:
  ambit node --config FILE --node NAME [--pods-cgroup DIR] [--pin-dir DIR] [--tunnel hbone|plain]
             [--workers N (default: one per core; 0: in-process)] [--drain-seconds S (default 25)]
  ambit node --xds HOST:PORT --xds-root FILE --node NAME [--xds-token FILE] [--xds-server-name NAME]
             [--pods FILE | --kubernetes [--kube-api URL] [--proc DIR]] [--trust-domain TD] [--cluster-id ID] [other node flags]
  ambit sidecar --config FILE --workload UID [--pin-dir DIR] [--tunnel hbone|plain]
  ambit control-plane --config FILE [--listen HOST:PORT (default 0.0.0.0:15012)] [--server-ip IP]… [--server-name DNS]…
                      [--kubernetes [--kube-api URL]]
  ambit ca init  --dir DIR
  ambit ca issue --dir DIR --identity spiffe://TD/ns/NS/sa/SA --out OUTDIR [--ttl SECONDS]
  ambit datapath probe   [--pin-dir DIR]
  ambit datapath status  [--pin-dir DIR] [--json]
  ambit datapath cleanup [--pin-dir DIR]`;

/** `ambit node` and `ambit sidecar`: the same tunnel, scoped to a node's ambient pods or to one pod. */
async function serve(kind: 'node' | 'sidecar', argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' }, node: { type: 'string' }, workload: { type: 'string' },
      'pods-cgroup': { type: 'string' }, 'pin-dir': { type: 'string' }, tunnel: { type: 'string' },
      workers: { type: 'string' }, 'drain-seconds': { type: 'string' },
      xds: { type: 'string' }, 'xds-root': { type: 'string' }, 'xds-token': { type: 'string' }, 'xds-server-name': { type: 'string' },
      pods: { type: 'string' }, 'trust-domain': { type: 'string' }, 'cluster-id': { type: 'string' },
      kubernetes: { type: 'boolean' }, 'kube-api': { type: 'string' }, proc: { type: 'string' },
    },
  });
  const target = kind === 'node' ? values.node : values.workload;
  if (!target) throw new AmbitError('AMBIT_E_CONFIG', `${kind === 'node' ? '--node' : '--workload'} is required`, USAGE);
  if (!values.config && !values.xds) throw new AmbitError('AMBIT_E_CONFIG', '--config FILE (standalone) or --xds HOST:PORT (control plane) is required', USAGE);
  if (values.config && values.xds) throw new AmbitError('AMBIT_E_CONFIG', '--config and --xds exclude each other', 'with --xds, node-local pod facts go in --pods FILE');
  if (values.xds && kind !== 'node') throw new AmbitError('AMBIT_E_CONFIG', '--xds is for `ambit node`', 'a sidecar reads --config');
  if (values.kubernetes && !values.xds) throw new AmbitError('AMBIT_E_CONFIG', '--kubernetes needs --xds', 'in Kubernetes the node takes its state from the control plane; --kubernetes finds its pods');
  if (values.kubernetes && values.pods) throw new AmbitError('AMBIT_E_CONFIG', '--kubernetes and --pods exclude each other', 'with --kubernetes the node finds its pods itself');
  const mode = (values.tunnel ?? 'hbone') as TunnelMode;
  if (mode !== 'hbone' && mode !== 'plain') throw new AmbitError('AMBIT_E_CONFIG', `--tunnel ${JSON.stringify(values.tunnel)} is not hbone or plain`, 'hbone is the mesh; plain relays TCP without encryption (to measure the datapath alone)');
  // A node agent runs the tunnel in one worker per core by default; a sidecar serves one pod in-process.
  const workers = count('--workers', values.workers, kind === 'node' ? os.cpus().length : 0);
  const drainMs = count('--drain-seconds', values['drain-seconds'], 25) * 1000;
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
  const pinDir = values['pin-dir'];
  const config = source ? await source.mesh.initial(XDS_SYNC_TIMEOUT_MS) : loadConfigFile(values.config!);
  app = await NodeApp.start({
    config,
    ca: source?.ca,
    podsLocatedSeparately: !!source,
    sourceStatus: source ? () => ({ xds: values.xds, ...source.mesh.status() }) : undefined,
    scope: kind === 'node' ? { node: target } : { sidecar: target },
    podsCgroup: values['pods-cgroup'],
    pinDir,
    mode,
    dataPlane: workers > 0 ? (ctx) => new WorkersDataPlane(ctx, { count: workers, pinDir: ctx.datapath.pinDir, cli: __filename }) : undefined,
    log,
  });
  const running = app;
  source?.mesh.registerMetrics(app.metrics.registry);
  const from = values.xds ?? values.config!;
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
  unwatch = source ? source.mesh.watch(onValid, onInvalid) : watchParsedFile(values.config!, parseConfig, onValid, onInvalid);
  log.info({ [kind === 'node' ? 'node' : 'workload']: target, mode, workers, pods: app.enrolment.list().length }, `${kind} ready`);
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
  if (!rootFile) throw new AmbitError('AMBIT_E_CONFIG', '--xds-root FILE is required with --xds', "the control plane's root certificate (ambit: <ca.dir>/root-cert.pem; istiod: the istio-ca-root-cert ConfigMap)");
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
  const client = new XdsClient({ address, rootsPem, serverName, tokenFile, node, trustDomain, log });
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
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' }, listen: { type: 'string' }, 'server-ip': { type: 'string', multiple: true }, 'server-name': { type: 'string', multiple: true },
      kubernetes: { type: 'boolean' }, 'kube-api': { type: 'string' },
    },
  });
  if (!values.config) throw new AmbitError('AMBIT_E_CONFIG', '--config is required', USAGE);
  const log = createLogger();
  const cp = await ControlPlane.start({
    configFile: values.config, listen: values.listen, log,
    names: { dns: values['server-name'] ?? [], ips: values['server-ip'] ?? [] },
    kube: values.kubernetes ? KubeClient.inCluster(values['kube-api']) : undefined,
  });
  const stop = (signal: string): void => {
    log.info({ signal }, 'control plane stopping');
    void cp.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

function count(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new AmbitError('AMBIT_E_CONFIG', `${flag} ${JSON.stringify(value)} is not a whole number >= 0`);
  return n;
}

async function ca(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { dir: { type: 'string' }, identity: { type: 'string' }, out: { type: 'string' }, ttl: { type: 'string' } } });
  if (!values.dir) throw new AmbitError('AMBIT_E_CONFIG', '--dir is required', USAGE);
  const authority = await BuiltinCa.open(values.dir);
  if (verb === 'init') {
    console.log(`CA ready in ${values.dir} (root-cert.pem, root-key.pem; readable by root only)`);
    return;
  }
  if (verb !== 'issue') throw new AmbitError('AMBIT_E_CONFIG', `unknown ca command ${JSON.stringify(verb ?? '')}`, USAGE);
  if (!values.identity || !parseSpiffe(values.identity)) throw new AmbitError('AMBIT_E_CONFIG', `--identity ${JSON.stringify(values.identity ?? '')} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>`);
  if (!values.out) throw new AmbitError('AMBIT_E_CONFIG', '--out is required', USAGE);
  const ttl = Number(values.ttl ?? 86400);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new AmbitError('AMBIT_E_CONFIG', `--ttl ${JSON.stringify(values.ttl)} is not a positive number of seconds`);
  const c = await requestCertificate(authority, values.identity, ttl);
  fs.mkdirSync(values.out, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(values.out, 'cert.pem'), c.chainPem, { mode: 0o644 });
  fs.writeFileSync(path.join(values.out, 'key.pem'), c.keyPem, { mode: 0o600 });
  fs.writeFileSync(path.join(values.out, 'root.pem'), c.rootsPem, { mode: 0o644 });
  console.log(`issued ${values.identity} until ${c.notAfter.toISOString()}: ${values.out}/{cert,key,root}.pem`);
}

function datapath(argv: string[]): void {
  const [verb, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { 'pin-dir': { type: 'string' }, json: { type: 'boolean' } } });
  const pinDir = values['pin-dir'] ?? DEFAULT_PIN_DIR;
  switch (verb) {
    case 'probe': {
      const findings = probe(pinDir);
      console.log(formatFindings(findings));
      if (findings.some((f) => !f.ok)) process.exitCode = 1;
      return;
    }
    case 'status': {
      const s = datapathStatus(pinDir);
      if (values.json) {
        console.log(JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2));
        return;
      }
      console.log(`pin directory ${s.pinDir}`);
      if (!s.links.length) console.log('  nothing attached');
      for (const l of s.links) console.log(`  ${l.pin.padEnd(28)} link ${String(l.linkId).padEnd(5)} prog ${l.program} (id ${l.progId}, tag ${l.tag}) → ${l.target}`);
      console.log(`enrolled pods: ${s.enrolledCgroups}; captured addresses: ${Object.keys(s.podAddrs).join(', ') || 'none'}`);
      if (s.counters) for (const [k, v] of Object.entries(s.counters)) if (v > 0n) console.log(`  ${k.padEnd(28)} ${v}`);
      return;
    }
    case 'cleanup': {
      const removed = cleanupDatapath(pinDir);
      console.log(removed.length ? `removed ${removed.length} pins under ${pinDir}: ${removed.join(', ')}` : `nothing pinned under ${pinDir}`);
      return;
    }
    default:
      throw new AmbitError('AMBIT_E_CONFIG', `unknown datapath command ${JSON.stringify(verb ?? '')}`, USAGE);
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'node': return serve('node', rest);
    case 'sidecar': return serve('sidecar', rest);
    case 'control-plane': return controlPlane(rest);
    case 'worker': return runWorker(); // started by `ambit node`, not by hand
    case 'ca': return ca(rest);
    case 'datapath': return datapath(rest);
    case undefined: case '-h': case '--help': console.log(USAGE); return;
    default: throw new AmbitError('AMBIT_E_CONFIG', `unknown command ${JSON.stringify(cmd)}`, USAGE);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof AmbitError) {
    console.error(`ambit: ${err.code}: ${err.message}`);
    process.exit(2);
  }
  console.error(err);
  process.exit(1);
});
