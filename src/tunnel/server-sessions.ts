// The HBONE server sessions of one pod: each is bounded in time when it
// carries nothing. A peer that finished TLS but never sent the HTTP/2
// preface is closed after the handshake timeout (the preface is part of
// the handshake as far as a peer's cost to us goes); a session with no
// open stream for the idle time gets GOAWAY. Every session is PINGed: a
// peer that vanished without a FIN we could read (its socket stopped being
// read while a stream was busy, or the path died) does not answer, and its
// session is destroyed with its streams, so the fds and the app connections
// it held are given back. Closing the set (the pod left the tunnel) sends
// GOAWAY to all: no new streams, open ones finish.
import type http2 from 'node:http2';

export interface SessionLimits {
  serverHandshakeMs: number;
  sessionIdleMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}

export type Expiry = 'preface_timeout' | 'session_idle' | 'keepalive_timeout';

interface Tracked {
  streams: number;
  timer?: NodeJS.Timeout;
  ping?: NodeJS.Timeout;
  pingTimer?: NodeJS.Timeout;
}

export class ServerSessions {
  private readonly sessions = new Map<http2.ServerHttp2Session, Tracked>();
  private closed = false;

  constructor(
    private readonly limits: SessionLimits,
    /** A session ended by us for a reason a peer caused (counted and logged by the caller). */
    private readonly onExpired: (session: http2.ServerHttp2Session, reason: Expiry) => void,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  add(session: http2.ServerHttp2Session): void {
    if (this.closed) {
      session.close();
      return;
    }
    const t: Tracked = { streams: 0 };
    this.sessions.set(session, t);
    session.once('close', () => {
      clearTimeout(t.timer);
      clearInterval(t.ping);
      clearTimeout(t.pingTimer);
      this.sessions.delete(session);
    });
    t.ping = setInterval(() => this.keepalive(session, t), this.limits.keepaliveIntervalMs).unref();
    // The first SETTINGS is the peer's preface: until then it is still handshaking.
    t.timer = setTimeout(() => this.expire(session, 'preface_timeout', true), this.limits.serverHandshakeMs).unref();
    session.once('remoteSettings', () => {
      if (t.streams === 0) this.idle(session, t);
    });
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      t.streams++;
      clearTimeout(t.timer);
      stream.once('close', () => {
        if (--t.streams === 0 && !session.closed) this.idle(session, t);
      });
    });
  }

  /** GOAWAY to every session; later ones are closed as they come. */
  close(): void {
    this.closed = true;
    for (const [s, t] of this.sessions) {
      clearTimeout(t.timer);
      if (!s.closed && !s.destroyed) s.close();
    }
  }

  private idle(session: http2.ServerHttp2Session, t: Tracked): void {
    clearTimeout(t.timer);
    t.timer = setTimeout(() => this.expire(session, 'session_idle', false), this.limits.sessionIdleMs).unref();
  }

  private keepalive(session: http2.ServerHttp2Session, t: Tracked): void {
    if (session.destroyed || t.pingTimer) return;
    const expired = (): void => {
      t.pingTimer = undefined;
      this.expire(session, 'keepalive_timeout', true);
    };
    t.pingTimer = setTimeout(expired, this.limits.keepaliveTimeoutMs).unref();
    try {
      // An error here means the session is going anyway: its 'close' clears the timer.
      const sent = session.ping((err) => {
        if (!err) {
          clearTimeout(t.pingTimer);
          t.pingTimer = undefined;
        }
      });
      if (!sent) {
        clearTimeout(t.pingTimer);
        t.pingTimer = undefined;
      }
    } catch {
      clearTimeout(t.pingTimer);
      expired();
    }
  }

  private expire(session: http2.ServerHttp2Session, reason: Expiry, hard: boolean): void {
    if (session.destroyed) return;
    this.onExpired(session, reason);
    // A peer that never spoke HTTP/2 would not read a GOAWAY either.
    if (hard) session.destroy();
    else session.close();
  }
}
