// A tiny app run inside test pods (node dist/test/helpers/podapp.js …).
//   whoami PORT        listen on 0.0.0.0:PORT; on each connection send one
//                      JSON line {local, remote} and then echo what arrives
//   dial IP PORT N C   open N connections, C at a time; each reads the first
//                      line and records what getpeername() said; prints one
//                      JSON summary line
//   sink PORT          listen on 0.0.0.0:PORT; read each connection to its end
//                      (the client's FIN), then answer {"got": bytes} and close
//   halfclose IP PORT TEXT
//                      send TEXT, shut down writing, print what comes back
//   stream IP PORT MIB SECONDS
//                      one connection to a whoami server: send MIB MiB paced
//                      over SECONDS, count the echo; prints {sent, echoed, ms}
//   http PORT NAME [FAIL_PERCENT]
//                      HTTP/1.1 and cleartext HTTP/2 on 0.0.0.0:PORT (told
//                      apart by the h2 preface): answers {name, method, path,
//                      host, canary} as JSON; exactly FAIL_PERCENT % of the
//                      requests (spread evenly) get 503; ?sleep=MS answers
//                      after MS; /garbage answers bytes that are not HTTP;
//                      gRPC requests (application/grpc) get a gRPC answer
//                      with grpc-status 0 in the trailers and x-name
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { jsDuplex } from '../../src/waypoint/js-duplex';

interface DialResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  peers: Record<string, number>;
  firstLines: Record<string, number>;
}

function whoami(port: number): void {
  const server = net.createServer((s) => {
    s.write(`${JSON.stringify({ local: `${s.localAddress}:${s.localPort}`, remote: `${s.remoteAddress}:${s.remotePort}` })}\n`);
    s.pipe(s);
    s.on('error', () => undefined);
  });
  server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}

function dialOne(ip: string, port: number, timeoutMs: number): Promise<{ peer: string; line: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    let buf = '';
    let peer = '';
    s.setTimeout(timeoutMs, () => s.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    s.on('connect', () => {
      peer = `${s.remoteAddress}:${s.remotePort}`;
    });
    s.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.end();
        resolve({ peer, line: buf.slice(0, nl) });
      }
    });
    s.on('error', reject);
    s.on('close', () => reject(Object.assign(new Error('closed before a line'), { code: 'ECLOSED' })));
  });
}

/** Drops the remote port from a whoami line: per-connection noise in a summary. */
function normalise(line: string): string {
  try {
    const o = JSON.parse(line) as { remote?: string };
    if (o.remote) o.remote = o.remote.replace(/:\d+$/, '');
    return JSON.stringify(o);
  } catch {
    return line;
  }
}

async function dial(ip: string, port: number, n: number, concurrency: number, timeoutMs: number): Promise<void> {
  const r: DialResult = { ok: 0, failed: 0, errors: {}, peers: {}, firstLines: {} };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      try {
        const { peer, line } = await dialOne(ip, port, timeoutMs);
        r.ok++;
        r.peers[peer] = (r.peers[peer] ?? 0) + 1;
        const key = normalise(line);
        r.firstLines[key] = (r.firstLines[key] ?? 0) + 1;
      } catch (err) {
        r.failed++;
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        r.errors[code] = (r.errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  console.log(JSON.stringify(r));
}

function stream(ip: string, port: number, mib: number, seconds: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const total = mib * 1024 * 1024;
  const started = Date.now();
  let sent = 0;
  let received = 0;
  let firstLine = true;
  const s = net.connect({ host: ip, port });
  s.on('data', (d: Buffer) => {
    if (firstLine) {
      const nl = d.indexOf(10);
      if (nl < 0) return;
      firstLine = false;
      d = d.subarray(nl + 1);
    }
    received += d.length;
    if (received >= total) s.end();
  });
  // Closed early (reset, or ended by the far side) or done: report once and stop sending.
  s.on('close', () => {
    clearInterval(tick);
    console.log(JSON.stringify({ sent, echoed: received, ms: Date.now() - started }));
  });
  s.on('error', (err) =>
    console.log(JSON.stringify({ sent, echoed: received, error: (err as NodeJS.ErrnoException).code ?? err.message })),
  );
  const tick = setInterval(() => {
    if (s.destroyed) return;
    // Paced: by now, elapsed/seconds of the total should be out.
    const due = Math.min(total, Math.ceil((total * (Date.now() - started)) / (seconds * 1000)));
    while (sent < due) {
      s.write(chunk.subarray(0, Math.min(chunk.length, total - sent)));
      sent += Math.min(chunk.length, total - sent);
    }
    if (sent >= total) clearInterval(tick);
  }, 50);
}

function sink(port: number): void {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
    });
    s.on('end', () => s.end(`${JSON.stringify({ got })}\n`));
    s.on('error', () => undefined);
  });
  server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}

function halfclose(ip: string, port: number, text: string): void {
  const s = net.connect({ host: ip, port, allowHalfOpen: true });
  let reply = '';
  s.on('connect', () => s.end(text));
  s.on('data', (d) => {
    reply += d;
  });
  s.on('close', () => console.log(JSON.stringify({ reply: reply.trim() })));
  s.on('error', (err) => console.log(JSON.stringify({ error: (err as NodeJS.ErrnoException).code ?? err.message })));
}

/** logRequests: one JSON line per request on stdout ({ request, host }), for tests that must see what reached the app. */
function httpApp(port: number, name: string, failPercent: number, logRequests = false): void {
  let n = 0;
  // Requests being handled at once: each answer says how many were (x-in-flight), so a test can see what a limit let through.
  let inFlight = 0;
  const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    inFlight++;
    res.once('close', () => inFlight--);
    const url = new URL(req.url ?? '/', 'http://x');
    const sleep = Math.min(60_000, Number(url.searchParams.get('sleep') ?? 0) || 0);
    req.resume();
    req.on('end', () => {
      setTimeout(() => {
        n++;
        // Exactly failPercent % of every 100 requests, spread evenly, so a test's odds do not depend on luck.
        const fail = Math.floor((n * failPercent) / 100) !== Math.floor(((n - 1) * failPercent) / 100);
        const r = res as http.ServerResponse;
        if (String(req.headers['content-type'] ?? '').startsWith('application/grpc')) {
          r.writeHead(200, { 'content-type': 'application/grpc', 'x-name': name });
          r.addTrailers({ 'grpc-status': fail ? '14' : '0' });
          r.end(Buffer.from([0, 0, 0, 0, 0]));
          return;
        }
        if (url.pathname === '/garbage' && !('stream' in req)) {
          req.socket.end('this is not HTTP at all\r\n\r\n');
          return;
        }
        const body = JSON.stringify({ name, method: req.method, path: url.pathname, host: req.headers.host ?? req.headers[':authority'] });
        if (logRequests) console.log(JSON.stringify({ request: url.pathname, host: req.headers.host ?? req.headers[':authority'], name }));
        r.writeHead(fail ? 503 : 200, { 'content-type': 'application/json', 'x-name': name, 'x-in-flight': String(inFlight) });
        r.end(`${body}\n`);
      }, sleep);
    });
  };
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  h2.on('sessionError', () => undefined);
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (first: Buffer) => {
      s.pause();
      s.unshift(first);
      const conn = jsDuplex(s);
      (first.subarray(0, 3).toString('latin1') === 'PRI' ? h2 : h1).emit('connection', conn);
      conn.resume();
    });
  });
  server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port, name })));
}

const USAGE =
  'usage: podapp http PORT NAME [FAIL_PERCENT] [log] | whoami PORT | sink PORT | halfclose IP PORT TEXT | dial IP PORT [N] [CONCURRENCY] [TIMEOUT_MS] | stream IP PORT MIB SECONDS';

function usage(): never {
  console.error(USAGE);
  process.exit(2);
}

const [mode, ...args] = process.argv.slice(2);
/** Argument i, required (a missing one is a usage error); or fallback. */
const arg = (i: number, fallback?: string): string => args[i] ?? fallback ?? usage();
if (mode === 'whoami') whoami(Number(arg(0)));
else if (mode === 'http') httpApp(Number(arg(0)), arg(1), Number(arg(2, '0')), arg(3, '') === 'log');
else if (mode === 'sink') sink(Number(arg(0)));
else if (mode === 'halfclose') halfclose(arg(0), Number(arg(1)), arg(2));
else if (mode === 'stream') stream(arg(0), Number(arg(1)), Number(arg(2)), Number(arg(3)));
else if (mode === 'dial') void dial(arg(0), Number(arg(1)), Number(arg(2, '1')), Number(arg(3, '1')), Number(arg(4, '5000')));
else usage();
