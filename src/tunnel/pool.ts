// HBONE client sessions: HTTP/2 over mutual TLS to <pod IP>:15008, dialed
// from inside the source pod (so the destination sees the pod's own address,
// which IP-block policies match), pooled by (source identity, expected
// destination identities, destination IP, source IP),
// many CONNECT streams per session so a new pod connection costs no TLS
// handshake. A session takes at most `maxStreams`; past that a new one
// opens. Sessions are PINGed every 10 s and dropped after 20 s without an
// answer, and closed after 5 minutes without streams.
import http2 from 'node:http2';
import type { Dialer } from '../agent/netns';
import tls from 'node:tls';
import type { CertProvider } from '../identity/cert-manager';
import { clientTlsOptions } from '../identity/tls';
import type { Logger } from '../observability/log';

export const HBONE_PORT = 15008;
export const STREAM_WINDOW = 4 << 20;
export const CONNECTION_WINDOW = 16 << 20;
export const MAX_FRAME = 1 << 20;

export interface PoolOptions {
  certs: CertProvider;
  log: Logger;
  maxStreams?: number;
  idleMs?: number;
  pingEveryMs?: number;
  pingTimeoutMs?: number;
}

interface Session {
  key: string;
  h2: http2.ClientHttp2Session;
  streams: number;
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
  private readonly maxStreams: number;
  private readonly idleMs: number;
  private readonly pingEveryMs: number;
  private readonly pingTimeoutMs: number;
  /** Sessions (= TLS handshakes) opened so far. */
  sessionsOpened = 0;

  constructor(private readonly opts: PoolOptions) {
    this.maxStreams = opts.maxStreams ?? 100;
    this.idleMs = opts.idleMs ?? 5 * 60_000;
    this.pingEveryMs = opts.pingEveryMs ?? 10_000;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 20_000;
  }

  /** Opens one CONNECT stream; resolves once the peer answered 200, rejects on anything else. */
  async connect(target: ConnectTarget, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    try {
      return await this.connectOnce(target, headers);
    } catch (err) {
      // REFUSED_STREAM means the peer never saw the request (its session was
      // going away): safe to send again, on another session.
      if (!(err as { refused?: boolean }).refused) throw err;
      return this.connectOnce(target, headers);
    }
  }

  private async connectOnce(target: ConnectTarget, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    let s = await this.session(target);
    // The session may have been closed (drain, GOAWAY) while we waited: take another.
    while (s.h2.closed || s.h2.destroyed) s = await this.session(target);
    s.streams++;
    clearTimeout(s.idle);
    const stream = s.h2.request({ ':method': 'CONNECT', ...headers }, { endStream: false });
    stream.once('close', () => this.release(s));
    return new Promise((resolve, reject) => {
      let settled = false;
      const onError = (err: Error): void => {
        if (settled) return;
        settled = true;
        if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
          this.forget(s);
          reject(Object.assign(err, { refused: true }));
        } else reject(err);
      };
      stream.once('error', onError);
      // A stream can also end without an error and without an answer (its
      // session closed before sending it): never processed, so retryable.
      stream.once('close', () => {
        if (settled) return;
        settled = true;
        this.forget(s);
        reject(Object.assign(new Error(`HBONE stream closed before an answer (code ${stream.rstCode})`), { code: 'AMBIT_E_HBONE_CLOSED', refused: true }));
      });
      stream.once('response', (h) => {
        if (settled) return;
        settled = true;
        stream.off('error', onError);
        const status = Number(h[':status']);
        if (status === 200) return resolve(stream);
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(Object.assign(new Error(`peer answered ${status} to CONNECT ${String(headers[':authority'])}`), { code: 'AMBIT_E_HBONE_STATUS', status }));
      });
    });
  }

  /** Open sessions and the streams they carry. */
  stats(): { sessions: number; streams: number } {
    let sessions = 0;
    let streams = 0;
    for (const list of this.sessions.values()) {
      sessions += list.length;
      for (const s of list) streams += s.streams;
    }
    return { sessions, streams };
  }

  close(): void {
    for (const list of this.sessions.values()) for (const s of list) this.drop(s, 'pool closed');
  }

  private async session(t: ConnectTarget): Promise<Session> {
    const key = `${t.srcIdentity}|${[...t.identities].sort().join(',')}|${t.dstIp}|${t.srcIp}`;
    const usable = (): Session | undefined => (this.sessions.get(key) ?? []).find((s) => s.streams < this.maxStreams && !s.h2.closed && !s.h2.destroyed);
    const found = usable();
    if (found) return found;
    const cert = await this.opts.certs.fetch(t.srcIdentity);
    // Another connection may have opened one while the certificate was fetched.
    const opened = usable();
    if (opened) return opened;
    const tcp = t.dial(t.dstIp, HBONE_PORT, { allowHalfOpen: false });
    tcp.setKeepAlive(true, 30_000);
    tcp.setNoDelay(true);
    const h2 = http2.connect(`https://${t.dstIp}:${HBONE_PORT}`, {
      createConnection: () => tls.connect({ ...clientTlsOptions(cert, t.identities), socket: tcp }),
      settings: { initialWindowSize: STREAM_WINDOW, maxFrameSize: MAX_FRAME, enablePush: false },
      peerMaxConcurrentStreams: this.maxStreams,
    });
    const s: Session = { key, h2, streams: 0 };
    this.sessionsOpened++;
    this.sessions.set(key, [...(this.sessions.get(key) ?? []), s]);
    h2.once('connect', () => {
      h2.setLocalWindowSize(CONNECTION_WINDOW);
      s.ping = setInterval(() => this.keepalive(s), this.pingEveryMs).unref();
    });
    h2.once('close', () => this.forget(s));
    h2.on('error', (err) => this.opts.log.warn({ peer: t.dstIp, err: err.message, code: (err as NodeJS.ErrnoException).code }, 'HBONE session failed'));
    h2.on('goaway', () => this.forget(s));
    return s;
  }

  private keepalive(s: Session): void {
    const timer = setTimeout(() => this.drop(s, `no PING answer in ${this.pingTimeoutMs} ms`), this.pingTimeoutMs).unref();
    const sent = s.h2.ping((err) => { clearTimeout(timer); if (err) this.drop(s, `PING failed: ${err.message}`); });
    if (!sent) clearTimeout(timer);
  }

  private release(s: Session): void {
    s.streams--;
    if (s.streams === 0) s.idle = setTimeout(() => this.drop(s, 'idle'), this.idleMs).unref();
  }

  private drop(s: Session, why: string): void {
    this.opts.log.debug({ session: s.key, why }, 'HBONE session closed');
    this.forget(s);
    if (!s.h2.destroyed) s.h2.close();
  }

  /** Takes a session out of the pool: no new streams; open ones finish. */
  private forget(s: Session): void {
    clearTimeout(s.idle);
    clearInterval(s.ping);
    const list = (this.sessions.get(s.key) ?? []).filter((x) => x !== s);
    if (list.length) this.sessions.set(s.key, list);
    else this.sessions.delete(s.key);
  }
}
