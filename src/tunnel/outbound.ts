// The source side, per enrolled pod: a connection accepted on the pod's
// :15001 came from that pod (the listener says so); the datapath says where
// it was going. Mesh destinations get an HBONE stream with the pod's own
// identity; plain workloads and unknown addresses a direct TCP connection.
import type net from 'node:net';
import type { DatapathMaps } from '../datapath/maps';
import type { Logger } from '../observability/log';
import { accessLog } from '../observability/access-log';
import { tcpLabels, type Metrics } from '../observability/metrics';
import type { MeshStore } from '../state/store';
import { copyBidirectional } from './copy';
import { baggageOf, connectHeaders, newTraceparent } from './headers';
import { HBONE_PORT, type HbonePool } from './pool';
import { resolveOutbound } from './route';
import type { ServedPod } from './served-pod';

export interface OutboundDeps {
  maps: DatapathMaps;
  store: MeshStore;
  pool: HbonePool;
  /** Plain mode: every destination is dialed directly, without HBONE. */
  plainOnly?: boolean;
  metrics: Metrics;
  log: Logger;
}

export function attachOutbound(pod: ServedPod, deps: OutboundDeps): void {
  const log = deps.log.child({ pod: pod.workload.uid });
  const baggage = baggageOf(pod.workload);
  pod.outbound.on('connection', (client: net.Socket) => {
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
    void handle(pod, baggage, client, orig.ip, orig.port, srcPort, deps, log);
  });
}

async function handle(pod: ServedPod, baggage: string, client: net.Socket, ip: string, port: number, srcPort: number, deps: OutboundDeps, log: Logger): Promise<void> {
  const src = pod.workload;
  const srcIdentity = pod.identity;
  const route = deps.plainOnly ? { kind: 'plain' as const, ip, port } : resolveOutbound(deps.store, ip, port);
  const { traceparent, connId } = newTraceparent();
  const entry: Record<string, unknown> = {
    conn_id: connId, direction: 'outbound', 'src.addr': `${src.addresses[0]}:${srcPort}`, 'src.workload': src.name,
    'src.namespace': src.namespace, 'src.identity': srcIdentity, 'dst.addr': `${ip}:${port}`,
  };
  const finish = accessLog(log, entry);

  if (route.kind === 'refuse') {
    deps.metrics.failure('outbound', route.reason);
    client.destroy();
    return finish({ 'dst.service': route.service.hostname, error: route.reason });
  }
  if (route.service) entry['dst.service'] = route.service.hostname;
  if (route.workload) Object.assign(entry, { 'dst.workload': route.workload.name, 'dst.namespace': route.workload.namespace });
  const labels = tcpLabels({
    reporter: 'source', src, srcPrincipal: srcIdentity, dst: route.workload, service: route.service?.hostname,
    dstPrincipal: route.kind === 'hbone' ? route.identities[0] : undefined, mtls: route.kind === 'hbone',
  });

  if (route.kind === 'plain') {
    const closed = deps.metrics.open(labels);
    const r = await copyBidirectional(client, pod.netns.connect(route.ip, route.port));
    closed({ fromSource: r.sent, toSource: r.received });
    return finish({ 'dst.hbone_addr': null, bytes_sent: r.sent, bytes_recv: r.received, error: r.error?.message });
  }

  entry['dst.hbone_addr'] = `${route.ip}:${HBONE_PORT}`;
  entry['dst.identity'] = route.identities[0];
  // A client that gives up while the stream is being set up must not leak it.
  let gone = false;
  const onEarlyClose = (): void => { gone = true; };
  client.once('close', onEarlyClose);
  client.on('error', () => undefined);
  try {
    const stream = await deps.pool.connect(
      { srcIdentity, srcIp: src.addresses[0], dial: (dstIp, dstPort, o) => pod.netns.connect(dstIp, dstPort, o), dstIp: route.ip, identities: route.identities },
      connectHeaders({ authority: `${route.ip}:${route.port}`, traceparent, baggage, clientAddr: `${src.addresses[0]}:${srcPort}`, service: route.service }),
    );
    client.off('close', onEarlyClose);
    if (gone) {
      stream.close();
      deps.metrics.failure('outbound', 'client_closed');
      return finish({ error: 'client_closed' });
    }
    const closed = deps.metrics.open(labels);
    const r = await copyBidirectional(client, stream);
    closed({ fromSource: r.sent, toSource: r.received });
    finish({ bytes_sent: r.sent, bytes_recv: r.received, error: r.error?.message });
  } catch (err) {
    client.destroy();
    const code = (err as NodeJS.ErrnoException).code ?? 'hbone_connect';
    deps.metrics.failure('outbound', code);
    finish({ error: code, detail: (err as Error).message });
  }
}
