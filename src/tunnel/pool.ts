// HBONE client sessions: HTTP/2 over mutual TLS to <pod IP>:15008, dialed
// from inside the source pod (so the destination sees the pod's own address,
// which IP-block policies match), pooled by (source identity, expected
// destination identities, destination IP, source IP), many CONNECT streams
// per session so a new pod connection costs no TLS handshake.
//
// A peer is untrusted until it answers, so every step has a bound: the
// session setup (TCP + TLS + the peer's SETTINGS) clientHandshakeMs, each
// CONNECT's answer connectResponseMs, liveness a PING every 10 s answered
// within 20 s, an idle session sessionIdleMs. A session carries at most
// min(maxStreams, the peer's SETTINGS_MAX_CONCURRENT_STREAMS) streams, and
// a caller reserves its place synchronously when it picks a session (even
// one still connecting): concurrent callers spread over sessions instead of
// piling onto one that nghttp2 would then queue them behind.
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import type { Dialer } from '../datapath/netns';
import { PORT_INBOUND_HBONE } from '../datapath/ports';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import { clientTlsOptions } from '../identity/tls';
import type { Logger } from '../observability/log';
import { RateLimitedLog } from '../observability/rate-limited';
import { ClientFailure, failureCode } from './client-errors';
import { type TunnelLimits, tunnelLimits } from './limits';

export const STREAM_WINDOW = 4 << 20;
export const CONNECTION_WINDOW = 16 << 20;
export const MAX_FRAME = 1 << 20;

/** A caller moved off sessions that turned out full (a peer lowering its cap) this often gives up. */
const MAX_PLACEMENTS = 8;

export interface PoolOptions {
  certs: CertProvider;
  log: Logger;
  /** Overrides limits.maxStreamsPerSession. */
  maxStreams?: number;
  /** Overrides limits.sessionIdleMs. */
  idleMs?: number;
  pingEveryMs?: number;
  pingTimeoutMs?: number;
  /** Timeouts and caps (the tunnel's); DEFAULT_LIMITS for the ones not given. */
  limits?: Partial<TunnelLimits>;
}

interface Session {
  key: string;
  /** Set once the certificate is in hand and the TCP leg dialed. */
  h2?: http2.ClientHttp2Session;
  /** Callers counted against this session: streams open plus callers waiting for it to be ready. */
  reserved: number;
  /** Streams requested on it and not closed yet. */
  open: number;
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS; until it is known, what the destination said before, else unlimited. */
  peerMax: number;
  peerMaxKnown: boolean;
  /** Settles when the session can carry streams (TLS done, the peer's SETTINGS received) or cannot. */
  ready: Promise<void>;
  /** False once taken out of the pool: no new reservations. */
  pooled: boolean;
  idle?: NodeJS.Timeout;
  ping?: NodeJS.Timeout;
}

export interface ConnectTarget {
  srcIdentity: string;
  srcIp: string;
  /** Opens the TCP leg from the source pod. */
  dial: Dialer;
  dstIp: string;
  identities: string[];
}

export class HbonePool {
  private readonly sessions = new Map<string, Session[]>();
  private readonly limits: TunnelLimits;
  private readonly maxStreams: number;
  private readonly idleMs: number;
  private readonly pingEveryMs: number;
  private readonly pingTimeoutMs: number;
  private readonly warn: RateLimitedLog;
  /** Sessions (= TLS handshakes) opened so far. */
  sessionsOpened = 0;

  constructor(private readonly opts: PoolOptions) {
    this.limits = tunnelLimits(opts.limits);
    this.maxStreams = opts.maxStreams ?? this.limits.maxStreamsPerSession;
    this.idleMs = opts.idleMs ?? this.limits.sessionIdleMs;
    this.pingEveryMs = opts.pingEveryMs ?? this.limits.keepaliveIntervalMs;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? this.limits.keepaliveTimeoutMs;
    this.warn = new RateLimitedLog(opts.log);
  }

  /** Opens one CONNECT stream; resolves once the peer answered 200, rejects with a ClientFailure otherwise. */
  async connect(target: ConnectTarget, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    try {
      return await this.connectOnce(target, headers);
    } catch (err) {
      // REFUSED_STREAM means the peer never saw the request (its session was
      // going away): safe to send again, on another session.
      if (!(err as ClientFailure).refused) throw err;
      return this.connectOnce(target, headers);
    }
  }

  /** Open sessions and the streams they carry. */
  stats(): { sessions: number; streams: number } {
    let sessions = 0;
    let streams = 0;
    for (const list of this.sessions.values()) {
      sessions += list.length;
      for (const s of list) streams += s.open;
    }
    return { sessions, streams };
  }

  close(): void {
    for (const list of [...this.sessions.values()]) for (const s of list) this.drop(s, 'pool closed');
  }

  private async connectOnce(t: ConnectTarget, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    for (let placed = 1; ; placed++) {
      const s = this.reserve(t);
      try {
        await s.ready;
      } catch (err) {
        this.unreserve(s);
        throw err;
      }
      // Ready, but the peer may allow fewer streams than were reserved
      // while it connected, or the session went away meanwhile: try another.
      if (s.pooled && s.h2 && !s.h2.closed && !s.h2.destroyed && s.open < this.cap(s)) return this.request(s, s.h2, headers);
      this.unreserve(s);
      if (placed >= MAX_PLACEMENTS) {
        throw new ClientFailure(
          'AMBIT_E_HBONE_SESSION',
          `no HBONE session to ${t.dstIp}:${PORT_INBOUND_HBONE} had room for a stream after ${placed} tries ` +
            '(the peer keeps lowering SETTINGS_MAX_CONCURRENT_STREAMS or closing sessions)',
        );
      }
    }
  }

  private cap(s: Session): number {
    return Math.min(this.maxStreams, s.peerMax);
  }

  /** Picks a session with room, or starts one, and counts the caller on it before anything is awaited. */
  private reserve(t: ConnectTarget): Session {
    const key = `${t.srcIdentity}|${[...t.identities].sort().join(',')}|${t.dstIp}|${t.srcIp}`;
    const list = this.sessions.get(key) ?? [];
    let s = list.find((x) => x.pooled && x.reserved < this.cap(x) && !x.h2?.closed && !x.h2?.destroyed);
    if (!s) {
      // A new session to a destination whose cap is known starts with it, so it is not over-booked.
      const known = list.find((x) => x.peerMaxKnown);
      s = { key, reserved: 0, open: 0, peerMax: known?.peerMax ?? Infinity, peerMaxKnown: false, pooled: true, ready: Promise.resolve() };
      s.ready = this.establish(s, t);
      s.ready.catch(() => undefined); // each waiter sees the failure; nobody waiting is not an error
      this.sessions.set(key, [...list, s]);
    }
    s.reserved++;
    clearTimeout(s.idle);
    s.idle = undefined;
    return s;
  }

  private unreserve(s: Session): void {
    s.reserved--;
    this.maybeIdle(s);
  }

  /** Certificate, TCP leg, TLS, the peer's SETTINGS; settles ready. */
  private async establish(s: Session, t: ConnectTarget): Promise<void> {
    let cert: WorkloadCert;
    try {
      cert = await this.opts.certs.fetch(t.srcIdentity);
    } catch (err) {
      this.forget(s);
      const inner = err as NodeJS.ErrnoException;
      throw new ClientFailure(
        'AMBIT_E_CA',
        `no certificate for ${t.srcIdentity}: ${inner.code && !inner.message.includes(inner.code) ? `${inner.code}: ` : ''}${inner.message}`,
        { cause: err },
      );
    }
    if (!s.pooled)
      throw new ClientFailure(
        'AMBIT_E_HBONE_CLOSED',
        `HBONE session to ${t.dstIp}:${PORT_INBOUND_HBONE} closed while it was being set up`,
        { refused: true },
      );
    const peer = `${t.dstIp}:${PORT_INBOUND_HBONE}`;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let connected = false;
      let settings = false;
      let tcp: net.Socket | undefined;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.forget(s);
        s.h2?.destroy();
        tcp?.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () =>
          fail(
            new ClientFailure(
              'AMBIT_E_HBONE_HANDSHAKE_TIMEOUT',
              `TLS handshake with ${peer} not finished in ${this.limits.clientHandshakeMs} ms (clientHandshakeMs): the peer accepted TCP and went silent`,
            ),
          ),
        this.limits.clientHandshakeMs,
      );
      timer.unref();
      const failSession = (err: Error): void =>
        fail(
          new ClientFailure('AMBIT_E_HBONE_SESSION', `HBONE session to ${peer} failed: ${failureCode(err, 'error')}: ${err.message}`, {
            cause: err,
          }),
        );
      let socket: net.Socket;
      try {
        socket = t.dial(t.dstIp, PORT_INBOUND_HBONE, { allowHalfOpen: false });
      } catch (err) {
        return failSession(err as Error);
      }
      tcp = socket;
      // The TCP leg's own errors (refused, reset) end the session here rather than as an unhandled 'error'.
      tcp.on('error', failSession);
      tcp.setKeepAlive(true, 30_000);
      tcp.setNoDelay(true);
      this.sessionsOpened++;
      const h2 = http2.connect(`https://${peer}`, {
        createConnection: () => {
          const sock = tls.connect({ ...clientTlsOptions(cert, t.identities), socket });
          sock.on('error', failSession);
          return sock;
        },
        settings: { initialWindowSize: STREAM_WINDOW, maxFrameSize: MAX_FRAME, enablePush: false },
        peerMaxConcurrentStreams: this.maxStreams,
      });
      s.h2 = h2;
      const check = (): void => {
        if (settled || !connected || !settings) return;
        settled = true;
        clearTimeout(timer);
        s.ping = setInterval(() => this.keepalive(s), this.pingEveryMs).unref();
        resolve();
      };
      h2.once('connect', () => {
        h2.setLocalWindowSize(CONNECTION_WINDOW);
        connected = true;
        check();
      });
      // Also later: a peer may lower (or raise) its cap on a live session.
      h2.on('remoteSettings', (st) => {
        s.peerMax = st.maxConcurrentStreams ?? Infinity;
        s.peerMaxKnown = true;
        settings = true;
        check();
      });
      h2.on('error', (err) => {
        this.warn.warn(
          `hbone_session_${failureCode(err, 'error')}`,
          { peer, err: err.message, code: (err as NodeJS.ErrnoException).code },
          'HBONE session failed',
        );
        failSession(err);
      });
      h2.once('close', () => {
        this.forget(s);
        fail(new ClientFailure('AMBIT_E_HBONE_SESSION', `HBONE session to ${peer} closed during setup`));
      });
      h2.on('goaway', () => this.forget(s));
    });
  }

  /** One CONNECT on a ready session the caller holds a reservation on. */
  private request(s: Session, h2: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    const authority = String(headers[':authority']);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = h2.request({ ':method': 'CONNECT', ...headers }, { endStream: false });
    } catch (err) {
      this.unreserve(s);
      const refused = h2.closed || h2.destroyed;
      return Promise.reject(
        new ClientFailure('AMBIT_E_HBONE_SESSION', `CONNECT ${authority} could not be sent: ${(err as Error).message}`, {
          cause: err,
          refused,
        }),
      );
    }
    s.open++;
    stream.once('close', () => this.release(s));
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        return true;
      };
      const timer = setTimeout(() => {
        if (!settle()) return;
        stream.close(http2.constants.NGHTTP2_CANCEL);
        // A peer that leaves one CONNECT unanswered gets no new streams on this session.
        this.drop(s, `no answer to CONNECT in ${this.limits.connectResponseMs} ms`);
        reject(
          new ClientFailure(
            'AMBIT_E_HBONE_CONNECT_TIMEOUT',
            `no answer to CONNECT ${authority} in ${this.limits.connectResponseMs} ms (connectResponseMs)`,
          ),
        );
      }, this.limits.connectResponseMs);
      timer.unref();
      // Stays attached for the stream's life: an error between the answer and
      // the byte copy taking the stream over must not reach the process.
      stream.on('error', (err) => {
        if (!settle()) return;
        const refused = stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
        if (refused) this.forget(s);
        reject(new ClientFailure('AMBIT_E_HBONE_SESSION', `CONNECT ${authority} failed: ${err.message}`, { cause: err, refused }));
      });
      // A stream can also end without an error and without an answer (its
      // session closed before sending it): never processed, so retryable.
      stream.once('close', () => {
        if (!settle()) return;
        this.forget(s);
        reject(
          new ClientFailure('AMBIT_E_HBONE_CLOSED', `HBONE stream closed before an answer (code ${stream.rstCode})`, { refused: true }),
        );
      });
      stream.once('response', (h) => {
        if (!settle()) return;
        const status = Number(h[':status']);
        if (status === 200) return resolve(stream);
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new ClientFailure('AMBIT_E_HBONE_STATUS', `peer answered ${status} to CONNECT ${authority}`, { status }));
      });
    });
  }

  private keepalive(s: Session): void {
    const h2 = s.h2;
    if (!h2 || h2.destroyed) return;
    // A peer that stopped answering will not finish the streams either: they end with the session.
    const timer = setTimeout(() => this.drop(s, `no PING answer in ${this.pingTimeoutMs} ms`, true), this.pingTimeoutMs).unref();
    try {
      const sent = h2.ping((err) => {
        clearTimeout(timer);
        if (err) this.drop(s, `PING failed: ${err.message}`, true);
      });
      if (!sent) clearTimeout(timer);
    } catch {
      clearTimeout(timer); // the session is closing: nothing to keep alive
    }
  }

  private release(s: Session): void {
    s.open--;
    s.reserved--;
    this.maybeIdle(s);
  }

  private maybeIdle(s: Session): void {
    if (s.reserved > 0 || !s.pooled || s.idle) return;
    s.idle = setTimeout(() => this.drop(s, 'idle'), this.idleMs).unref();
  }

  /** Out of the pool and closed: gracefully (open streams finish) unless the peer is dead. */
  private drop(s: Session, why: string, dead = false): void {
    if (dead)
      this.warn.warn('hbone_peer_dead', { session: s.key, why, streams: s.open }, 'HBONE session closed: the peer stopped answering');
    else this.opts.log.debug({ session: s.key, why }, 'HBONE session closed');
    this.forget(s);
    if (s.h2 && !s.h2.destroyed) {
      if (s.open === 0 || dead) s.h2.destroy();
      else s.h2.close();
    }
  }

  /** Takes a session out of the pool: no new streams; open ones finish. */
  private forget(s: Session): void {
    s.pooled = false;
    clearTimeout(s.idle);
    clearInterval(s.ping);
    const list = (this.sessions.get(s.key) ?? []).filter((x) => x !== s);
    if (list.length) this.sessions.set(s.key, list);
    else this.sessions.delete(s.key);
  }
}
