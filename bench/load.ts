// The client side of the steering benchmark, run inside the client pod
// (node dist/bench/load.js MODE IP PORT …); prints one JSON line.
//   probe  IP PORT                            the peer address the server saw
//   rr     IP PORT RATE WARMUP_S SECONDS      1 KiB → 1 KiB on one persistent
//          connection at a fixed rate. Open loop: request i is due at
//          t0 + i/RATE whatever happened before, and its latency runs from
//          that intended time, so a stall is charged to every request it
//          delayed (no coordinated omission). A worker thread paces the sends
//          with sub-millisecond sleeps; Node's own timers only tick in whole
//          milliseconds, which would swamp a ~100 µs round trip.
//   http   IP PORT HOST RATE WARMUP_S SECONDS  the same over HTTP/1.1
//          keep-alive: POST of a 1 KiB body, 1 KiB back (pipelined when an
//          answer is late, as the open loop requires)
//   conn   IP PORT CONCURRENCY SECONDS        connect + 1-byte exchange + close,
//          CONCURRENCY at a time, new ones started until SECONDS have passed
//   stream IP PORT SECONDS                    one connection, send as fast as
//          backpressure allows; the server's byte count is the result
//   streams IP PORT N SECONDS                 N such connections in parallel
//          (one process); the result is the sum of the servers' byte counts
import fs from 'node:fs';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { RR_SIZE } from './server';

const now = (): bigint => process.hrtime.bigint();
const usSince = (t: bigint): number => Number(now() - t) / 1e3;

function connect(ip: string, port: number, opts: { allowHalfOpen?: boolean } = {}): net.Socket {
  return net.connect({ host: ip, port, noDelay: true, ...opts });
}

function probe(ip: string, port: number): Promise<object> {
  return new Promise((resolve, reject) => {
    const s = connect(ip, port);
    let buf = '';
    s.setTimeout(5000, () => s.destroy(new Error('probe timed out')));
    s.on('data', (d) => {
      buf += d;
    });
    s.on('error', reject);
    s.on('close', () => {
      try {
        resolve(JSON.parse(buf) as object);
      } catch {
        reject(new Error(`probe got ${JSON.stringify(buf)}`));
      }
    });
  });
}

// The pacer, a worker thread: sleeps until each intended send time (the
// last SPIN_NS spent spinning, as a wake-up on a VM overshoots by tens of
// µs) and writes the request straight to the socket's fd, so neither the
// main thread's event loop nor a message hop delays a send. It records how
// late each send started (lag) for the report. Only the pacer writes; the
// main thread only reads.
const PACER = `
const fs = require('node:fs');
const { workerData } = require('node:worker_threads');
const { t0, intervalNs, count, fd, lagBuffer } = workerData;
const SPIN_NS = 60000;
const lag = new Float64Array(lagBuffer);
const cell = new Int32Array(new SharedArrayBuffer(4));
const request = Buffer.from(workerData.request);
const size = request.length;
const since = () => Number(process.hrtime.bigint() - t0);
for (let i = 0; i < count; i++) {
  const due = i * intervalNs;
  for (let left = due - since(); left > SPIN_NS; left = due - since()) Atomics.wait(cell, 0, 0, (left - SPIN_NS) / 1e6);
  while (since() < due);
  lag[i] = (since() - due) / 1e3;
  for (let off = 0; off < size;) {
    try { off += fs.writeSync(fd, request, off); }
    catch (err) { if (err.code !== 'EAGAIN') throw err; Atomics.wait(cell, 0, 0, 0.05); }
  }
}`;

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1))] ?? NaN;
}

/** Counts the complete responses in each chunk of a response byte stream; throws on a bad one. */
type Counter = (d: Buffer) => number;

function fixedSizeResponses(): Counter {
  let pending = 0;
  return (d) => {
    pending += d.length;
    const n = Math.floor(pending / RR_SIZE);
    pending -= n * RR_SIZE;
    return n;
  };
}

/** HTTP/1.1 responses framed by content-length (what bench/server.ts sends and the waypoint passes on). */
function http1Responses(): Counter {
  let buf: Buffer = Buffer.alloc(0);
  let bodyLeft = -1;
  return (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    let n = 0;
    for (;;) {
      if (bodyLeft < 0) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return n;
        const head = buf.subarray(0, end).toString('latin1');
        if (!head.startsWith('HTTP/1.1 200 ')) throw new Error(`http: answered ${JSON.stringify(head.split('\r\n')[0])}`);
        const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head)?.[1];
        if (length === undefined) throw new Error(`http: a response without content-length: ${JSON.stringify(head)}`);
        bodyLeft = Number(length);
        buf = buf.subarray(end + 4);
      }
      const take = Math.min(bodyLeft, buf.length);
      bodyLeft -= take;
      buf = buf.subarray(take);
      if (bodyLeft > 0) return n;
      bodyLeft = -1;
      n++;
    }
  };
}

function httpRequest(host: string): Buffer {
  const head = `POST / HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${RR_SIZE}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.alloc(RR_SIZE, 0x71)]);
}

async function rr(
  ip: string,
  port: number,
  rate: number,
  warmupS: number,
  seconds: number,
  framing: { request: Buffer; responses: Counter } = { request: Buffer.alloc(RR_SIZE, 0x71), responses: fixedSizeResponses() },
): Promise<object> {
  const s = connect(ip, port);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('rr: no file descriptor for the socket');
  // Timer slack is inherited by threads created later: 1 ns instead of 50 µs for the pacer's sleeps.
  try {
    fs.writeFileSync('/proc/self/timerslack_ns', '1');
  } catch {
    /* coarser pacing, still measured as lag */
  }
  const warmup = Math.round(rate * warmupS);
  const count = warmup + Math.round(rate * seconds);
  const intervalNs = 1e9 / rate;
  const lagBuffer = new SharedArrayBuffer(count * 8);
  const lat = new Float64Array(count - warmup);
  let received = 0;
  const t0 = now();
  const intended = (i: number): bigint => t0 + BigInt(Math.round(i * intervalNs));

  const pacer = new Worker(PACER, { eval: true, workerData: { t0, intervalNs, count, fd, request: framing.request, lagBuffer } });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`rr: ${received}/${count} responses after ${seconds + warmupS + 10} s`)),
        (seconds + warmupS + 10) * 1000,
      );
      pacer.on('error', reject);
      s.on('error', reject);
      s.on('close', () => reject(new Error(`rr: connection closed after ${received}/${count} responses`)));
      s.on('data', (d: Buffer) => {
        const t = now();
        let complete: number;
        try {
          complete = framing.responses(d);
        } catch (err) {
          return reject(err);
        }
        for (; complete > 0 && received < count; complete--, received++) {
          if (received >= warmup) lat[received - warmup] = Number(t - intended(received)) / 1e3;
        }
        if (received >= count) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    await pacer.terminate();
    s.destroy();
  }
  const lag = new Float64Array(lagBuffer).slice(warmup).sort();
  lat.sort();
  return {
    requests: lat.length,
    rate,
    p50_us: percentile(lat, 0.5),
    p90_us: percentile(lat, 0.9),
    p99_us: percentile(lat, 0.99),
    max_us: lat[lat.length - 1],
    sendLag_p50_us: percentile(lag, 0.5),
    sendLag_p99_us: percentile(lag, 0.99),
  };
}

function oneConnection(ip: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(ip, port);
    let got = 0;
    s.setTimeout(5000, () => s.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    s.once('connect', () => s.write('x'));
    s.on('data', (d: Buffer) => {
      got += d.length;
    });
    s.on('error', reject);
    // The server closes first; our FIN follows its own (allowHalfOpen is off).
    s.on('close', (hadError) => {
      if (hadError) return;
      if (got === 1) resolve();
      else reject(Object.assign(new Error('closed without the answer'), { code: 'ECLOSED' }));
    });
  });
}

async function conn(ip: string, port: number, concurrency: number, seconds: number): Promise<object> {
  const t0 = now();
  const deadline = t0 + BigInt(seconds * 1e9);
  let ok = 0;
  const errors: Record<string, number> = {};
  const worker = async (): Promise<void> => {
    while (now() < deadline) {
      try {
        await oneConnection(ip, port);
        ok++;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        errors[code] = (errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedS = usSince(t0) / 1e6;
  return { ok, failed: Object.values(errors).reduce((a, b) => a + b, 0), errors, elapsed_s: elapsedS, per_s: ok / elapsedS };
}

interface StreamResult {
  bytes: number;
  elapsed_s: number;
  mib_per_s: number;
}

async function stream(ip: string, port: number, seconds: number): Promise<StreamResult> {
  const s = connect(ip, port, { allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const t0 = now();
  const deadline = t0 + BigInt(seconds * 1e9);
  const chunk = Buffer.alloc(64 * 1024, 0x73);
  let written = 0;
  let answer = '';
  const result = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => s.destroy(new Error('stream: no byte count from the server')), (seconds + 30) * 1000);
    s.on('data', (d) => {
      answer += d;
    });
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
  const pump = (): void => {
    while (now() < deadline) {
      written += chunk.length;
      if (!s.write(chunk)) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  pump();
  const counted = Number((await result).trim());
  const elapsedS = usSince(t0) / 1e6;
  if (!Number.isFinite(counted) || counted !== written)
    throw new Error(`stream: wrote ${written} bytes, server counted ${JSON.stringify(answer)}`);
  return { bytes: counted, elapsed_s: elapsedS, mib_per_s: counted / elapsedS / 2 ** 20 };
}

async function streams(ip: string, port: number, n: number, seconds: number): Promise<object> {
  const each = await Promise.all(Array.from({ length: n }, () => stream(ip, port, seconds)));
  const bytes = each.reduce((a, r) => a + r.bytes, 0);
  const elapsedS = Math.max(...each.map((r) => r.elapsed_s));
  return {
    streams: n,
    bytes,
    elapsed_s: elapsedS,
    mib_per_s: bytes / elapsedS / 2 ** 20,
    per_stream_mib_per_s: each.map((r) => r.mib_per_s),
  };
}

async function main(argv: string[]): Promise<object> {
  const usage = 'usage: load probe|rr|http|conn|stream|streams IP PORT …';
  const [mode, ip, portArg, ...rest] = argv;
  const port = Number(portArg);
  if (ip === undefined || !Number.isInteger(port)) throw new Error(usage);
  /** The i-th number after IP PORT. */
  const n = (i: number, name: string): number => {
    const v = Number(rest[i]);
    if (!Number.isFinite(v)) throw new Error(`${mode}: ${name} must be a number, got ${rest[i]} (${usage})`);
    return v;
  };
  switch (mode) {
    case 'probe':
      return probe(ip, port);
    case 'rr':
      return rr(ip, port, n(0, 'RATE'), n(1, 'WARMUP_S'), n(2, 'SECONDS'));
    case 'http': {
      const host = rest.shift() ?? '';
      return rr(ip, port, n(0, 'RATE'), n(1, 'WARMUP_S'), n(2, 'SECONDS'), { request: httpRequest(host), responses: http1Responses() });
    }
    case 'conn':
      return conn(ip, port, n(0, 'CONCURRENCY'), n(1, 'SECONDS'));
    case 'stream':
      return stream(ip, port, n(0, 'SECONDS'));
    case 'streams':
      return streams(ip, port, n(0, 'N'), n(1, 'SECONDS'));
    default:
      throw new Error(usage);
  }
}

main(process.argv.slice(2)).then(
  (r) => {
    console.log(JSON.stringify(r));
    process.exit(0);
  },
  (err: Error) => {
    console.error(err.stack ?? String(err));
    process.exit(1);
  },
);
