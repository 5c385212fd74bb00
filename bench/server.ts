// The server side of the steering benchmark, run inside the server pod
// (node dist/bench/server.js). One process serves every measure on its own
// port, so the direct and the captured pair run identical server code:
//   PROBE   on connect, one line with the peer address, then close: tells
//           the benchmark which path a connection took
//   RR      each full 1 KiB request gets a 1 KiB response, in order
//   CONN    reads one byte, answers one byte and closes first, so TIME_WAIT
//           lands on the server side and never exhausts client ports
//   STREAM  discards everything; on the client's FIN answers the byte count
//   HTTP    HTTP/1.1 keep-alive: every request (a 1 KiB body) gets a 1 KiB
//           body back (bench/waypoint.ts, the L7 comparison)
// Prints one JSON line once every port listens.
import http from 'node:http';
import net from 'node:net';

export const PORTS = { probe: 7000, rr: 7001, conn: 7002, stream: 7003 } as const;
export const RR_SIZE = 1024;
/** Kept apart from PORTS: stunnel and the L4 measures forward every port listed there. */
export const HTTP_PORT = 7004;

function listen(server: net.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '0.0.0.0', () => resolve());
  });
}

function quiet(s: net.Socket): net.Socket {
  s.on('error', () => undefined); // resets from killed clients are not the server's business
  s.setNoDelay(true);
  return s;
}

async function main(): Promise<void> {
  const probe = net.createServer((s) => quiet(s).end(`${JSON.stringify({ remote: s.remoteAddress })}\n`));

  const response = Buffer.alloc(RR_SIZE, 0x72);
  const rr = net.createServer((s) => {
    let pending = 0;
    quiet(s).on('data', (d: Buffer) => {
      pending += d.length;
      while (pending >= RR_SIZE) {
        pending -= RR_SIZE;
        s.write(response);
      }
    });
  });

  const one = Buffer.from('y');
  const conn = net.createServer((s) => {
    quiet(s).once('data', () => s.end(one));
  });

  const stream = net.createServer({ allowHalfOpen: true }, (s) => {
    let bytes = 0;
    quiet(s).on('data', (d: Buffer) => {
      bytes += d.length;
    });
    s.on('end', () => s.end(`${bytes}\n`));
  });

  const web = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    req.on('error', () => undefined);
    req.resume();
    req.on('end', () => {
      res.sendDate = false;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': RR_SIZE });
      res.end(response);
    });
  });
  web.on('connection', quiet);

  await Promise.all([
    listen(probe, PORTS.probe),
    listen(rr, PORTS.rr),
    listen(conn, PORTS.conn),
    listen(stream, PORTS.stream),
    listen(web, HTTP_PORT),
  ]);
  console.log(JSON.stringify({ listening: [...Object.values(PORTS), HTTP_PORT] }));
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(err.stack ?? String(err));
    process.exit(1);
  });
}
