// `ambit waypoint`: the composition root of one waypoint (Istio's ambient L7
// proxy for the services and workloads that opt in). It runs as the
// waypoint Gateway's service account (Istio names that account after the
// Gateway) and serves HBONE on :15008 in its own network namespace (a
// waypoint pod is never captured). Its state comes from one of two places:
//
// - the standalone file (--config): its services and workloads and its
//   `routes` (HTTPRoute, GRPCRoute, targeted AuthorizationPolicy), re-read
//   on change; the certificate from the built-in CA's directory;
// - `ambit control-plane` (--xds): the Address resources and this
//   waypoint's own WaypointConfig over delta xDS, the certificate from the
//   control plane's CA service, both with the waypoint's bearer token. It
//   reports ready only after the first full sync.
//
// Either way a change that does not validate (a file that does not parse,
// a resource NACKed) is logged with the reason and the last good
// configuration keeps serving.
import net from 'node:net';
import { AmbitError } from '../errors';
import { BuiltinCa } from '../identity/builtin-ca';
import type { CertificateAuthority } from '../identity/ca';
import { IstioCaClient } from '../identity/ca-client';
import { CertificateManager } from '../identity/cert-manager';
import { workloadIdentity } from '../identity/spiffe';
import { type AdminPorts, startAdmin } from '../observability/admin';
import { installLastResort } from '../observability/last-resort';
import { createLogger, type Logger } from '../observability/log';
import { RateLimitedLog } from '../observability/rate-limited';
import { loadConfigFile, parseConfig, type StandaloneConfig } from '../sources/config';
import { watchParsedFile } from '../sources/file-source';
import { WAYPOINT_TYPES, waypointNodeMessage, XdsClient, type XdsState } from '../sources/xds-client';
import type { WaypointL7 } from '../sources/xds-waypoint';
import { MeshStore } from '../state/store';
import type { MeshConfig } from '../state/types';
import { connectHeaders, newTraceparent } from '../tunnel/headers';
import { type TunnelLimits, tunnelLimits } from '../tunnel/limits';
import { HbonePool } from '../tunnel/pool';
import { L7Authorizer } from '../waypoint/authz';
import { DestinationTable } from '../waypoint/destination';
import { RouteTable } from '../waypoint/match';
import { WaypointMetrics } from '../waypoint/metrics';
import { DEFAULT_WAYPOINT_LIMITS, type EndpointTarget, L7Proxy, type WaypointLimits, type WaypointView } from '../waypoint/proxy';
import { RateLimitTable } from '../waypoint/rate-limit';
import { DEFAULT_SERVER_LIMITS, WaypointServer } from '../waypoint/server';
import { waypointKey } from '../waypoint/types';
import { firstIpv4, instanceIp, readXdsRoot } from './xds-dial';

/** Where a waypoint on xDS finds its control plane (flags named as the node agent's). */
export interface WaypointXdsSettings {
  /** host:port of `ambit control-plane`'s xDS. */
  address: string;
  /** PEM root the control plane's TLS certificate chains to. */
  rootFile: string;
  /** The waypoint's bearer token, re-read per connection and per certificate. */
  tokenFile?: string;
  /** The name the control plane's certificate carries, when dialing by IP. */
  serverName?: string;
  /** host:port of the CA service; the xDS address when not set. */
  caAddress?: string;
  trustDomain: string;
}

export interface WaypointSettings {
  /** Exactly one of configFile (the standalone YAML) and xds (a control plane). */
  configFile?: string;
  xds?: WaypointXdsSettings;
  /** The waypoint Gateway's name: also its service account. */
  name: string;
  namespace: string;
  listen: { host: string; port: number };
  adminPorts: AdminPorts;
  drainMs: number;
  limits: Partial<TunnelLimits>;
  waypointLimits?: Partial<WaypointLimits>;
}

/** What the waypoint serves: the mesh it routes into and its own routes and policies. */
interface Served {
  mesh: MeshConfig;
  l7: WaypointL7;
}

function viewOf(c: Served): WaypointView {
  return {
    store: new MeshStore(c.mesh),
    routes: new RouteTable(c.l7.routes),
    authz: new L7Authorizer(c.l7.policies),
    destinations: new DestinationTable(c.l7.destinations),
    rateLimits: new RateLimitTable(c.l7.rateLimits),
  };
}

/**
 * Where the configuration comes from: the first one, then each valid change
 * (onValid) or the reason one was refused (onInvalid); stop() ends it.
 */
interface WaypointSource {
  trustDomain: string;
  /** What readiness reports pending until the first configuration is in. */
  waitingFor: string;
  ca: CertificateAuthority;
  initial(): Promise<Served>;
  watch(onValid: (c: Served) => void, onInvalid: (code: string, why: string) => void): () => void;
  dump(): object;
}

async function fileSource(file: string, key: string, log: Logger): Promise<WaypointSource> {
  const cfg = loadConfigFile(file);
  const declared = (c: StandaloneConfig): boolean => c.routes.waypoints.some((w) => waypointKey(w) === key);
  if (!declared(cfg))
    log.warn(
      { declared: cfg.routes.waypoints.map(waypointKey) },
      `no Gateway ${key} of class istio-waypoint in ${file}: only policies targeting its services apply`,
    );
  const served = (c: StandaloneConfig): Served => ({
    mesh: c,
    l7: {
      routes: c.routes.routes,
      policies: c.routes.policies,
      destinations: c.routes.destinations,
      rateLimits: c.routes.rateLimits ?? [],
    },
  });
  return {
    trustDomain: cfg.trustDomain,
    ca: await BuiltinCa.open(cfg.ca.dir),
    initial: async () => served(cfg),
    waitingFor: 'configuration file',
    dump: () => ({ source: file }),
    watch: (onValid, onInvalid) =>
      watchParsedFile(
        file,
        parseConfig,
        (next) => {
          if (next.warnings?.length) log.warn({ warnings: next.warnings }, 'configuration accepted with warnings');
          onValid(served(next));
        },
        (err) => onInvalid(err.code, err.message),
      ),
  };
}

/** The mesh a waypoint routes into, from the Address resources. */
function meshOf(state: XdsState, trustDomain: string): MeshConfig {
  return {
    trustDomain,
    ca: { dir: '' }, // certificates come from the control plane's CA
    nodes: [],
    workloads: state.workloads,
    services: state.services,
    policies: [],
    rootNamespace: '',
    controlPlane: { tokens: [] },
  };
}

function xdsSource(x: WaypointXdsSettings, s: WaypointSettings, key: string, log: Logger): WaypointSource {
  const rootsPem = readXdsRoot(x.rootFile);
  const ip = instanceIp();
  const node = waypointNodeMessage({ namespace: s.namespace, name: s.name, podName: process.env.POD_NAME ?? s.name, ip });
  const { address, serverName, tokenFile, trustDomain } = x;
  const client = new XdsClient({ address, rootsPem, serverName, tokenFile, node, trustDomain, types: WAYPOINT_TYPES, log });
  const ca = new IstioCaClient({ address: x.caAddress ?? address, rootsPem, serverName, tokenFile });
  let missing = false;
  const served = (): Served => {
    const own = client.waypointConfigs().get(key);
    // Said once per absence: the control plane names no such waypoint (no Gateway, no route or policy naming it).
    if (!own && !missing)
      log.warn({ waypoint: key }, `the control plane has no configuration for waypoint ${key}: is its Gateway declared?`);
    missing = !own;
    return { mesh: meshOf(client.state(), trustDomain), l7: own ?? { routes: [], policies: [], destinations: [] } };
  };
  return {
    trustDomain,
    ca,
    waitingFor: 'xDS sync',
    dump: () => ({ source: address, connected: client.connected, synced: client.isSynced, ...client.stats }),
    initial: async () => {
      client.start();
      // Not ready until synced; no deadline: a waypoint without its routes must not serve, and the control plane may come later.
      for (;;) {
        try {
          await client.whenSynced(15_000);
          return served();
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'still waiting for the first xDS sync');
        }
      }
    },
    watch: (onValid, onInvalid) => {
      const changed = (): void => onValid(served());
      const rejected = (why: string): void => onInvalid('AMBIT_E_XDS', why);
      client.on('changed', changed);
      client.on('rejected', rejected);
      return () => {
        client.off('changed', changed);
        client.off('rejected', rejected);
        client.stop();
      };
    },
  };
}

export async function runWaypoint(s: WaypointSettings): Promise<{ port: number; close: () => void }> {
  const log = createLogger().child({ waypoint: `${s.namespace}/${s.name}` });
  const key = waypointKey(s);
  if ((s.configFile === undefined) === (s.xds === undefined))
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      'a waypoint takes its configuration from one place',
      'give either --config FILE or --xds HOST:PORT',
    );
  const source = s.xds ? xdsSource(s.xds, s, key, log) : await fileSource(s.configFile ?? '', key, log);
  const identity = workloadIdentity(source.trustDomain, { namespace: s.namespace, serviceAccount: s.name });
  const limits = tunnelLimits(s.limits);
  const certs = new CertificateManager(source.ca, { log });
  const metrics = new WaypointMetrics();
  // Set once the first configuration is in and the listener is built; until then readiness says what is awaited.
  let current: Served | undefined;
  let built: { server: WaypointServer; pool: HbonePool; proxy: L7Proxy; unwatch: () => void } | undefined;
  let ready = false;
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainSeconds: s.drainMs / 1000 }, 'draining: no new connections, open ones finish');
    built?.unwatch();
    built?.server.close();
    const deadline = Date.now() + s.drainMs;
    // Done once every client session has gone (GOAWAY lets open requests finish), or at the drain deadline.
    const poll = setInterval(() => {
      if ((built?.server.stats().sessions ?? 0) > 0 && Date.now() < deadline) return;
      clearInterval(poll);
      admin.close();
      built?.pool.close();
      log.info('stopped');
      process.exit(0);
    }, 100);
  };
  const admin = await startAdmin(
    {
      metrics: () => metrics.text(),
      readiness: () => ({ pending: ready ? [] : [current ? 'HBONE listener' : source.waitingFor] }),
      configDump: () => ({
        waypoint: key,
        identity,
        certificate: { notAfter: certs.current(identity)?.notAfter },
        config: source.dump(),
        services: current?.mesh.services.length ?? 0,
        routes: (current?.l7.routes ?? []).map((r) => ({ service: r.service, port: r.port, rules: r.rules.length })),
        policies: (current?.l7.policies ?? []).map((p) => `${p.namespace}/${p.name}`),
        destinationRules: (current?.l7.destinations ?? []).map((p) => `${p.namespace}/${p.name} → ${p.service}`),
        destinations: built?.proxy.destinationStats(),
        rateLimits: (current?.l7.rateLimits ?? []).map((p) => `${p.namespace}/${p.name} → ${p.service}`),
        rateLimitBuckets: built?.proxy.limiter.size,
        server: built?.server.stats(),
        pool: built?.pool.stats(),
      }),
      log,
      setLogLevel: (level) => {
        log.level = level;
      },
      quit: () => stop('quitquitquit'),
    },
    s.adminPorts,
  );
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Nothing is served before the first configuration (on xDS: the first full sync).
  const first = await source.initial();
  current = first;
  let view = viewOf(first);
  const cert = await certs.fetch(identity);
  const pool = new HbonePool({ certs, log, limits });
  const ownIp = firstIpv4() ?? '0.0.0.0';
  const baggage = `k8s.namespace.name=${s.namespace},k8s.pod.name=${s.name},service.name=${s.name},service.version=latest`;
  const open = (t: EndpointTarget) => {
    const { traceparent } = newTraceparent();
    return pool.connect(
      {
        srcIdentity: identity,
        srcIp: ownIp,
        // Not captured: the waypoint dials from its own netns, as the endpoints' nodes expect a peer to.
        dial: (ip, port, o) => net.connect({ host: ip, port, allowHalfOpen: o?.allowHalfOpen ?? false }),
        dstIp: t.ip,
        identities: [t.identity],
      },
      connectHeaders({ authority: `${t.ip}:${t.port}`, traceparent, baggage, clientAddr: `${ownIp}:0`, service: t.service }),
    );
  };
  const proxy = new L7Proxy({
    view: () => view,
    waypoint: key,
    open,
    metrics,
    log,
    limits: { ...DEFAULT_WAYPOINT_LIMITS, ...s.waypointLimits },
  });
  const server = new WaypointServer({
    identity,
    cert,
    certs,
    view: () => view,
    proxy,
    open,
    limits,
    serverLimits: DEFAULT_SERVER_LIMITS,
    metrics,
    log,
    warn: new RateLimitedLog(log),
  });
  const unwatch = source.watch(
    (next) => {
      try {
        const nextView = viewOf(next);
        [current, view] = [next, nextView];
      } catch (err) {
        // What was checked still failed to build: the last good one keeps serving rather than the waypoint exiting.
        log.error(
          { err: (err as Error).stack ?? String(err) },
          'configuration change could not be applied; the last good one keeps serving',
        );
        return;
      }
      log.info(
        { routes: next.l7.routes.length, policies: next.l7.policies.length, services: next.mesh.services.length },
        'configuration applied',
      );
    },
    (code, why) => log.error({ code, err: why }, 'configuration change rejected; the last good one keeps serving'),
  );
  built = { server, pool, proxy, unwatch };
  const port = await server.listen(s.listen.host, s.listen.port);
  ready = true;
  installLastResort({ log, role: 'waypoint' });
  log.info({ identity, listen: `${s.listen.host}:${port}`, routes: first.l7.routes.length }, 'waypoint ready');
  return { port, close: () => stop('close') };
}
