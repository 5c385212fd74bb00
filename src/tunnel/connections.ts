// The connections a tunnel process carries right now, for the admin API's
// GET /connections (`ambit config connections`). A connection is added once
// it carries bytes (the policies allowed it, the far side accepted) and
// removed when its copy settles — which it always does, whichever side
// closes or fails (./copy.ts) — so the registry is exactly the set of open
// connections, bounded by what the tunnel's caps let open. Nothing here runs
// per chunk: byte counts are read, when asked, from the counters Node keeps
// on the pod-side socket anyway.
import type net from 'node:net';

export type ConnectionDirection = 'inbound' | 'outbound';
export type ConnectionProtocol = 'HBONE' | 'plaintext';

/** One open connection as the admin API lists it. */
export interface ConnectionInfo {
  /** The served pod the connection belongs to: its uid, and name and namespace to show. */
  podUid: string;
  pod: string;
  namespace: string;
  direction: ConnectionDirection;
  /** ip:port of the client; inbound HBONE: what the peer forwarded when it names the verified address, else that address. */
  source: string;
  /** Outbound: the pod's own; inbound HBONE: the peer's verified SPIFFE id; inbound plaintext: none. */
  sourceIdentity?: string;
  /** ip:port the client dialed (a service VIP stays a VIP). */
  destination: string;
  destinationService?: string;
  destinationIdentity?: string;
  protocol: ConnectionProtocol;
  /** The far end of this node's leg: the HBONE server (ip:15008) or plain upstream outbound, the client's node inbound. */
  peer: string;
  /** The trace id both nodes log for the connection (HBONE). */
  connId?: string;
  /** ISO 8601. */
  startedAt: string;
  bytesToDestination: number;
  bytesToSource: number;
  /** The tunnel worker carrying it (`--workers N`); absent when the tunnel runs in the agent. */
  worker?: number;
}

/** What a connection's handler knows when it starts copying; the rest is filled in when listed. */
export type ListedConnection = Omit<ConnectionInfo, 'startedAt' | 'bytesToDestination' | 'bytesToSource' | 'worker'>;

/**
 * Which end of the connection a socket is: `source` reads what the client
 * sends (outbound: the app's socket), `destination` writes it (inbound: the
 * socket to the app).
 */
export type SocketSide = 'source' | 'destination';

interface Entry {
  facts: ListedConnection;
  startedMs: number;
  socket: net.Socket;
  side: SocketSide;
}

/** Rows one process answers at most: a listing of a busy node stays a reasonable message. */
export const MAX_LISTED = 10_000;

export class ConnectionRegistry {
  private readonly open = new Set<Entry>();

  get size(): number {
    return this.open.size;
  }

  /** Registers an open connection; the function returned removes it (calling it twice is harmless). */
  add(facts: ListedConnection, socket: net.Socket, side: SocketSide): () => void {
    const entry: Entry = { facts, startedMs: Date.now(), socket, side };
    this.open.add(entry);
    return () => {
      this.open.delete(entry);
    };
  }

  /** The open connections, oldest first, at most limit of them; total counts them all. */
  list(limit = MAX_LISTED): { connections: ConnectionInfo[]; total: number } {
    const connections: ConnectionInfo[] = [];
    for (const e of this.open) {
      if (connections.length >= limit) break;
      const { bytesRead, bytesWritten } = e.socket;
      connections.push({
        ...e.facts,
        startedAt: new Date(e.startedMs).toISOString(),
        bytesToDestination: e.side === 'source' ? bytesRead : bytesWritten,
        bytesToSource: e.side === 'source' ? bytesWritten : bytesRead,
      });
    }
    return { connections, total: this.open.size };
  }
}

/** What a data plane answers: the rows that arrived, and which processes did not answer in time. */
export interface ConnectionList {
  connections: ConnectionInfo[];
  /** Open connections counted; more than listed when a process holds over MAX_LISTED. */
  total: number;
  /** Processes whose connections are missing from the list, each with why. */
  unanswered: string[];
}
