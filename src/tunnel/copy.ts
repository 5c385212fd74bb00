// Byte copy between two duplex streams (TCP sockets, HTTP/2 CONNECT
// streams): backpressure through pipe(), half-close carried across (the end
// of one direction ends only that direction — for an HTTP/2 stream that is
// END_STREAM, never a reset), and an error on either side tears down both.
// A side that closes while the other still has something to say leaves
// that input nowhere to go (a paused socket would then never see its end
// and stay open): the other side is closed too — at once if the closing
// side was aborted, after flushing what it was handed if that side ended
// cleanly. An HTTP/2 stream reset even with NO_ERROR is such a close.
// The promise always settles: a side already closed when the copy starts
// (a peer that reset in between) counts as closed, not as a wait forever.
import type { Duplex } from 'node:stream';

export interface CopyResult {
  sent: number;
  received: number;
  error?: Error;
}

/** Copies a↔b until both are closed; a→b bytes are `sent`, b→a `received`. */
export function copyBidirectional(a: Duplex, b: Duplex, onError: (err: Error) => void = () => undefined): Promise<CopyResult> {
  return new Promise((resolve) => {
    const r: CopyResult = { sent: 0, received: 0 };
    let closed = 0;
    const done = (): void => {
      if (++closed === 2) resolve(r);
    };
    const fail = (err: Error): void => {
      if (!r.error) {
        r.error = err;
        onError(err);
      }
      a.destroy();
      b.destroy();
    };
    a.on('data', (d: Buffer) => {
      r.sent += d.length;
    });
    b.on('data', (d: Buffer) => {
      r.received += d.length;
    });
    const closedBy = (s: Duplex, other: Duplex) => (): void => {
      if (!other.readableEnded && !other.destroyed) {
        if (!s.readableEnded || other.writableFinished) other.destroy();
        else other.once('finish', () => other.destroy()).once('error', () => other.destroy());
      }
      done();
    };
    for (const [s, other] of [
      [a, b],
      [b, a],
    ] as const) {
      s.on('error', fail);
      if (s.closed) queueMicrotask(closedBy(s, other));
      else s.once('close', closedBy(s, other));
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
