// `ambit waypoint`: the composition root of one waypoint (Istio's ambient L7
// proxy for the services and workloads that opt in). It runs as the
// waypoint Gateway's service account (Istio names that account after the
// Gateway), takes its certificate from the built-in CA, serves HBONE on
// :15008 in its own network namespace (a waypoint pod is never captured),
// and re-reads the standalone file: its services and workloads, and its
// `routes` (HTTPRoute, GRPCRoute, targeted AuthorizationPolicy). A change
// that does not validate is reported and the last good one keeps serving.
import net from 'node:net';
import os from 'node:os';
import { BuiltinCa } from '../identity/builtin-ca';
import { CertificateManager } from '../identity/cert-manager';
import { workloadIdentity } from '../identity/spiffe';
import { type AdminPorts, startAdmin } from '../observability/admin';
import { installLastResort } from '../observability/last-resort';
import { createLogger } from '../observability/log';
import { RateLimitedLog } from '../observability/rate-limited';
import { loadConfigFile, parseConfig, type StandaloneConfig } from '../sources/config';
import { watchParsedFile } from '../sources/file-source';
import { MeshStore } from '../state/store';
import { connectHeaders, newTraceparent } from '../tunnel/headers';
import { type TunnelLimits, tunnelLimits } from '../tunnel/limits';
import { HbonePool } from '../tunnel/pool';
import { L7Authorizer } from '../waypoint/authz';
import { RouteTable } from '../waypoint/match';
import { WaypointMetrics } from '../waypoint/metrics';
import { DEFAULT_WAYPOINT_LIMITS, type EndpointTarget, L7Proxy, type WaypointLimits, type WaypointView } from '../waypoint/proxy';
import { DEFAULT_SERVER_LIMITS, WaypointServer } from '../waypoint/server';
import { waypointKey } from '../waypoint/types';

export interface WaypointSettings {
  configFile: string;
  /** The waypoint Gateway's name: also its service account. */
  name: string;
  namespace: string;
  listen: { host: string; port: number };
  adminPorts: AdminPorts;
  drainMs: number;
  limits: Partial<TunnelLimits>;
  waypointLimits?: Partial<WaypointLimits>;
}

function viewOf(cfg: StandaloneConfig): WaypointView {
  return { store: new MeshStore(cfg), routes: new RouteTable(cfg.routes.routes), authz: new L7Authorizer(cfg.routes.policies) };
}

export async function runWaypoint(s: WaypointSettings): Promise<{ port: number; close: () => void }> {
  const log = createLogger().child({ waypoint: `${s.namespace}/${s.name}` });
  const key = waypointKey(s);
  let cfg = loadConfigFile(s.configFile);
  const declared = (c: StandaloneConfig): boolean => c.routes.waypoints.some((w) => waypointKey(w) === key);
  if (!declared(cfg))
    log.warn(
      { declared: cfg.routes.waypoints.map(waypointKey) },
      `no Gateway ${key} of class istio-waypoint in ${s.configFile}: only policies targeting its services apply`,
    );
  let view = viewOf(cfg);
  const identity = workloadIdentity(cfg.trustDomain, { namespace: s.namespace, serviceAccount: s.name });
  const limits = tunnelLimits(s.limits);
  const ca = await BuiltinCa.open(cfg.ca.dir);
  const certs = new CertificateManager(ca, { log });
  const cert = await certs.fetch(identity);
  const metrics = new WaypointMetrics();
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
  let ready = false;
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainSeconds: s.drainMs / 1000 }, 'draining: no new connections, open ones finish');
    unwatch();
    server.close();
    const deadline = Date.now() + s.drainMs;
    // Done once every client session has gone (GOAWAY lets open requests finish), or at the drain deadline.
    const poll = setInterval(() => {
      if (server.stats().sessions > 0 && Date.now() < deadline) return;
      clearInterval(poll);
      admin.close();
      pool.close();
      log.info('stopped');
      process.exit(0);
    }, 100);
  };
  const admin = await startAdmin(
    {
      metrics: () => metrics.text(),
      readiness: () => ({ pending: ready ? [] : ['HBONE listener'] }),
      configDump: () => ({
        waypoint: key,
        identity,
        certificate: { notAfter: certs.current(identity)?.notAfter },
        services: cfg.services.length,
        routes: cfg.routes.routes.map((r) => ({ service: r.service, port: r.port, rules: r.rules.length })),
        policies: cfg.routes.policies.map((p) => `${p.namespace}/${p.name}`),
        server: server.stats(),
        pool: pool.stats(),
      }),
      log,
      setLogLevel: (level) => {
        log.level = level;
      },
      quit: () => stop('quitquitquit'),
    },
    s.adminPorts,
  );
  const unwatch = watchParsedFile(
    s.configFile,
    parseConfig,
    (next) => {
      cfg = next;
      view = viewOf(next);
      if (next.warnings?.length) log.warn({ warnings: next.warnings }, 'configuration accepted with warnings');
      log.info({ routes: next.routes.routes.length, policies: next.routes.policies.length }, 'configuration applied');
    },
    (err) => log.error({ code: err.code, err: err.message }, 'configuration change rejected; the last good one keeps serving'),
  );
  const port = await server.listen(s.listen.host, s.listen.port);
  ready = true;
  installLastResort({ log, role: 'waypoint' });
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  log.info({ identity, listen: `${s.listen.host}:${port}`, routes: cfg.routes.routes.length }, 'waypoint ready');
  return { port, close: () => stop('close') };
}

function firstIpv4(): string | undefined {
  return Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
}
