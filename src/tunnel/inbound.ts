// The destination side, per enrolled pod: HBONE on the pod's :15008 (mutual
// TLS with the pod's own certificate, then HTTP/2 CONNECT) and captured
// plaintext on :15006. Both ask the authorizer, then dial the app from
// inside the pod's netns; HBONE answers 200 only once that connect worked.
import http2 from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import { PORT_INBOUND_HBONE, PORT_INBOUND_PLAIN, PORT_OUTBOUND } from '../agent/enrolment';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import { peerIdentity, serverTlsOptions } from '../identity/tls';
import { accessLog } from '../observability/access-log';
import type { Logger } from '../observability/log';
import { tcpLabels, type Metrics } from '../observability/metrics';
import type { Workload } from '../state/types';
import type { Authorizer, ConnectionFacts, Decision } from '../policy/authorize';
import { copyBidirectional } from './copy';
import { connIdOf, forwardedHost, parseAuthority, sourceFromBaggage } from './headers';
import { CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW } from './pool';
import type { ServedPod } from './served-pod';

const TUNNEL_PORTS = new Set([PORT_OUTBOUND, PORT_INBOUND_PLAIN, PORT_INBOUND_HBONE]);

export interface InboundDeps {
  certs: CertProvider;
  trustDomain: () => string;
  authorizer: () => Authorizer;
  /** Dials the app from inside the pod. */
  dialInPod: (pod: ServedPod, ip: string, port: number) => net.Socket;
  /** The workload at an address, for plaintext peers (which present no identity). */
  workloadByIp: (ip: string) => Workload | undefined;
  metrics: Metrics;
  log: Logger;
}

export class Inbound {
  private readonly server?: http2.Http2SecureServer;
  private readonly log: Logger;
  private readonly onCert: (id: string, c: WorkloadCert) => void;
  /** TLS handshakes completed on :15008 (tests count pooled-session reuse with it). */
  handshakes = 0;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** The peer identity (or why there is none) of each TLS connection: checked once, not per stream. */
  private readonly peers = new WeakMap<tls.TLSSocket, ReturnType<typeof peerIdentity>>();
  /** Connections delivered to the app, re-checked when the policies change. */
  private readonly authorized = new Set<{ facts: Omit<ConnectionFacts, 'dst'>; connId?: string; end: () => void }>();

  /** cert undefined: plain mode, HBONE connections are refused. */
  constructor(private readonly pod: ServedPod, readonly identity: string, cert: WorkloadCert | undefined, private readonly deps: InboundDeps) {
    this.log = deps.log.child({ pod: pod.workload.uid });
    this.onCert = (id, c) => { if (id === identity) this.server?.setSecureContext(serverTlsOptions(c)); };
    pod.inboundPlain.on('connection', (s: net.Socket) => this.onPlain(s));
    if (!cert) {
      pod.inboundHbone.on('connection', (s: net.Socket) => s.destroy());
      return;
    }
    const server = http2.createSecureServer({
      ...serverTlsOptions(cert),
      settings: { initialWindowSize: STREAM_WINDOW, maxFrameSize: MAX_FRAME, maxConcurrentStreams: 200 },
    });
    this.server = server;
    server.on('secureConnection', (s: tls.TLSSocket) => this.checkPeer(s));
    server.on('session', (session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    });
    server.on('stream', (stream, headers) => this.onStream(stream, headers));
    server.on('tlsClientError', (err, s) => this.log.warn({ peer: s.remoteAddress, err: err.message, reason: 'tls_handshake' }, 'HBONE connection refused'));
    // Certificate rotation: new handshakes use the new certificate, open sessions carry on.
    deps.certs.on('updated', this.onCert);
    pod.inboundHbone.on('connection', (s: net.Socket) => {
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
      server.emit('connection', s);
    });
  }

  close(): void {
    this.deps.certs.off('updated', this.onCert);
    this.server?.close();
  }

  /** GOAWAY to every HBONE peer: no new streams here; open ones finish. */
  drain(): void {
    this.close();
    for (const s of this.sessions) s.close();
  }

  /**
   * Re-checks every open connection against the current policies and closes
   * those now denied (a policy change applies to what is already flowing).
   */
  recheck(): number {
    let closed = 0;
    for (const c of this.authorized) {
      const decision = this.authorize(c.facts);
      if (decision.allow) continue;
      this.authorized.delete(c);
      closed++;
      this.log.warn({ conn_id: c.connId, src: c.facts.srcIp, 'src.identity': c.facts.srcIdentity, dst: `${c.facts.dstIp}:${c.facts.dstPort}`, reason: 'denied_after_policy_change', policy: decision.policy, why: decision.reason }, 'open connection closed: the policies now deny it');
      this.deps.metrics.failure('inbound', 'denied_after_policy_change');
      c.end();
    }
    return closed;
  }

  /** The pod's workload as the current state describes it (its policy list can change without re-enrolment). */
  private workload(): Workload {
    return this.deps.workloadByIp(this.pod.workload.addresses[0]) ?? this.pod.workload;
  }

  private authorize(facts: Omit<ConnectionFacts, 'dst'>, connId?: string): Decision {
    const decision = this.deps.authorizer().check({ ...facts, dst: this.workload() });
    if (decision.dryRun?.length) this.log.info({ conn_id: connId, src: facts.srcIp, 'src.identity': facts.srcIdentity, dst: `${facts.dstIp}:${facts.dstPort}`, dryRun: decision.dryRun }, 'dry-run policies evaluated (not enforced)');
    return decision;
  }

  /** Tracks a delivered connection until done resolves, for recheck(). */
  private track(facts: Omit<ConnectionFacts, 'dst'>, connId: string | undefined, end: () => void, done: Promise<unknown>): void {
    const entry = { facts, connId, end };
    this.authorized.add(entry);
    void done.finally(() => this.authorized.delete(entry));
  }

  private peerOf(s: tls.TLSSocket): ReturnType<typeof peerIdentity> {
    let peer = this.peers.get(s);
    if (!peer) this.peers.set(s, (peer = peerIdentity(s, this.deps.trustDomain())));
    return peer;
  }

  private checkPeer(s: tls.TLSSocket): void {
    const peer = this.peerOf(s);
    if ('error' in peer) {
      this.log.warn({ peer: s.remoteAddress, reason: 'peer_identity', err: peer.error }, 'HBONE connection refused');
      s.destroy();
      return;
    }
    this.handshakes++;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const session = stream.session;
    const tlsSocket = session?.socket as tls.TLSSocket | undefined;
    const srcIp = tlsSocket?.remoteAddress ?? '';
    const connId = connIdOf(headers.traceparent);
    const refuse = (status: number, reason: string, extra: Record<string, unknown> = {}): void => {
      this.log.warn({ conn_id: connId, src: srcIp, authority: headers[':authority'], status, reason, ...extra }, 'HBONE stream refused');
      this.deps.metrics.failure('inbound', reason);
      if (!stream.destroyed) stream.respond({ ':status': status }, { endStream: true });
    };
    if (headers[':method'] !== 'CONNECT') return refuse(400, 'not_connect');
    const target = parseAuthority(headers[':authority']);
    if (!target) return refuse(400, 'bad_authority');
    if (!this.pod.workload.addresses.includes(target.ip)) return refuse(400, 'authority_not_this_pod');
    if (TUNNEL_PORTS.has(target.port)) return refuse(503, 'tunnel_port');
    // A stream can be read before 'secureConnection' ran (same read as the handshake's end): check here too.
    const peer = tlsSocket ? this.peerOf(tlsSocket) : { error: 'no TLS' };
    if ('error' in peer) return refuse(401, 'peer_identity', { err: peer.error });
    const srcIdentity = peer.identity;
    const facts = { srcIdentity, srcIp, dstIp: target.ip, dstPort: target.port };
    const decision = this.authorize(facts, connId);
    if (!decision.allow) return refuse(401, 'denied', { policy: decision.policy, why: decision.reason });

    const src = sourceFromBaggage(headers.baggage);
    const service = forwardedHost(headers.forwarded);
    const finish = accessLog(this.log, {
      conn_id: connId, direction: 'inbound', 'src.addr': srcIp, 'src.workload': src?.name, 'src.namespace': src?.namespace, 'src.identity': srcIdentity,
      'dst.addr': `${target.ip}:${target.port}`, 'dst.hbone_addr': `${target.ip}:${PORT_INBOUND_HBONE}`, 'dst.service': service,
      'dst.workload': this.pod.workload.name, 'dst.namespace': this.pod.workload.namespace, 'dst.identity': this.identity,
      policy: decision.policy,
    });
    const upstream = this.deps.dialInPod(this.pod, target.ip, target.port);
    const onConnectError = (err: Error): void => refuse(503, 'upstream_connect', { err: (err as NodeJS.ErrnoException).code ?? err.message });
    upstream.once('error', onConnectError);
    upstream.once('connect', () => {
      upstream.off('error', onConnectError);
      if (stream.destroyed) { upstream.destroy(); return; }
      stream.respond({ ':status': 200 });
      const closed = this.deps.metrics.open(tcpLabels({
        reporter: 'destination', src, srcPrincipal: srcIdentity, dst: this.pod.workload, dstPrincipal: this.identity, service, mtls: true,
      }));
      const copied = copyBidirectional(stream, upstream).then((r) => {
        closed({ fromSource: r.sent, toSource: r.received });
        finish({ bytes_sent: r.received, bytes_recv: r.sent, error: r.error?.message });
      });
      this.track(facts, connId, () => { stream.close(http2.constants.NGHTTP2_CANCEL); upstream.destroy(); }, copied);
    });
  }

  /** Captured plaintext: delivered (PERMISSIVE) if the authorizer allows a peer without identity. */
  private onPlain(client: net.Socket): void {
    // A client that reset before we got to it has no addresses any more: nothing to serve.
    if (!client.localAddress || !client.remoteAddress) return void client.destroy();
    client.setNoDelay(true);
    const ip = client.localAddress ?? '';
    const port = client.localPort ?? 0;
    const srcIp = client.remoteAddress ?? '';
    if (TUNNEL_PORTS.has(port)) {
      this.log.warn({ src: srcIp, dst: `${ip}:${port}`, reason: 'tunnel_port' }, 'plaintext connection refused');
      this.deps.metrics.failure('inbound', 'tunnel_port');
      client.destroy();
      return;
    }
    const facts = { srcIp, dstIp: ip, dstPort: port };
    const decision = this.authorize(facts);
    if (!decision.allow) {
      this.log.warn({ src: srcIp, dst: `${ip}:${port}`, reason: 'denied', policy: decision.policy, why: decision.reason }, 'plaintext connection refused');
      this.deps.metrics.failure('inbound', 'denied');
      client.destroy();
      return;
    }
    const src = this.deps.workloadByIp(srcIp);
    const finish = accessLog(this.log, {
      direction: 'inbound_plain', 'src.addr': `${srcIp}:${client.remotePort}`, 'src.workload': src?.name, 'src.namespace': src?.namespace,
      'dst.addr': `${ip}:${port}`, 'dst.workload': this.pod.workload.name, 'dst.namespace': this.pod.workload.namespace,
      policy: decision.policy,
    });
    const closed = this.deps.metrics.open(tcpLabels({ reporter: 'destination', src, dst: this.pod.workload, dstPrincipal: this.identity, mtls: false }));
    const upstream = this.deps.dialInPod(this.pod, ip, port);
    const copied = copyBidirectional(client, upstream).then((r) => {
      closed({ fromSource: r.sent, toSource: r.received });
      finish({ bytes_sent: r.received, bytes_recv: r.sent, error: r.error?.message });
    });
    this.track(facts, undefined, () => { client.destroy(); upstream.destroy(); }, copied);
  }
}
