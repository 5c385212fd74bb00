// The demo's app, run inside pods.
//   serve PORT NAME         HTTP server answering JSON: who served, which peer it saw
//   get URL [URL…]          one request per URL; prints one JSON line each
//                           with status, latency and the body
import http from 'node:http';

function serve(port: number, name: string): void {
  http
    .createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ servedBy: name, sawPeer: `${req.socket.remoteAddress}:${req.socket.remotePort}` }));
    })
    .listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}

function get(url: string): Promise<void> {
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      const peer = `${res.socket.remoteAddress}:${res.socket.remotePort}`;
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        console.log(JSON.stringify({ url, status: res.statusCode, ms, peer, body: JSON.parse(body) }));
        resolve();
      });
    });
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    req.on('error', (err) => {
      console.log(JSON.stringify({ url, status: 0, error: (err as NodeJS.ErrnoException).code ?? err.message }));
      resolve();
    });
  });
}

const [mode, ...args] = process.argv.slice(2);
const [port, name] = args;
if (mode === 'serve' && port !== undefined && name !== undefined) serve(Number(port), name);
else if (mode === 'get')
  void (async () => {
    for (const u of args) await get(u);
  })();
else {
  console.error('usage: podhttp serve PORT NAME | get URL...');
  process.exit(2);
}
