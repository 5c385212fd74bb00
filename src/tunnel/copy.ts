// Byte copy between two sockets: backpressure through pipe(), half-close
// carried across (a FIN one way ends only that direction), and an error on
// either side tears down both.
import type net from 'node:net';

export interface CopyResult { sent: number; received: number; error?: Error }

/** Copies a↔b until both directions ended; resolves with the byte counts (a→b = sent). */
export function copyBidirectional(a: net.Socket, b: net.Socket): Promise<CopyResult> {
  return new Promise((resolve) => {
    let error: Error | undefined;
    let closed = 0;
    const done = (): void => {
      if (++closed === 2) resolve({ sent: b.bytesWritten, received: a.bytesWritten, error });
    };
    const fail = (err: Error): void => {
      error ??= err;
      a.destroy();
      b.destroy();
    };
    a.on('error', fail).on('close', done);
    b.on('error', fail).on('close', done);
    a.pipe(b);
    b.pipe(a);
  });
}
