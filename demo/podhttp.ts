// The demo's app, run inside pods.
//   serve PORT NAME [FAIL%]   HTTP server answering JSON: who served, which peer
//                             it saw; exactly FAIL% of the requests (spread
//                             evenly) get 503, a backend having a bad day
//   get URL [URL…]            one request per URL; prints one JSON line each
//                             with status, latency and the body
//   load METHOD URL N C       N requests, C at a time, each on its own
//                             connection; prints one JSON summary: answers per
//                             status, per server, and the first body of each
//                             status
import http from 'node:http';

function serve(port: number, name: string, failPercent: number): void {
  let served = 0;
  http
    .createServer((req, res) => {
      // Request n fails when it crosses the next multiple of 100/FAIL%: an exact share, no luck involved.
      const n = served++;
      const fails = Math.floor(((n + 1) * failPercent) / 100) > Math.floor((n * failPercent) / 100);
      res.statusCode = fails ? 503 : 200;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ servedBy: name, sawPeer: `${req.socket.remoteAddress}:${req.socket.remotePort}` }));
    })
    .listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}

interface Answer {
  status: number;
  ms: number;
  peer?: string;
  body: string;
  error?: string;
}

function request(method: string, url: string): Promise<Answer> {
  const started = process.hrtime.bigint();
  const ms = (): number => Number(process.hrtime.bigint() - started) / 1e6;
  return new Promise((resolve) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      let body = '';
      const peer = `${res.socket.remoteAddress}:${res.socket.remotePort}`;
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: ms(), peer, body }));
    });
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, ms: ms(), body: '', error: (err as NodeJS.ErrnoException).code ?? err.message }));
    req.end();
  });
}

async function get(url: string): Promise<void> {
  const a = await request('GET', url);
  if (a.error) console.log(JSON.stringify({ url, status: 0, error: a.error }));
  else console.log(JSON.stringify({ url, status: a.status, ms: a.ms, peer: a.peer, body: JSON.parse(a.body) }));
}

const servedBy = (body: string): string => {
  try {
    return (JSON.parse(body) as { servedBy?: string }).servedBy ?? '-';
  } catch {
    return '-';
  }
};

async function load(method: string, url: string, n: number, c: number): Promise<void> {
  const statuses: Record<string, number> = {};
  const servers: Record<string, number> = {};
  const bodies: Record<string, string> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++;
        const a = await request(method, url);
        const status = a.error ? `error ${a.error}` : String(a.status);
        statuses[status] = (statuses[status] ?? 0) + 1;
        const by = servedBy(a.body);
        servers[by] = (servers[by] ?? 0) + 1;
        bodies[status] ??= a.body;
      }
    }),
  );
  console.log(JSON.stringify({ method, url, sent: n, statuses, servedBy: servers, bodies }));
}

const [mode, ...args] = process.argv.slice(2);
const [a0, a1, a2, a3] = args;
if (mode === 'serve' && a0 !== undefined && a1 !== undefined) serve(Number(a0), a1, Number(a2 ?? '0'));
else if (mode === 'get')
  void (async () => {
    for (const u of args) await get(u);
  })();
else if (mode === 'load' && a0 !== undefined && a1 !== undefined) void load(a0, a1, Number(a2 ?? '1'), Number(a3 ?? '1'));
else {
  console.error('usage: podhttp serve PORT NAME [FAIL%] | get URL... | load METHOD URL N C');
  process.exit(2);
}
