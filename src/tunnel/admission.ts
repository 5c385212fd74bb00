// Admission on one pod's :15008, before any TLS work: what a peer can make
// the tunnel hold without proving who it is must be bounded. A TCP
// connection costs a socket and a TLS state until its handshake ends, so
// handshakes in progress are capped per pod and per source address (one
// source must not fill the pod's slots and lock honest peers out), and open
// connections are capped per source address. Over a cap the connection is
// closed at once; the caller counts it.
import type net from 'node:net';

export type Refusal = 'handshake_cap' | 'source_handshake_cap' | 'source_cap';

export interface AdmissionLimits {
  maxPendingHandshakes: number;
  maxPendingHandshakesPerSource: number;
  maxConnectionsPerSource: number;
}

interface Conn {
  src: string;
  pending: boolean;
}

export class Admission {
  private pending = 0;
  private readonly pendingBySource = new Map<string, number>();
  private readonly openBySource = new Map<string, number>();
  /** By `address:port` of the peer, the key the TLS socket over the same connection also has. */
  private readonly conns = new Map<string, Conn>();

  constructor(private readonly limits: AdmissionLimits) {}

  /**
   * Admits a new connection (counted until it closes) or says which cap it
   * is over. The caller closes refused sockets.
   */
  admit(s: net.Socket): Refusal | undefined {
    const src = s.remoteAddress;
    const key = keyOf(s);
    if (!src || !key) return undefined; // already reset by the peer: its 'close' follows, nothing to hold
    if ((this.openBySource.get(src) ?? 0) >= this.limits.maxConnectionsPerSource) return 'source_cap';
    if ((this.pendingBySource.get(src) ?? 0) >= this.limits.maxPendingHandshakesPerSource) return 'source_handshake_cap';
    if (this.pending >= this.limits.maxPendingHandshakes) return 'handshake_cap';
    const c: Conn = { src, pending: true };
    this.conns.set(key, c);
    bump(this.openBySource, src, 1);
    bump(this.pendingBySource, src, 1);
    this.pending++;
    s.once('close', () => {
      if (this.conns.get(key) === c) this.conns.delete(key);
      this.settle(c);
      bump(this.openBySource, src, -1);
    });
    return undefined;
  }

  /** The TLS handshake of the connection with this peer address ended (either way): it no longer counts as pending. */
  handshakeDone(s: { remoteAddress?: string; remotePort?: number }): void {
    const key = keyOf(s);
    const c = key ? this.conns.get(key) : undefined;
    if (c) this.settle(c);
  }

  stats(): { pending: number; open: number; sources: number } {
    let open = 0;
    for (const n of this.openBySource.values()) open += n;
    return { pending: this.pending, open, sources: this.openBySource.size };
  }

  private settle(c: Conn): void {
    if (!c.pending) return;
    c.pending = false;
    this.pending--;
    bump(this.pendingBySource, c.src, -1);
  }
}

function keyOf(s: { remoteAddress?: string; remotePort?: number }): string | undefined {
  return s.remoteAddress && s.remotePort ? `${s.remoteAddress}:${s.remotePort}` : undefined;
}

/** Adds to a per-source count, dropping sources that reach zero (the maps hold only live peers). */
function bump(m: Map<string, number>, src: string, by: number): void {
  const n = (m.get(src) ?? 0) + by;
  if (n > 0) m.set(src, n);
  else m.delete(src);
}
