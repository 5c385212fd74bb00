// The waypoint's HTTP/1.1 keep-alive to endpoints, against a real node:http
// server on 127.0.0.1 standing in for "a CONNECT stream to the endpoint":
// requests reuse one connection; a connection the endpoint closed, one
// answered with `connection: close`, one whose answer was abandoned, or one
// that failed is never handed out again; an endpoint that cannot be reached
// is a connect failure; idle connections close after the idle timeout.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, test } from 'node:test';
import { KeepAlivePool, type KeepAliveTarget } from '../../src/waypoint/keepalive';
import type { AttemptResult, OutgoingRequest } from '../../src/waypoint/upstream';

let server: http.Server;
let port = 0;
/** Server-side sockets, in the order they were accepted. */
const accepted: net.Socket[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const body = 'x'.repeat(Number(url.searchParams.get('size') ?? 10));
      if (url.pathname === '/close') res.setHeader('connection', 'close');
      res.end(body);
    });
  });
  server.on('connection', (s) => accepted.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const target = (p = port): KeepAliveTarget => ({ ip: '127.0.0.1', port: p, identity: 'spiffe://cluster.local/ns/default/sa/app' });
const open = (t: KeepAliveTarget): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    const s = net.connect({ host: t.ip, port: t.port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
const get = (path: string): OutgoingRequest => ({
  method: 'GET',
  target: path,
  host: 'app',
  headers: {},
  body: Buffer.alloc(0),
  h2: false,
});

async function body(r: AttemptResult): Promise<string> {
  assert.equal(r.kind, 'response', r.kind === 'response' ? '' : `${r.kind} ${r.detail ?? ''}`);
  if (r.kind !== 'response') return '';
  let s = '';
  for await (const c of r.response.body) s += String(c);
  return s;
}

/** Waits for the pool to take the connection back (the Agent frees it on the next tick). */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

test('maxRequestsPerConnection: a connection carries that many requests, then a new one is opened', async () => {
  const pool = new KeepAlivePool(open);
  try {
    for (let i = 0; i < 7; i++) {
      assert.equal(await body(await pool.send({ ...target(), maxRequests: 3 }, get('/'))), 'x'.repeat(10));
      await settle();
    }
    assert.equal(pool.opened, 3, '7 requests at 3 per connection');
    // Without the limit the same endpoint's connections are kept apart and reused as before.
    for (let i = 0; i < 3; i++) {
      await body(await pool.send(target(), get('/')));
      await settle();
    }
    assert.equal(pool.opened, 4);
  } finally {
    pool.close();
  }
});

test('sequential requests to one endpoint share one connection, and reuse leaves no listener behind', async () => {
  const pool = new KeepAlivePool(open);
  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(`${w.name}: ${w.message}`);
  };
  process.on('warning', onWarning);
  try {
    for (let i = 0; i < 20; i++) {
      assert.equal(await body(await pool.send(target(), get('/'))), 'x'.repeat(10));
      await settle();
    }
    assert.equal(pool.opened, 1);
    assert.deepEqual(Object.values(pool.idle()), [1]);
    // 20 reuses of one socket: a listener added per request passes Node's limit of 10.
    assert.deepEqual(warnings, [], 'no MaxListenersExceededWarning from a reused connection');
  } finally {
    process.off('warning', onWarning);
    pool.close();
  }
});

test('a connection the endpoint closed while idle is not handed out again', async () => {
  const pool = new KeepAlivePool(open);
  try {
    await body(await pool.send(target(), get('/')));
    await settle();
    const first = accepted.at(-1);
    assert.ok(first);
    first.destroy();
    await settle();
    assert.equal(await body(await pool.send(target(), get('/'))), 'x'.repeat(10));
    assert.equal(pool.opened, 2);
  } finally {
    pool.close();
  }
});

test('`connection: close` and an abandoned answer end the connection; the next request opens a new one', async () => {
  const pool = new KeepAlivePool(open);
  try {
    await body(await pool.send(target(), get('/close')));
    await settle();
    await body(await pool.send(target(), get('/')));
    assert.equal(pool.opened, 2);
    await settle();
    const r = await pool.send(target(), get('/?size=1000000'));
    assert.equal(r.kind, 'response');
    if (r.kind === 'response') r.response.abort();
    await settle();
    await body(await pool.send(target(), get('/')));
    assert.equal(pool.opened, 3, 'the connection with an abandoned answer was not reused');
  } finally {
    pool.close();
  }
});

test('an endpoint nobody listens on is a connect failure', async () => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const dead = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const pool = new KeepAlivePool(open);
  try {
    const r = await pool.send(target(dead), get('/'));
    assert.equal(r.kind, 'connect-failure', JSON.stringify(r));
  } finally {
    pool.close();
  }
});

test('idle connections close after the idle timeout', async () => {
  const pool = new KeepAlivePool(open, { maxIdlePerKey: 4, idleMs: 100 });
  try {
    await body(await pool.send(target(), get('/')));
    await settle();
    assert.deepEqual(Object.values(pool.idle()), [1]);
    const s = accepted.at(-1);
    assert.ok(s);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the idle connection was still open after 5 s')), 5000);
      s.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    assert.deepEqual(
      Object.values(pool.idle()).filter((n) => n > 0),
      [],
    );
  } finally {
    pool.close();
  }
});
