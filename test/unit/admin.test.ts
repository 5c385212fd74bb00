// The admin endpoints as a hostile local browser page or a slow client would
// meet them: real HTTP servers on ephemeral loopback ports. No root needed.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { type AdminPorts, startAdmin } from '../../src/observability/admin';
import { isLoopbackHost } from '../../src/observability/admin-guard';
import { TIME_SCALE, waitFor } from '../helpers/proc';

const HEADERS_TIMEOUT_MS = 1000 * TIME_SCALE;
const ANSWER_WITHIN_MS = 2000 * TIME_SCALE;
let ports: AdminPorts;
let close: () => void;
let quits = 0;
let level = 'info';
const logLines: { msg: string; reason?: string }[] = [];

before(async () => {
  const log = pino(
    { level: 'info' },
    {
      write: (line: string) => {
        logLines.push(JSON.parse(line));
      },
    },
  );
  ({ ports, close } = await startAdmin(
    {
      metrics: () => Promise.resolve('# metrics\n'),
      readiness: () => ({ pending: [] }),
      configDump: () => ({ dump: true }),
      log,
      setLogLevel: (l) => {
        level = l;
      },
      quit: () => {
        quits++;
      },
    },
    { admin: 0, stats: 0, ready: 0 },
    { headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: 2 * HEADERS_TIMEOUT_MS },
  ));
});
after(() => close());

function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    // Every answer here, a refusal too, comes at once: a server that hangs fails the test instead.
    req.setTimeout(ANSWER_WITHIN_MS, () => req.destroy(new Error(`${method} ${path}: no answer within ${ANSWER_WITHIN_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

const OK = { 'x-ambit-admin': 'true' };

test('a forged POST /quitquitquit is refused with 403 saying what to send; the process does not quit', async () => {
  const forged: [string, Record<string, string>, RegExp][] = [
    [
      'cross-origin form post (Origin, no header)',
      { origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      /Origin header \("http:\/\/evil\.example"\) is a browser's/,
    ],
    ['no-cors fetch that somehow carries the header', { ...OK, origin: 'null' }, /Origin header/],
    ['missing header', {}, /header x-ambit-admin: true is required .*curl -X POST -H 'x-ambit-admin: true' http:\/\/localhost:15000\//],
    ['wrong header value', { 'x-ambit-admin': '1' }, /header x-ambit-admin: true is required/],
    ['cross-site fetch metadata', { ...OK, 'sec-fetch-site': 'cross-site' }, /Sec-Fetch-Site "cross-site"/],
    ['DNS-rebound Host', { ...OK, host: 'evil.example:15000' }, /Host "evil\.example:15000" is not a loopback name or address/],
  ];
  for (const [what, headers, reason] of forged) {
    const r = await request(ports.admin, 'POST', '/quitquitquit', headers);
    assert.equal(r.status, 403, `${what}: ${r.body}`);
    assert.match(r.body, reason, what);
  }
  assert.equal(quits, 0);
  const logging = await request(ports.admin, 'POST', '/logging?level=debug', { origin: 'http://evil.example' });
  assert.equal(logging.status, 403);
  assert.equal(level, 'info');
});

test('the right request is served: header, no Origin, a loopback Host', async () => {
  for (const host of ['localhost:15000', '127.0.0.1:15000', '[::1]:15000', 'localhost']) {
    const r = await request(ports.admin, 'POST', '/logging?level=debug', { ...OK, host });
    assert.deepEqual(r, { status: 200, body: 'level=debug\n' }, host);
  }
  assert.equal(level, 'debug');
  const q = await request(ports.admin, 'POST', '/quitquitquit', { ...OK, 'sec-fetch-site': 'none' });
  assert.equal(q.status, 200);
  await waitFor('quit called', () => quits === 1, 2000);
});

test('reads need a loopback Host too (a rebound page cannot read the config dump); no header needed', async () => {
  assert.equal((await request(ports.admin, 'GET', '/config_dump')).status, 200);
  const r = await request(ports.admin, 'GET', '/config_dump', { host: 'attacker.example' });
  assert.equal(r.status, 403);
  assert.doesNotMatch(r.body, /dump/);
});

test('refusals are logged once per kind per interval (a page forging in a loop cannot flood the log)', async () => {
  // The first test's Origin refusals already wrote this interval's line.
  for (let i = 0; i < 20; i++)
    assert.equal((await request(ports.admin, 'POST', '/quitquitquit', { origin: 'http://evil.example' })).status, 403);
  assert.equal(logLines.filter((l) => l.msg === 'admin request refused' && l.reason === 'origin').length, 1, JSON.stringify(logLines));
});

test('a body over the bound is refused with 413', async () => {
  const r = await request(ports.admin, 'POST', '/logging?level=info', OK, 'x'.repeat(10_000));
  assert.equal(r.status, 413);
  assert.match(r.body, /request body over 4096 bytes/);
});

test('a bad request target is a 400 for that request, not an exception', async () => {
  const reply = await raw(ports.admin, 'GET http://[::1 HTTP/1.1\r\nHost: localhost\r\n\r\n');
  assert.match(reply, /^HTTP\/1\.1 400/);
  assert.equal((await request(ports.admin, 'GET', '/config_dump')).status, 200, 'still serving');
});

function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(text));
    s.setTimeout(ANSWER_WITHIN_MS, () => s.destroy(new Error(`no answer within ${ANSWER_WITHIN_MS} ms`)));
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

/** A client that sends its headers one byte at a time, slowly; resolves with how long the server let it stay. */
function slowloris(port: number): Promise<number> {
  return new Promise((resolve) => {
    const started = Date.now();
    const text = `GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nX-Pad: ${'a'.repeat(10_000)}`;
    let i = 0;
    const s = net.connect(port, '127.0.0.1');
    const timer = setInterval(() => {
      if (s.writable) s.write(text.charAt(i++ % text.length));
    }, 100);
    s.on('error', () => {});
    s.on('close', () => {
      clearInterval(timer);
      resolve(Date.now() - started);
    });
    s.resume();
  });
}

test('a slow client is cut within the headers timeout on all three ports, and honest requests are served meanwhile', async (t) => {
  const held = Promise.all([slowloris(ports.admin), slowloris(ports.stats), slowloris(ports.ready)]);
  assert.equal((await request(ports.ready, 'GET', '/healthz/ready')).status, 200);
  assert.equal((await request(ports.stats, 'GET', '/metrics')).status, 200);
  const times = await held;
  t.diagnostic(`slow clients held ${times.join(', ')} ms (headers timeout ${HEADERS_TIMEOUT_MS} ms)`);
  for (const ms of times) {
    // The deadline plus Node's check interval (a quarter of it here), with slack for a busy machine.
    assert.ok(
      ms >= HEADERS_TIMEOUT_MS * 0.9 && ms < HEADERS_TIMEOUT_MS * 3,
      `held ${times.join(', ')} ms; headers timeout ${HEADERS_TIMEOUT_MS} ms`,
    );
  }
});

test('loopback hosts: names and addresses, with or without port; nothing else', () => {
  for (const h of ['localhost', 'LOCALHOST:15000', '127.0.0.1', '127.1.2.3:80', '[::1]', '[::1]:15000', '::1', 'localhost.'])
    assert.ok(isLoopbackHost(h), h);
  for (const h of [
    undefined,
    '',
    'evil.example',
    'localhost.evil.example',
    '127.0.0.1.nip.io',
    '10.0.0.1',
    '[::2]:15000',
    '0.0.0.0',
    'localhost:15000:1',
  ])
    assert.ok(!isLoopbackHost(h), String(h));
});
