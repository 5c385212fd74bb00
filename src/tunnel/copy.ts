// Byte copy between two duplex streams (TCP sockets, HTTP/2 CONNECT
// streams): backpressure through pipe(), half-close carried across (the end
// of one direction ends only that direction — for an HTTP/2 stream that is
// END_STREAM, never a reset), and an error on either side tears down both.
// The promise always settles: a side already closed when the copy starts
// (a peer that reset in between) counts as closed, not as a wait forever.
import type { Duplex } from 'node:stream';

export interface CopyResult { sent: number; received: number; error?: Error }

/** Copies a↔b until both are closed; a→b bytes are `sent`, b→a `received`. */
export function copyBidirectional(a: Duplex, b: Duplex, onError: (err: Error) => void = () => undefined): Promise<CopyResult> {
  return new Promise((resolve) => {
    const r: CopyResult = { sent: 0, received: 0 };
    let closed = 0;
    const done = (): void => { if (++closed === 2) resolve(r); };
    const fail = (err: Error): void => {
      if (!r.error) {
        r.error = err;
        onError(err);
      }
      a.destroy();
      b.destroy();
    };
    a.on('data', (d: Buffer) => { r.sent += d.length; });
    b.on('data', (d: Buffer) => { r.received += d.length; });
    for (const s of [a, b]) {
      s.on('error', fail);
      if (s.closed) queueMicrotask(done);
      else s.once('close', done);
    }
    if (a.destroyed || b.destroyed) {
      a.destroy();
      b.destroy();
      return;
    }
    a.pipe(b);
    b.pipe(a);
  });
}
