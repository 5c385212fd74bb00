// One fuzzing connection to a pod's :15008: TCP from inside another pod's
// netns (marked as the tunnel's own socket, so capture leaves it alone and
// it reaches the destination as a workload's would), a mutual-TLS handshake
// with a mesh certificate (the project's client TLS settings: TLS 1.3, ALPN
// h2), then raw HTTP/2 bytes. A PING round trip after each sequence is the
// sync point: once its ACK is back the server has read everything before it.
import type tls from 'node:tls';
import { connect as tlsConnect } from 'node:tls';
import type { Netns } from '../../src/datapath/netns';
import { FLAG, FRAME, type Frame, FrameReader, frame, PREFACE, settingsPayload } from './h2-wire';
import { StreamIds } from './hbone-ops';

export type SyncResult = 'ok' | 'closed' | 'timeout';

/** Counts of what the server sent back, for the campaign's summary. */
export interface ServerReplies {
  headers: number;
  rst: number;
  goaway: number;
  data: number;
}

export class FuzzConn {
  readonly ids = new StreamIds();
  sequences = 0;
  private readonly reader = new FrameReader();
  private readonly answered = new Set<number>();
  private readonly waiters = new Set<() => void>();
  private pingSeq = 0;
  private readonly pings = new Map<string, (r: SyncResult) => void>();
  private closedFlag = false;
  goaway = false;

  private constructor(
    private readonly socket: tls.TLSSocket,
    private readonly replies: ServerReplies,
  ) {
    socket.on('data', (d: Buffer) => {
      for (const f of this.reader.push(d)) this.onFrame(f);
    });
    socket.on('error', () => undefined); // a reset is an expected answer to a fuzz sequence
    socket.on('close', () => {
      this.closedFlag = true;
      for (const done of this.pings.values()) done('closed');
      this.pings.clear();
      for (const w of this.waiters) w();
    });
  }

  /** Connects and completes TLS and the HTTP/2 preface; rejects if the handshake fails within timeoutMs. */
  static open(
    ns: Netns,
    ip: string,
    port: number,
    tlsOptions: tls.ConnectionOptions,
    replies: ServerReplies,
    timeoutMs: number,
  ): Promise<FuzzConn> {
    return new Promise((resolve, reject) => {
      const raw = ns.connect(ip, port, { allowHalfOpen: false });
      const socket = tlsConnect({ ...tlsOptions, socket: raw });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TLS to ${ip}:${port} not done within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      });
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        if (socket.alpnProtocol !== 'h2') {
          socket.destroy();
          reject(new Error(`ALPN ${String(socket.alpnProtocol)}, not h2`));
          return;
        }
        socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, settingsPayload([]))]));
        resolve(new FuzzConn(socket, replies));
      });
    });
  }

  get closed(): boolean {
    return this.closedFlag || this.goaway || this.socket.destroyed;
  }

  write(b: Buffer): void {
    if (!this.closed) this.socket.write(b);
  }

  /** Sends a PING and waits for its ACK. */
  sync(timeoutMs: number): Promise<SyncResult> {
    if (this.closed) return Promise.resolve('closed');
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(0xf022, 0);
    payload.writeUInt32BE(++this.pingSeq, 4);
    const key = payload.toString('hex');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pings.delete(key);
        resolve('timeout');
      }, timeoutMs);
      this.pings.set(key, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.write(frame(FRAME.PING, 0, 0, payload));
    });
  }

  /** Waits until the server answered streamId (HEADERS or RST_STREAM), closed, or timeoutMs passed. */
  awaitAnswer(streamId: number, timeoutMs: number): Promise<void> {
    if (this.closed || this.answered.has(streamId)) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (!this.closed && !this.answered.has(streamId)) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve();
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case FRAME.SETTINGS:
        if (!(f.flags & FLAG.ACK)) this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        break;
      case FRAME.PING:
        if (f.flags & FLAG.ACK) {
          const key = f.payload.toString('hex');
          this.pings.get(key)?.('ok');
          this.pings.delete(key);
        }
        break;
      case FRAME.GOAWAY:
        // Nothing after a GOAWAY is read by the server: the connection is done for the fuzzer.
        this.goaway = true;
        this.replies.goaway++;
        for (const done of this.pings.values()) done('closed');
        this.pings.clear();
        for (const w of [...this.waiters]) w();
        break;
      case FRAME.HEADERS:
      case FRAME.RST_STREAM:
        if (f.type === FRAME.HEADERS) this.replies.headers++;
        else this.replies.rst++;
        this.answered.add(f.streamId);
        for (const w of [...this.waiters]) w();
        break;
      case FRAME.DATA:
        this.replies.data++;
        break;
      default:
        break;
    }
  }
}
