// The plain relay: what the tunnel does without encryption. Outbound, it
// looks up the original destination the datapath recorded and dials it;
// inbound, it delivers to the app from inside the pod, at the address the
// client dialed (sk_lookup kept it as the accepted socket's local address).
// HBONE replaces the outbound leg; the seams stay.
import net from 'node:net';
import type { EnrolledPod } from '../agent/enrolment';
import { connectFromNetns } from '../agent/netns';
import { PORT_INBOUND_HBONE, PORT_INBOUND_PLAIN, PORT_OUTBOUND } from '../agent/enrolment';
import type { DatapathMaps } from '../datapath/maps';
import type { Logger } from '../observability/log';
import { copyBidirectional } from './copy';

const TUNNEL_PORTS = new Set([PORT_OUTBOUND, PORT_INBOUND_PLAIN, PORT_INBOUND_HBONE]);

export interface RelayDeps {
  maps: DatapathMaps;
  log: Logger;
  /** Opens the upstream leg of an outbound connection (the node's netns by default). */
  dial?: (ip: string, port: number) => net.Socket;
}

export function attachRelay(pod: EnrolledPod, deps: RelayDeps): void {
  const log = deps.log.child({ pod: pod.workload.uid });
  const dial = deps.dial ?? ((ip, port) => net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true }));

  pod.outbound.on('connection', (client) => {
    client.setNoDelay(true);
    const orig = deps.maps.takeOrigDst(pod.podId, client.remoteAddress ?? '', client.remotePort ?? 0);
    if (!orig) {
      // Not recorded by connect4 (e.g. dialed 127.0.0.1:15001 directly): refuse.
      log.warn({ src: `${client.remoteAddress}:${client.remotePort}`, reason: 'no_original_destination' }, 'outbound connection refused');
      client.destroy();
      return;
    }
    void relay(log, 'outbound', client, dial(orig.ip, orig.port), `${orig.ip}:${orig.port}`);
  });

  pod.inboundPlain.on('connection', (client) => {
    client.setNoDelay(true);
    const ip = client.localAddress ?? '';
    const port = client.localPort ?? 0;
    if (TUNNEL_PORTS.has(port)) {
      log.warn({ dst: `${ip}:${port}`, reason: 'tunnel_port' }, 'inbound connection to a tunnel port refused');
      client.destroy();
      return;
    }
    void relay(log, 'inbound', client, connectFromNetns(pod.netns, ip, port), `${ip}:${port}`);
  });

  // HBONE (mutual TLS + HTTP/2 CONNECT) terminates here once the tunnel has it;
  // the relay has no identity to offer, so it refuses rather than pretend.
  pod.inboundHbone.on('connection', (client) => client.destroy());
}

async function relay(log: Logger, direction: string, client: net.Socket, upstream: net.Socket, dst: string): Promise<void> {
  const started = process.hrtime.bigint();
  const src = `${client.remoteAddress}:${client.remotePort}`;
  const r = await copyBidirectional(client, upstream);
  log.debug({ direction, src, dst, bytes_sent: r.sent, bytes_recv: r.received, duration_ms: Number(process.hrtime.bigint() - started) / 1e6, error: r.error?.message }, 'connection complete');
}
