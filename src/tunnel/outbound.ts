// The source side, per enrolled pod: a connection accepted on the pod's
// :15001 came from that pod (the listener says so); the datapath says where
// it was going. Mesh destinations get an HBONE stream with the pod's own
// identity; plain workloads and unknown addresses a direct TCP connection.
// A connection that cannot be carried (no certificate, a stalled or failing
// peer, an upstream that does not accept) is closed with a reason: in the
// access log, in ambit_connection_failures_total and as a rate-limited
// warning; it never throws past this file.
import type net from 'node:net';
import type { DatapathMaps } from '../datapath/maps';
import { PORT_INBOUND_HBONE } from '../datapath/ports';
import { accessLog } from '../observability/access-log';
import type { Logger } from '../observability/log';
import { type Metrics, tcpLabels } from '../observability/metrics';
import { RateLimitedLog } from '../observability/rate-limited';
import type { MeshStore } from '../state/store';
import { type GatewayAddress, gatewayAddressText } from '../state/types';
import { ClientFailure, failureCode } from './client-errors';
import type { ConnectionRegistry, ListedConnection } from './connections';
import { copyBidirectional } from './copy';
import { baggageOf, connectHeaders, newTraceparent } from './headers';
import { type TunnelLimits, tunnelLimits } from './limits';
import type { HbonePool } from './pool';
import { resolveOutbound } from './route';
import type { ServedPod } from './served-pod';

export interface OutboundDeps {
  maps: DatapathMaps;
  store: MeshStore;
  pool: HbonePool;
  /** Plain mode: every destination is dialed directly, without HBONE. */
  plainOnly?: boolean;
  metrics: Metrics;
  /** Where a connection is listed while it is open. */
  connections: ConnectionRegistry;
  /** upstreamDialMs bounds plain upstream dials; DEFAULT_LIMITS when not given. */
  limits?: Partial<TunnelLimits>;
  log: Logger;
}

interface Ctx extends OutboundDeps {
  upstreamDialMs: number;
  warn: RateLimitedLog;
}

export function attachOutbound(pod: ServedPod, deps: OutboundDeps): void {
  const log = deps.log.child({ pod: pod.workload.uid });
  const baggage = baggageOf(pod.workload);
  const ctx: Ctx = { ...deps, upstreamDialMs: tunnelLimits(deps.limits).upstreamDialMs, warn: new RateLimitedLog(log) };
  pod.outbound.on('connection', (client: net.Socket) => {
    // Handled from the first moment: a client may reset before we get to it.
    client.on('error', () => undefined);
    client.setNoDelay(true);
    const srcPort = client.remotePort ?? 0;
    // A client that reset before we got to it has no address any more: nothing to serve.
    if (!client.remoteAddress) return void client.destroy();
    const orig = deps.maps.origDst(pod.podId, client.remoteAddress, srcPort);
    if (!orig) {
      // Not steered by connect4 (e.g. 127.0.0.1:15001 dialed directly): nowhere to go.
      log.warn({ src: `${client.remoteAddress}:${srcPort}`, reason: 'no_original_destination' }, 'outbound connection refused');
      deps.metrics.failure('outbound', 'no_original_destination');
      client.destroy();
      return;
    }
    handle(pod, baggage, client, orig.ip, orig.port, srcPort, ctx, log).catch((err: Error) => {
      // A bug in this connection's path: it ends, the others carry on.
      client.destroy();
      deps.metrics.failure('outbound', 'internal');
      log.error({ err: err.stack ?? err.message }, 'outbound connection failed unexpectedly');
    });
  });
}

const waypointText = (g: GatewayAddress | undefined): string | undefined => (g ? gatewayAddressText(g) : undefined);

/** A plain upstream leg from inside the source pod; errors (including a dial that outlasts upstreamDialMs) surface on the socket. */
function dialUpstream(pod: ServedPod, ip: string, port: number, dialMs: number): net.Socket | ClientFailure {
  let up: net.Socket;
  try {
    up = pod.netns.connect(ip, port);
  } catch (err) {
    return new ClientFailure('AMBIT_E_DIAL', `cannot dial ${ip}:${port} from the pod: ${(err as Error).message}`, { cause: err });
  }
  up.on('error', () => undefined); // reported by the copy, which takes the socket over below
  const timer = setTimeout(
    () =>
      up.destroy(
        new ClientFailure('AMBIT_E_UPSTREAM_DIAL_TIMEOUT', `${ip}:${port} did not accept the connection in ${dialMs} ms (upstreamDialMs)`),
      ),
    dialMs,
  );
  timer.unref();
  up.once('connect', () => clearTimeout(timer));
  up.once('close', () => clearTimeout(timer));
  return up;
}

async function handle(
  pod: ServedPod,
  baggage: string,
  client: net.Socket,
  ip: string,
  port: number,
  srcPort: number,
  deps: Ctx,
  log: Logger,
): Promise<void> {
  const src = pod.workload;
  // The pod's own address, not the client's 127.0.0.1: every leg is dialed from it.
  const srcIp = src.addresses[0] ?? '';
  const srcIdentity = pod.identity;
  const route = deps.plainOnly ? { kind: 'plain' as const, ip, port } : resolveOutbound(deps.store, ip, port, Math.random, src);
  const { traceparent, connId } = newTraceparent();
  const entry: Record<string, unknown> = {
    conn_id: connId,
    direction: 'outbound',
    'src.addr': `${srcIp}:${srcPort}`,
    'src.workload': src.name,
    'src.namespace': src.namespace,
    'src.identity': srcIdentity,
    'dst.addr': `${ip}:${port}`,
  };
  const finish = accessLog(log, entry);

  if (route.kind === 'refuse') {
    deps.metrics.failure('outbound', route.reason);
    client.destroy();
    return finish({
      'dst.service': route.service?.hostname,
      'dst.workload': route.workload?.name,
      'dst.waypoint': waypointText(route.reason === 'no_waypoint' ? (route.workload ?? route.service)?.waypoint : undefined),
      error: route.reason,
    });
  }
  if (route.service) entry['dst.service'] = route.service.hostname;
  if (route.workload) Object.assign(entry, { 'dst.workload': route.workload.name, 'dst.namespace': route.workload.namespace });
  const labels = tcpLabels({
    reporter: 'source',
    src,
    srcPrincipal: srcIdentity,
    dst: route.workload,
    service: route.service?.hostname,
    dstPrincipal: route.kind === 'hbone' ? route.identities[0] : undefined,
    mtls: route.kind === 'hbone',
  });
  const listed = (protocol: ListedConnection['protocol'], peer: string): ListedConnection => ({
    podUid: src.uid,
    pod: src.name,
    namespace: src.namespace,
    direction: 'outbound',
    source: `${srcIp}:${srcPort}`,
    sourceIdentity: srcIdentity,
    destination: `${ip}:${port}`,
    destinationService: route.service?.hostname,
    destinationIdentity: route.kind === 'hbone' ? route.identities[0] : undefined,
    protocol,
    peer,
    connId,
  });

  if (route.kind === 'plain') {
    const up = dialUpstream(pod, route.ip, route.port, deps.upstreamDialMs);
    if (up instanceof ClientFailure) {
      client.destroy();
      deps.metrics.failure('outbound', up.code);
      deps.warn.warn(up.code, { dst: `${route.ip}:${route.port}`, err: up.message }, 'outbound connection failed');
      return finish({ 'dst.hbone_addr': null, error: up.code, detail: up.message });
    }
    const closed = deps.metrics.open(labels);
    const unlist = deps.connections.add(listed('plaintext', `${route.ip}:${route.port}`), client, 'source');
    const r = await copyBidirectional(client, up).finally(unlist);
    closed({ fromSource: r.sent, toSource: r.received });
    if (r.error instanceof ClientFailure) {
      deps.metrics.failure('outbound', r.error.code);
      deps.warn.warn(r.error.code, { dst: `${route.ip}:${route.port}`, err: r.error.message }, 'outbound connection failed');
    }
    return finish({ 'dst.hbone_addr': null, bytes_sent: r.sent, bytes_recv: r.received, error: r.error?.message });
  }

  // Through a waypoint the stream goes to one of its pods; the authority stays the original destination.
  const hboneIp = route.waypoint?.ip ?? route.ip;
  entry['dst.hbone_addr'] = `${hboneIp}:${PORT_INBOUND_HBONE}`;
  entry['dst.identity'] = route.identities[0];
  if (route.waypoint) entry['dst.waypoint'] = route.waypoint.address;
  // A client that gives up while the stream is being set up must not leak it.
  let gone = false;
  const onEarlyClose = (): void => {
    gone = true;
  };
  client.once('close', onEarlyClose);
  try {
    const stream = await deps.pool.connect(
      {
        srcIdentity,
        srcIp,
        dial: (dstIp, dstPort, o) => pod.netns.connect(dstIp, dstPort, o),
        dstIp: hboneIp,
        identities: route.identities,
      },
      connectHeaders({
        authority: `${route.ip}:${route.port}`,
        traceparent,
        baggage,
        clientAddr: `${srcIp}:${srcPort}`,
        service: route.service,
      }),
    );
    client.off('close', onEarlyClose);
    if (gone) {
      stream.close();
      deps.metrics.failure('outbound', 'client_closed');
      return finish({ error: 'client_closed' });
    }
    const closed = deps.metrics.open(labels);
    const unlist = deps.connections.add(listed('HBONE', `${hboneIp}:${PORT_INBOUND_HBONE}`), client, 'source');
    const r = await copyBidirectional(client, stream).finally(unlist);
    closed({ fromSource: r.sent, toSource: r.received });
    finish({ bytes_sent: r.sent, bytes_recv: r.received, error: r.error?.message });
  } catch (err) {
    client.off('close', onEarlyClose);
    client.destroy();
    const code = failureCode(err, 'hbone_connect');
    deps.metrics.failure('outbound', code);
    deps.warn.warn(
      code,
      { dst: `${route.ip}:${route.port}`, identity: srcIdentity, err: (err as Error).message },
      'outbound connection failed',
    );
    finish({ error: code, detail: (err as Error).message });
  }
}
