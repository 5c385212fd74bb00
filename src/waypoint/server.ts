// The waypoint's HBONE listener (:15008): the node tunnel's server pieces —
// admission caps before TLS, the HBONE TLS settings, the peer's SPIFFE
// identity checked once per connection, idle and keepalive bounds on
// sessions — in front of an L7 proxy instead of a pod's app. The CONNECT
// authority is the original destination: a service VIP:port whose port
// speaks HTTP (Istio's rule: appProtocol, else the port name's prefix) is
// served as HTTP/1.1 or HTTP/2 (told apart by the h2 preface), and so is a
// pod IP:port when the service ports targeting it say HTTP; anything else
// is forwarded as bytes to an endpoint, over HBONE as well.
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import { peerIdentity, serverTlsOptions } from '../identity/tls';
import { accessLog } from '../observability/access-log';
import type { Logger } from '../observability/log';
import type { RateLimitedLog } from '../observability/rate-limited';
import type { MeshStore } from '../state/store';
import { type MeshConfig, type Service, type ServicePort, serviceKey, type Workload } from '../state/types';
import { Admission } from '../tunnel/admission';
import { copyBidirectional } from '../tunnel/copy';
import { parseAuthority, sourceFromBaggage } from '../tunnel/headers';
import type { TunnelLimits } from '../tunnel/limits';
import { CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW } from '../tunnel/pool';
import { pickWeighted } from '../tunnel/route';
import { ServerSessions } from '../tunnel/server-sessions';
import { jsDuplex } from './js-duplex';
import type { WaypointMetrics } from './metrics';
import type { Downstream, EndpointTarget, L7Proxy, WaypointView } from './proxy';

const ignore = (): void => undefined;

/** appProtocol values Istio serves as HTTP, and the name prefixes it reads when there is none. */
const HTTP_APP_PROTOCOLS = new Set(['http', 'http2', 'grpc', 'grpc-web', 'h2c', 'kubernetes.io/h2c']);
const HTTP_NAME = /^(http|http2|grpc|grpc-web|h2c)(-|$)/;

/**
 * Whether the waypoint speaks HTTP on a service port: its appProtocol, else
 * its name's prefix (Istio's rule); a port that says neither is HTTP when
 * routes are attached to the service, since an HTTPRoute is a statement that
 * it is.
 */
export function speaksHttp(p: ServicePort, routed: boolean): boolean {
  if (p.appProtocol) return HTTP_APP_PROTOCOLS.has(p.appProtocol.toLowerCase());
  if (p.name) return HTTP_NAME.test(p.name.toLowerCase()) || routed;
  return routed;
}

export interface ServerLimits {
  /** An HTTP connection (one CONNECT stream) with nothing happening for this long is closed. */
  httpIdleMs: number;
  /** HTTP/2 streams one client connection may have open at once. */
  maxHttp2Streams: number;
  /** Largest request head (HTTP/1.1) or header list (HTTP/2). */
  maxHeaderBytes: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = { httpIdleMs: 5 * 60_000, maxHttp2Streams: 100, maxHeaderBytes: 64 << 10 };

export interface WaypointServerDeps {
  identity: string;
  cert: WorkloadCert;
  certs: CertProvider;
  view: () => WaypointView;
  proxy: L7Proxy;
  open: (t: EndpointTarget) => Promise<Duplex>;
  limits: TunnelLimits;
  serverLimits: ServerLimits;
  metrics: WaypointMetrics;
  log: Logger;
  warn: RateLimitedLog;
}

export class WaypointServer {
  private readonly tlsServer: http2.Http2SecureServer;
  private readonly listener: net.Server;
  private readonly sessions: ServerSessions;
  private readonly admission: Admission;
  private readonly peers = new WeakMap<tls.TLSSocket, ReturnType<typeof peerIdentity>>();
  private readonly onCert: (id: string, c: WorkloadCert) => void;
  private closed = false;

  constructor(private readonly deps: WaypointServerDeps) {
    const { limits } = deps;
    this.admission = new Admission(limits);
    this.sessions = new ServerSessions(limits, (session, reason) => this.refused(reason, { peer: session.socket?.remoteAddress }));
    const server = http2.createSecureServer({
      ...serverTlsOptions(deps.cert),
      handshakeTimeout: limits.serverHandshakeMs,
      unknownProtocolTimeout: 1,
      settings: { initialWindowSize: STREAM_WINDOW, maxFrameSize: MAX_FRAME, maxConcurrentStreams: limits.serverMaxStreams },
    });
    this.tlsServer = server;
    this.onCert = (id, c) => {
      if (id === deps.identity) server.setSecureContext(serverTlsOptions(c));
    };
    deps.certs.on('updated', this.onCert);
    server.on('secureConnection', (s: tls.TLSSocket) => {
      this.admission.handshakeDone(s);
      const peer = this.peerOf(s);
      if ('error' in peer) {
        this.refused('peer_identity', { peer: s.remoteAddress, err: peer.error });
        s.destroy();
      }
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
      this.admission.handshakeDone(s);
      this.refused(err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'tls_handshake_timeout' : 'tls_handshake', {
        peer: s.remoteAddress,
        err: err.message,
      });
    });
    server.on('unknownProtocol', (s: tls.TLSSocket) => {
      this.refused('not_h2', { peer: s.remoteAddress });
      s.destroy();
    });
    server.on('sessionError', ignore);
    server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once('connect', () => {
        if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW);
      });
    });
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      stream.on('error', ignore);
      try {
        this.onStream(stream, headers);
      } catch (err) {
        this.refused('internal', { err: (err as Error).stack ?? String(err) });
        respond(stream, 503);
      }
    });
    this.listener = net.createServer({ noDelay: true }, (s) => {
      s.on('error', ignore);
      const refused = this.admission.admit(s);
      if (refused) {
        this.refused(refused, { peer: s.remoteAddress, ...this.admission.stats() });
        s.destroy();
        return;
      }
      s.setKeepAlive(true, 30_000);
      server.emit('connection', s);
    });
  }

  /** Listens on host:port; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(port, host, () => {
        this.listener.off('error', reject);
        resolve((this.listener.address() as net.AddressInfo).port);
      });
    });
  }

  /** GOAWAY to every client and no new connections; open streams finish. */
  close(): void {
    this.closed = true;
    this.deps.certs.off('updated', this.onCert);
    this.listener.close();
    this.tlsServer.close();
    this.sessions.close();
  }

  stats(): { sessions: number; pending: number; open: number } {
    return { sessions: this.sessions.size, ...this.admission.stats() };
  }

  private refused(reason: string, fields: Record<string, unknown>): void {
    this.deps.metrics.failure(reason);
    this.deps.warn.warn(reason, fields, 'waypoint HBONE connection or stream refused');
  }

  private peerOf(s: tls.TLSSocket): ReturnType<typeof peerIdentity> {
    let peer = this.peers.get(s);
    if (!peer) {
      peer = peerIdentity(s, this.deps.view().store.trustDomain);
      this.peers.set(s, peer);
    }
    return peer;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const tlsSocket = stream.session?.socket as tls.TLSSocket | undefined;
    const srcIp = tlsSocket?.remoteAddress ?? '';
    const refuse = (status: number, reason: string, extra: Record<string, unknown> = {}): void => {
      this.refused(reason, { src: srcIp, authority: headers[':authority'], status, ...extra });
      respond(stream, status);
    };
    if (this.closed) return void refuse(503, 'draining');
    if (headers[':method'] !== 'CONNECT') return void refuse(400, 'not_connect');
    const dst = parseAuthority(headers[':authority']);
    if (!dst) return void refuse(400, 'bad_authority');
    const peer = tlsSocket ? this.peerOf(tlsSocket) : { error: 'no TLS' };
    if ('error' in peer) return void refuse(401, 'peer_identity', { err: peer.error });
    const view = this.deps.view();
    const service = view.store.serviceByVip(dst.ip);
    const workload = service ? undefined : view.store.workloadByIp(dst.ip);
    if (!service && !workload) return void refuse(503, 'unknown_destination');
    const sp = service?.ports.find((p) => p.port === dst.port);
    if (service && !sp) return void refuse(503, 'unknown_service_port');
    const client = clientAddress(view.store, headers.forwarded, srcIp, peer.identity);
    const claim = sourceFromBaggage(headers.baggage);
    const down: Down = { ...client, srcIdentity: peer.identity, port: dst.port, service, workload, ...(claim ? { claim } : {}) };
    const http =
      service && sp
        ? speaksHttp(sp, view.routes.has(serviceKey(service), dst.port))
        : workload !== undefined && podPortSpeaksHttp(view.store, workload, dst.port);
    if (http) {
      if (!respond(stream, 200, false)) return;
      return void this.serveHttp(stream, down);
    }
    void this.forward(stream, down, sp);
  }

  /** Feeds the stream to an HTTP/1.1 or HTTP/2 server of its own, by its first bytes. */
  private serveHttp(stream: http2.ServerHttp2Stream, d: Down): void {
    const sl = this.deps.serverLimits;
    const onFirst = (chunk: Buffer): void => {
      stream.pause();
      stream.unshift(chunk);
      const conn = jsDuplex(stream);
      const h2 = chunk.subarray(0, 3).toString('latin1') === 'PRI';
      const down = { ...d, h2 };
      if (h2) {
        const s = http2.createServer(
          { settings: { maxConcurrentStreams: sl.maxHttp2Streams, maxHeaderListSize: sl.maxHeaderBytes }, maxSessionMemory: 16 },
          (req, res) => this.deps.proxy.handle(req, res, down),
        );
        s.on('sessionError', ignore);
        s.setTimeout(sl.httpIdleMs);
        s.emit('connection', conn);
      } else {
        const s = http.createServer({ maxHeaderSize: sl.maxHeaderBytes, keepAliveTimeout: sl.httpIdleMs }, (req, res) =>
          this.deps.proxy.handle(req, res, down),
        );
        s.on('clientError', (_err: Error, sock: Duplex) => sock.destroy());
        s.setTimeout(sl.httpIdleMs);
        s.emit('connection', conn);
      }
      conn.resume();
    };
    stream.once('data', onFirst);
  }

  /** TCP: one endpoint per connection, chosen by capacity, bytes copied both ways. */
  private async forward(stream: http2.ServerHttp2Stream, d: Down, sp: ServicePort | undefined): Promise<void> {
    const view = this.deps.view();
    let target: EndpointTarget | undefined;
    if (d.service && sp) {
      const w = pickWeighted(
        view.store.endpoints(d.service).filter((e) => e.addresses.length > 0),
        Math.random,
      );
      const ip = w?.addresses[0];
      if (w && ip !== undefined) target = { ip, port: sp.targetPort, workload: w, identity: view.store.identityOf(w), service: d.service };
    } else if (d.workload) {
      const ip = d.workload.addresses[0];
      if (ip !== undefined) target = { ip, port: d.port, workload: d.workload, identity: view.store.identityOf(d.workload) };
    }
    const finish = accessLog(this.deps.log, {
      direction: 'waypoint_tcp',
      'src.addr': d.srcPort === undefined ? d.srcIp : `${d.srcIp}:${d.srcPort}`,
      'src.identity': d.srcIdentity,
      'dst.service': d.service?.hostname,
      'dst.workload': target?.workload.name,
      'dst.addr': target ? `${target.ip}:${target.port}` : undefined,
    });
    if (!target) {
      respond(stream, 503);
      return finish({ error: 'no_healthy_endpoint' });
    }
    let upstream: Duplex;
    try {
      upstream = await this.deps.open(target);
    } catch (err) {
      respond(stream, 503);
      return finish({ error: (err as { code?: string }).code ?? 'hbone_connect', detail: (err as Error).message });
    }
    if (!respond(stream, 200, false)) {
      upstream.destroy();
      return finish({ error: 'client_closed' });
    }
    const r = await copyBidirectional(stream, upstream);
    finish({ bytes_sent: r.received, bytes_recv: r.sent, error: r.error?.message });
  }
}

/** What the HBONE layer knows of a stream before the protocol is chosen. */
type Down = Omit<Downstream, 'h2'>;

/**
 * The client a CONNECT speaks for. A ztunnel (Istio's or ambit's node)
 * connects on behalf of the pod that opened the connection and names it in
 * `forwarded: for="ip:port"`; the peer's address may be a node's. The
 * forwarded address stands when it is the peer's own, or when the mesh
 * says the workload holding it runs as the identity the peer proved: a peer
 * can then speak only for its own pods, never lend itself another
 * workload's address (source IPs in policies, the source in telemetry).
 */
export function clientAddress(mesh: MeshStore, forwarded: unknown, peerIp: string, identity: string): { srcIp: string; srcPort?: number } {
  const m = typeof forwarded === 'string' ? /(?:^|[;,\s])for="?([0-9.]+):(\d{1,5})"?/i.exec(forwarded) : null;
  const ip = m?.[1];
  const port = Number(m?.[2]);
  if (ip === undefined || !(port >= 1 && port <= 65535) || net.isIPv4(ip) === false) return { srcIp: peerIp };
  if (ip === peerIp) return { srcIp: ip, srcPort: port };
  const w = mesh.workloadByIp(ip);
  return w && mesh.identityOf(w) === identity ? { srcIp: ip, srcPort: port } : { srcIp: peerIp };
}

const podServices = new WeakMap<MeshConfig, Map<string, Service[]>>();

/**
 * Whether the waypoint speaks HTTP to a pod addressed directly (pod IP:port):
 * Istio reads the protocol from the services the pod is an endpoint of, on
 * the service ports whose targetPort is that port. Routes attached to those
 * services do not count (they apply to service traffic only), and every
 * such port must say HTTP: parsing a protocol the app does not speak would
 * break it, while bytes forwarded as they are only lose the L7 features.
 */
export function podPortSpeaksHttp(mesh: MeshStore, w: Workload, port: number): boolean {
  let byUid = podServices.get(mesh.config);
  if (!byUid) {
    byUid = new Map();
    for (const s of mesh.config.services) for (const e of mesh.endpoints(s)) byUid.set(e.uid, [...(byUid.get(e.uid) ?? []), s]);
    podServices.set(mesh.config, byUid);
  }
  const ports = (byUid.get(w.uid) ?? []).flatMap((s) => s.ports.filter((p) => p.targetPort === port));
  return ports.length > 0 && ports.every((p) => speaksHttp(p, false));
}

function respond(stream: http2.ServerHttp2Stream, status: number, endStream = true): boolean {
  if (stream.destroyed || stream.closed || stream.headersSent) return false;
  try {
    stream.respond({ ':status': status }, { endStream });
    return true;
  } catch {
    return false;
  }
}
