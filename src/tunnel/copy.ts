// Byte copy between two duplex streams (TCP sockets, HTTP/2 CONNECT
// streams): backpressure through pipe(), half-close carried across (the end
// of one direction ends only that direction — for an HTTP/2 stream that is
// END_STREAM, never a reset), and an error on either side tears down both.
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
    a.on('error', fail).once('close', done);
    b.on('error', fail).once('close', done);
    a.pipe(b);
    b.pipe(a);
  });
}
