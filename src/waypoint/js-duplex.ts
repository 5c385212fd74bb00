// A stream handed to node:http or node:http2 as their "socket" after its
// first bytes were read and put back (the sniff for the HTTP/2 preface).
// Both servers read a net.Socket's native handle directly, past the bytes
// put back, and node:http's writes to an HTTP/2 stream corrupt the first
// bytes of a response (Node 20); a plain JavaScript Duplex in front avoids
// both, at the cost of one copy per chunk.
import { Duplex } from 'node:stream';

/** A JavaScript-only Duplex over s, with the setTimeout the HTTP servers call. */
export function jsDuplex(s: Duplex & { setTimeout?: (ms: number, cb?: () => void) => unknown }): Duplex {
  const d = new Duplex({
    read() {
      s.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      s.write(chunk, cb);
    },
    final(cb) {
      s.end();
      cb();
    },
    destroy(err, cb) {
      s.destroy(err ?? undefined);
      cb(err);
    },
  });
  s.on('data', (c: Buffer) => {
    if (!d.push(c)) s.pause();
  });
  s.once('end', () => d.push(null));
  s.once('close', () => d.destroy());
  s.on('error', (err) => d.destroy(err));
  Object.assign(d, {
    setTimeout(ms: number, cb?: () => void): Duplex {
      s.setTimeout?.(ms, () => d.emit('timeout'));
      if (cb) d.once('timeout', cb);
      return d;
    },
    setNoDelay: () => d,
    setKeepAlive: () => d,
  });
  return d;
}
