// The destination side, per enrolled pod: HBONE on the pod's :15008 (mutual
// TLS with the pod's own certificate, then HTTP/2 CONNECT) and captured
// plaintext on :15006. Both ask the authorizer, then dial the app from
// inside the pod's netns; HBONE answers 200 only once that connect worked.
// Everything here is driven by peers, so every socket and stream has its
// error handled where it appears, every wait a deadline, and every refusal
// is a reason in a metric and a rate-limited log line, never an exception.
import http2 from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import { PORT_INBOUND_HBONE, TUNNEL_PORTS } from '../datapath/ports';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import { peerIdentity, serverTlsOptions } from '../identity/tls';
import { accessLog } from '../observability/access-log';
import type { Logger } from '../observability/log';
import { type Metrics, tcpLabels } from '../observability/metrics';
import type { RateLimitedLog } from '../observability/rate-limited';
import type { Authorizer, ConnectionFacts, Decision } from '../policy/authorize';
import type { Workload } from '../state/types';
import { Admission } from './admission';
import type { ConnectionRegistry } from './connections';
import { copyBidirectional } from './copy';
import { connIdOf, forwardedHost, parseAuthority, sourceFromBaggage } from './headers';
import type { TunnelLimits } from './limits';
import type { NodeOrigin, NodeOriginVia } from './node-origin';
import { CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW } from './pool';
import type { ServedPod } from './served-pod';
import { type Expiry, ServerSessions } from './server-sessions';
import { type MeshView, verifiedService, verifiedSource } from './source';

const ignore = (): void => undefined;

export interface InboundDeps {
  certs: CertProvider;
  trustDomain: () => string;
  authorizer: () => Authorizer;
  /** Dials the app from inside the pod; throws when the pod's netns is gone. */
  dialInPod: (pod: ServedPod, ip: string, port: number) => net.Socket;
  /** The mesh state: which workload holds an address and what identity it runs as. */
  mesh: MeshView;
  limits: TunnelLimits;
  metrics: Metrics;
  /** Where a delivered connection is listed while it is open. */
  connections: ConnectionRegistry;
  log: Logger;
  /** Warnings a peer can trigger, shared by the tunnel's pods. */
  warn: RateLimitedLog;
  /** Recognises the node's own plaintext connections (kubelet probes), which skip policy; absent: none do. */
  nodeOrigin?: NodeOrigin;
  /** Counts a connection delivered without policy because it came from the node. */
  nodeExempted?: (via: NodeOriginVia) => void;
}

export class Inbound {
  private readonly server?: http2.Http2SecureServer;
  private readonly log: Logger;
  private readonly onCert: (id: string, c: WorkloadCert) => void;
  /** TLS handshakes completed on :15008 (tests count pooled-session reuse with it). */
  handshakes = 0;
  private readonly sessions: ServerSessions;
  private readonly admission: Admission;
  /** Set when the pod leaves the tunnel: streams on sessions still open are refused. */
  private closed = false;
  /** The peer identity (or why there is none) of each TLS connection: checked once, not per stream. */
  private readonly peers = new WeakMap<tls.TLSSocket, ReturnType<typeof peerIdentity>>();
  /** Connections delivered to the app, re-checked when the policies change. */
  private readonly authorized = new Set<{ facts: Omit<ConnectionFacts, 'dst'>; connId?: string; end: () => void }>();

  /** cert undefined: plain mode, HBONE connections are refused. */
  constructor(
    private readonly pod: ServedPod,
    readonly identity: string,
    cert: WorkloadCert | undefined,
    private readonly deps: InboundDeps,
  ) {
    this.log = deps.log.child({ pod: pod.workload.uid });
    const { limits } = deps;
    this.admission = new Admission(limits);
    this.sessions = new ServerSessions(limits, (session, reason) => {
      this.deps.metrics.failure('inbound', reason);
      this.warn(reason, { peer: session.socket?.remoteAddress }, EXPIRY_MESSAGE[reason]);
    });
    this.onCert = (id, c) => {
      if (id === identity) this.server?.setSecureContext(serverTlsOptions(c));
    };
    pod.inboundPlain.on('connection', (s: net.Socket) =>
      this.guard(
        'plaintext',
        () => this.onPlain(s),
        () => s.destroy(),
      ),
    );
    if (!cert) {
      pod.inboundHbone.on('connection', (s: net.Socket) => {
        s.on('error', ignore);
        s.destroy();
      });
      return;
    }
    const server = http2.createSecureServer({
      ...serverTlsOptions(cert),
      handshakeTimeout: limits.serverHandshakeMs,
      // A client that does not offer h2 is closed at once, not after Node's 10 s.
      unknownProtocolTimeout: 1,
      settings: { initialWindowSize: STREAM_WINDOW, maxFrameSize: MAX_FRAME, maxConcurrentStreams: limits.serverMaxStreams },
    });
    this.server = server;
    server.on('secureConnection', (s: tls.TLSSocket) => {
      this.admission.handshakeDone(s);
      this.guard(
        'peer check',
        () => this.checkPeer(s),
        () => s.destroy(),
      );
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
      this.admission.handshakeDone(s);
      const reason = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'tls_handshake_timeout' : 'tls_handshake';
      this.deps.metrics.failure('inbound', reason);
      this.warn(reason, { peer: s.remoteAddress, err: err.message }, 'HBONE connection refused');
    });
    server.on('unknownProtocol', (s: tls.TLSSocket) => {
      this.deps.metrics.failure('inbound', 'not_h2');
      this.warn('not_h2', { peer: s.remoteAddress }, 'HBONE connection refused: the client did not offer HTTP/2 (ALPN h2)');
      s.destroy();
    });
    server.on('sessionError', (err: Error, session: http2.ServerHttp2Session) =>
      this.warn('session_error', { peer: session.socket?.remoteAddress, err: err.message }, 'HBONE session failed'),
    );
    server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once('connect', () => {
        if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW);
      });
    });
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      // Before anything else: a peer may reset the stream at any moment.
      stream.on('error', ignore);
      this.guard(
        'stream',
        () => this.onStream(stream, headers),
        () => respond(stream, 503),
      );
    });
    // Certificate rotation: new handshakes use the new certificate, open sessions carry on.
    deps.certs.on('updated', this.onCert);
    pod.inboundHbone.on('connection', (s: net.Socket) => {
      s.on('error', ignore); // the TLS socket over it reports; a reset while queued must not throw
      const refused = this.admission.admit(s);
      if (refused) {
        this.deps.metrics.failure('inbound', refused);
        this.warn(refused, { peer: s.remoteAddress, ...this.admission.stats() }, 'HBONE connection refused: over a connection cap');
        s.destroy();
        return;
      }
      // The pod's listener keeps half-open sockets for plaintext; under TLS a FIN from the
      // peer must end the session, or a vanished client's session stays forever.
      s.allowHalfOpen = false;
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
      server.emit('connection', s);
    });
  }

  /**
   * The pod leaves the tunnel: GOAWAY to every HBONE peer and no new
   * stream or plaintext connection is served (its netns may be closed
   * next); connections already delivered carry on.
   */
  close(): void {
    this.closed = true;
    this.deps.certs.off('updated', this.onCert);
    this.server?.close();
    this.sessions.close();
  }

  /** GOAWAY to every HBONE peer: no new streams here; open ones finish. */
  drain(): void {
    this.close();
  }

  /** Sessions open on :15008 and what admission holds (tests and debugging). */
  stats(): { sessions: number; pending: number; open: number } {
    return { sessions: this.sessions.size, ...this.admission.stats() };
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
      this.log.warn(
        {
          conn_id: c.connId,
          src: c.facts.srcIp,
          'src.identity': c.facts.srcIdentity,
          dst: `${c.facts.dstIp}:${c.facts.dstPort}`,
          reason: 'denied_after_policy_change',
          policy: decision.policy,
          why: decision.reason,
        },
        'open connection closed: the policies now deny it',
      );
      this.deps.metrics.failure('inbound', 'denied_after_policy_change');
      c.end();
    }
    return closed;
  }

  /** The pod's workload as the current state describes it (its policy list can change without re-enrolment). */
  private workload(): Workload {
    const [ip] = this.pod.workload.addresses;
    return (ip !== undefined && this.deps.mesh.workloadByIp(ip)) || this.pod.workload;
  }

  private authorize(facts: Omit<ConnectionFacts, 'dst'>, connId?: string): Decision {
    const decision = this.deps.authorizer().check({ ...facts, dst: this.workload() });
    if (decision.dryRun?.length)
      this.log.info(
        {
          conn_id: connId,
          src: facts.srcIp,
          'src.identity': facts.srcIdentity,
          dst: `${facts.dstIp}:${facts.dstPort}`,
          dryRun: decision.dryRun,
        },
        'dry-run policies evaluated (not enforced)',
      );
    return decision;
  }

  /** Tracks a delivered connection until done resolves, for recheck(). */
  private track(facts: Omit<ConnectionFacts, 'dst'>, connId: string | undefined, end: () => void, done: Promise<unknown>): void {
    const entry = { facts, connId, end };
    this.authorized.add(entry);
    void done.finally(() => this.authorized.delete(entry));
  }

  private warn(reason: string, fields: Record<string, unknown>, msg: string, key = reason): void {
    this.deps.warn.warn(reason, { pod: this.pod.workload.uid, ...fields }, msg, key);
  }

  /** Runs a handler a peer drives; a bug in it costs that connection, never the process. */
  private guard(what: string, fn: () => void, onFail: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.metrics.failure('inbound', 'internal');
      this.warn('internal', { what, err: (err as Error).stack ?? String(err) }, 'inbound handler failed: connection closed');
      try {
        onFail();
      } catch {
        /* already gone */
      }
    }
  }

  private peerOf(s: tls.TLSSocket): ReturnType<typeof peerIdentity> {
    let peer = this.peers.get(s);
    if (!peer) {
      peer = peerIdentity(s, this.deps.trustDomain());
      this.peers.set(s, peer);
    }
    return peer;
  }

  private checkPeer(s: tls.TLSSocket): void {
    const peer = this.peerOf(s);
    if ('error' in peer) {
      this.deps.metrics.failure('inbound', 'peer_identity');
      this.warn('peer_identity', { peer: s.remoteAddress, err: peer.error }, 'HBONE connection refused');
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
      this.deps.metrics.failure('inbound', reason);
      this.warn(
        reason,
        { conn_id: connId, src: srcIp, authority: headers[':authority'], status, ...extra },
        'HBONE stream refused',
        auditKey(reason, extra),
      );
      respond(stream, status);
    };
    if (this.closed) return void refuse(503, 'pod_removed');
    if (headers[':method'] !== 'CONNECT') return void refuse(400, 'not_connect');
    const target = parseAuthority(headers[':authority']);
    if (!target) return void refuse(400, 'bad_authority');
    if (!this.pod.workload.addresses.includes(target.ip)) return void refuse(400, 'authority_not_this_pod');
    if (TUNNEL_PORTS.has(target.port)) return void refuse(503, 'tunnel_port');
    // A stream can be read before 'secureConnection' ran (same read as the handshake's end): check here too.
    const peer = tlsSocket ? this.peerOf(tlsSocket) : { error: 'no TLS' };
    // Counted and logged once per connection by checkPeer, which runs for every finished handshake
    // (session.socket is a proxy of that socket, so per-socket bookkeeping cannot tell them apart).
    if ('error' in peer) return void respond(stream, 401);
    const srcIdentity = peer.identity;
    const facts = { srcIdentity, srcIp, dstIp: target.ip, dstPort: target.port };
    const decision = this.authorize(facts, connId);
    if (!decision.allow) return void refuse(401, 'denied', { policy: decision.policy, why: decision.reason });

    let upstream: net.Socket;
    try {
      upstream = this.deps.dialInPod(this.pod, target.ip, target.port);
    } catch (err) {
      return void refuse(503, 'upstream_dial', { err: (err as Error).message, code: (err as NodeJS.ErrnoException).code });
    }
    // Until the app answers, the stream and the dial wait on each other; each outcome settles both once.
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      stream.off('close', onStreamGone);
      upstream.off('error', onConnectError);
      return true;
    };
    const onConnectError = (err: Error): void => {
      if (!settle()) return;
      upstream.destroy();
      refuse(503, 'upstream_connect', { err: (err as NodeJS.ErrnoException).code ?? err.message });
    };
    const onStreamGone = (): void => {
      if (!settle()) return;
      upstream.destroy();
      this.deps.metrics.failure('inbound', 'reset_before_connect');
      this.warn(
        'reset_before_connect',
        { conn_id: connId, src: srcIp, rst: stream.rstCode },
        'HBONE stream closed by the peer before the app answered',
      );
    };
    const timer = setTimeout(() => {
      if (!settle()) return;
      upstream.destroy();
      refuse(503, 'upstream_timeout', { after_ms: this.deps.limits.upstreamDialMs });
    }, this.deps.limits.upstreamDialMs).unref();
    upstream.on('error', onConnectError);
    stream.once('close', onStreamGone);
    upstream.once('connect', () => {
      if (!settle()) return;
      upstream.on('error', ignore); // the copy reports from here on
      if (!respond(stream, 200, false)) {
        upstream.destroy();
        return;
      }
      const peer = `${srcIp}:${tlsSocket?.remotePort ?? 0}`;
      this.deliver(stream, upstream, { srcIp, srcIdentity, peer, connId, target, decision, facts, headers });
    });
  }

  /** The CONNECT was answered 200: copy bytes, with labels and log fields from verified facts only. */
  private deliver(
    stream: http2.ServerHttp2Stream,
    upstream: net.Socket,
    c: {
      srcIp: string;
      srcIdentity: string;
      /** The HBONE client's address (its session's). */
      peer: string;
      connId?: string;
      target: { ip: string; port: number };
      decision: Decision;
      facts: Omit<ConnectionFacts, 'dst'>;
      headers: http2.IncomingHttpHeaders;
    },
  ): void {
    const { mesh } = this.deps;
    const src = verifiedSource(mesh, c.srcIp, c.srcIdentity, sourceFromBaggage(c.headers.baggage));
    const service = verifiedService(mesh, forwardedHost(c.headers.forwarded), this.workload());
    const finish = accessLog(this.log, {
      conn_id: c.connId,
      direction: 'inbound',
      'src.addr': c.srcIp,
      'src.workload': src.workload?.name,
      'src.namespace': src.namespace,
      'src.identity': c.srcIdentity,
      'dst.addr': `${c.target.ip}:${c.target.port}`,
      'dst.hbone_addr': `${c.target.ip}:${PORT_INBOUND_HBONE}`,
      'dst.service': service,
      'dst.workload': this.pod.workload.name,
      'dst.namespace': this.pod.workload.namespace,
      'dst.identity': this.identity,
      policy: c.decision.policy,
    });
    const closed = this.deps.metrics.open(
      tcpLabels({
        reporter: 'destination',
        src: src.workload,
        srcPrincipal: c.srcIdentity,
        dst: this.pod.workload,
        dstPrincipal: this.identity,
        service,
        mtls: true,
      }),
    );
    const unlist = this.deps.connections.add(
      {
        podUid: this.pod.workload.uid,
        pod: this.pod.workload.name,
        namespace: this.pod.workload.namespace,
        direction: 'inbound',
        source: forwardedClient(c.headers.forwarded, c.srcIp) ?? c.srcIp,
        sourceIdentity: c.srcIdentity,
        destination: `${c.target.ip}:${c.target.port}`,
        destinationService: service,
        destinationIdentity: this.identity,
        protocol: 'HBONE',
        peer: c.peer,
        connId: c.connId,
      },
      upstream,
      'destination',
    );
    const copied = copyBidirectional(stream, upstream)
      .finally(unlist)
      .then((r) => {
        closed({ fromSource: r.sent, toSource: r.received });
        finish({ bytes_sent: r.received, bytes_recv: r.sent, error: r.error?.message });
      });
    this.track(
      c.facts,
      c.connId,
      () => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        upstream.destroy();
      },
      copied,
    );
  }

  /**
   * Captured plaintext: delivered (PERMISSIVE) if the authorizer allows a peer
   * without identity, or without asking it when the node itself is the peer
   * (kubelet probes; see node-origin.ts).
   */
  private onPlain(client: net.Socket): void {
    client.on('error', ignore); // a peer's reset before the copy starts is no error of ours
    // A client that reset before we got to it has no addresses any more: nothing to serve.
    if (!client.localAddress || !client.remoteAddress) return void client.destroy();
    client.setNoDelay(true);
    const origin = this.deps.nodeOrigin;
    if (!origin?.candidate(client.remoteAddress)) return void this.servePlain(client, undefined);
    const conn = {
      srcIp: client.remoteAddress,
      srcPort: client.remotePort ?? 0,
      dstIp: client.localAddress,
      dstPort: client.localPort ?? 0,
    };
    // What arrives meanwhile waits in the socket's buffer until the copy reads it.
    origin.check(conn).then(
      (via) =>
        this.guard(
          'plaintext',
          () => this.servePlain(client, via),
          () => client.destroy(),
        ),
      (err: Error) => {
        // Not knowing is not being the node: policy applies.
        this.warn('node_origin_check', { src: conn.srcIp, err: err.message }, "the node's socket table could not be read");
        this.guard(
          'plaintext',
          () => this.servePlain(client, undefined),
          () => client.destroy(),
        );
      },
    );
  }

  /** viaNode: the connection is the node's own, delivered without asking the authorizer. */
  private servePlain(client: net.Socket, viaNode: NodeOriginVia | undefined): void {
    if (client.destroyed || !client.localAddress || !client.remoteAddress) return void client.destroy();
    const ip = client.localAddress;
    const port = client.localPort ?? 0;
    const srcIp = client.remoteAddress;
    const refuse = (reason: string, extra: Record<string, unknown> = {}): void => {
      this.deps.metrics.failure('inbound', reason);
      this.warn(reason, { src: srcIp, dst: `${ip}:${port}`, ...extra }, 'plaintext connection refused', auditKey(`plain_${reason}`, extra));
      client.destroy();
    };
    if (this.closed) return void refuse('pod_removed');
    if (TUNNEL_PORTS.has(port)) return void refuse('tunnel_port');
    const facts = { srcIp, dstIp: ip, dstPort: port };
    const decision: Decision = viaNode ? { allow: true, reason: `node (${viaNode})` } : this.authorize(facts);
    if (!decision.allow) return void refuse('denied', { policy: decision.policy, why: decision.reason });
    if (viaNode) {
      this.deps.nodeExempted?.(viaNode);
      this.log.debug(
        { src: `${srcIp}:${client.remotePort}`, dst: `${ip}:${port}`, via: viaNode },
        'connection from the node: no policy applies',
      );
    }
    let upstream: net.Socket;
    try {
      upstream = this.deps.dialInPod(this.pod, ip, port);
    } catch (err) {
      return void refuse('upstream_dial', { err: (err as Error).message });
    }
    // No identity to check: the address is all a plaintext peer has, and the mesh state says whose it is.
    const src = this.deps.mesh.workloadByIp(srcIp);
    const finish = accessLog(this.log, {
      direction: 'inbound_plain',
      'src.addr': `${srcIp}:${client.remotePort}`,
      'src.workload': src?.name,
      'src.namespace': src?.namespace,
      'dst.addr': `${ip}:${port}`,
      'dst.workload': this.pod.workload.name,
      'dst.namespace': this.pod.workload.namespace,
      policy: decision.policy,
      node_exempt: viaNode,
    });
    const timer = setTimeout(() => {
      this.deps.metrics.failure('inbound', 'upstream_timeout');
      this.warn(
        'plain_upstream_timeout',
        { src: srcIp, dst: `${ip}:${port}`, after_ms: this.deps.limits.upstreamDialMs },
        'plaintext connection closed: the app did not accept in time',
      );
      upstream.destroy(new Error(`the app did not accept within ${this.deps.limits.upstreamDialMs} ms`));
    }, this.deps.limits.upstreamDialMs).unref();
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      clearTimeout(timer);
    });
    upstream.once('close', () => clearTimeout(timer));
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (!connected) this.deps.metrics.failure('inbound', 'upstream_connect');
      void err;
    });
    const closed = this.deps.metrics.open(
      tcpLabels({ reporter: 'destination', src, dst: this.pod.workload, dstPrincipal: this.identity, mtls: false }),
    );
    const unlist = this.deps.connections.add(
      {
        podUid: this.pod.workload.uid,
        pod: this.pod.workload.name,
        namespace: this.pod.workload.namespace,
        direction: 'inbound',
        source: `${srcIp}:${client.remotePort}`,
        destination: `${ip}:${port}`,
        protocol: 'plaintext',
        peer: `${srcIp}:${client.remotePort}`,
      },
      client,
      'source',
    );
    const copied = copyBidirectional(client, upstream)
      .finally(unlist)
      .then((r) => {
        closed({ fromSource: r.sent, toSource: r.received });
        finish({ bytes_sent: r.received, bytes_recv: r.sent, error: r.error?.message });
      });
    // A policy change cannot close what no policy admitted.
    if (viaNode) return;
    this.track(
      facts,
      undefined,
      () => {
        client.destroy();
        upstream.destroy();
      },
      copied,
    );
  }
}

/**
 * The client address a peer forwarded (`for="ip:port"`), when its address is
 * the one the connection came from: only the port is the peer's word then,
 * and it is shown, never used.
 */
function forwardedClient(forwarded: unknown, srcIp: string): string | undefined {
  const addr = typeof forwarded === 'string' ? /(?:^|[;,\s])for="?([0-9.]+:\d{1,5})"?/i.exec(forwarded)?.[1] : undefined;
  return addr?.startsWith(`${srcIp}:`) ? addr : undefined;
}

/** Answers a stream if it can still be answered; false when the peer is already gone. */
function respond(stream: http2.ServerHttp2Stream, status: number, endStream = true): boolean {
  if (stream.destroyed || stream.closed || stream.headersSent) return false;
  try {
    stream.respond({ ':status': status }, { endStream });
    return true;
  } catch {
    return false; // the session went away between the check and the write
  }
}

/**
 * The rate limit's key for a refusal. A policy denial is an audit record: each
 * (policy, verdict) keeps its own line per interval, so one peer's flood of
 * denials cannot hide another policy's; the number of keys is bounded by the
 * policies, not by the peer.
 */
function auditKey(reason: string, extra: Record<string, unknown>): string {
  return extra.policy !== undefined || extra.why !== undefined ? `${reason}|${String(extra.policy)}|${String(extra.why)}` : reason;
}

const EXPIRY_MESSAGE: Record<Expiry, string> = {
  preface_timeout: 'HBONE session closed: no HTTP/2 preface in time',
  session_idle: 'idle HBONE session closed',
  keepalive_timeout: 'HBONE session closed with its streams: the peer did not answer PING in time',
};
