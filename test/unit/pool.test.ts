// The HBONE client pool against real TLS/HTTP2 peers on loopback: peers
// that stall at each step of the setup, peers that cap their streams, a CA
// that fails. Every wait is bounded by the test itself, so a pool that
// hangs fails here instead of hanging the run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import type { CertificateAuthority } from '../../src/identity/ca';
import { CertificateManager, type WorkloadCert } from '../../src/identity/cert-manager';
import { serverTlsOptions } from '../../src/identity/tls';
import { createLogger } from '../../src/observability/log';
import { tunnelLimits } from '../../src/tunnel/limits';
import { type ConnectTarget, HbonePool } from '../../src/tunnel/pool';
import { TIME_SCALE, waitFor } from '../helpers/proc';

const log = createLogger(process.env.AMBIT_TEST_LOG ?? 'silent');
const SRC = 'spiffe://cluster.local/ns/default/sa/client';
const DST = 'spiffe://cluster.local/ns/default/sa/server';
const BOUND = 1000 * TIME_SCALE;

/** Resolves with p's outcome, or rejects if it takes longer than ms (the pool hung). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not settled after ${ms} ms`)), ms);
    }),
  ]);
}

/** Settles every promise; returns the outcomes with the time each took. */
async function settleAll<T>(ps: Promise<T>[]): Promise<{ ok: T[]; errors: NodeJS.ErrnoException[]; slowestMs: number }> {
  const start = Date.now();
  let slowestMs = 0;
  const r = await Promise.allSettled(
    ps.map((p) =>
      p.finally(() => {
        slowestMs = Math.max(slowestMs, Date.now() - start);
      }),
    ),
  );
  return {
    ok: r.flatMap((x) => (x.status === 'fulfilled' ? [x.value] : [])),
    errors: r.flatMap((x) => (x.status === 'rejected' ? [x.reason as NodeJS.ErrnoException] : [])),
    slowestMs,
  };
}

const codes = (errors: NodeJS.ErrnoException[]): Record<string, number> =>
  errors.reduce<Record<string, number>>((m, e) => {
    m[String(e.code)] = (m[String(e.code)] ?? 0) + 1;
    return m;
  }, {});

describe('HBONE client pool', () => {
  let dir: string;
  let ca: BuiltinCa;
  let certs: CertificateManager;
  let serverCert: WorkloadCert;
  const cleanups: (() => void)[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-pool-'));
    ca = await BuiltinCa.open(path.join(dir, 'ca'));
    certs = new CertificateManager(ca, { log });
    serverCert = await certs.fetch(DST);
  });

  after(() => {
    for (const c of cleanups.splice(0)) c();
    certs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function listen(server: net.Server): Promise<number> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as net.AddressInfo).port;
  }

  /** A target whose HBONE leg goes to a loopback port instead of <ip>:15008. */
  const target = (port: number, srcIdentity = SRC): ConnectTarget => ({
    srcIdentity,
    srcIp: '127.0.0.1',
    dstIp: '127.0.0.2',
    identities: [DST],
    dial: (_ip, _port, o) => net.connect({ host: '127.0.0.1', port, allowHalfOpen: o?.allowHalfOpen ?? true }),
  });

  const headers = { ':authority': '127.0.0.2:8080' };

  /** An HBONE peer that answers CONNECT (or not) and counts its sessions' concurrent streams. */
  async function hbonePeer(opts: {
    answer: boolean;
    maxConcurrentStreams?: number;
  }): Promise<{ port: number; sessions: { open: number; max: number; closed: boolean }[] }> {
    const server = http2.createSecureServer({
      ...serverTlsOptions(serverCert),
      settings: opts.maxConcurrentStreams ? { maxConcurrentStreams: opts.maxConcurrentStreams } : {},
    });
    const sessions: { open: number; max: number; closed: boolean }[] = [];
    const live = new Set<http2.ServerHttp2Session>();
    server.on('session', (h2) => {
      const s = { open: 0, max: 0, closed: false };
      sessions.push(s);
      live.add(h2);
      h2.on('error', () => undefined);
      h2.once('close', () => {
        s.closed = true;
        live.delete(h2);
      });
      h2.on('stream', (stream) => {
        s.open++;
        s.max = Math.max(s.max, s.open);
        stream.on('error', () => undefined);
        stream.once('close', () => {
          s.open--;
        });
        if (opts.answer) stream.respond({ ':status': 200 });
      });
    });
    const port = await listen(server);
    cleanups.push(() => {
      for (const h2 of live) h2.destroy();
      server.close();
    });
    return { port, sessions };
  }

  test('a peer that accepts TCP and never finishes TLS: 150 CONNECTs fail within clientHandshakeMs and the sessions are forgotten', async () => {
    const held: net.Socket[] = [];
    let closed = 0;
    // Reads (and drops) what arrives, never answers: the client's FIN is seen.
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.resume();
      c.once('close', () => closed++);
      held.push(c);
    });
    const port = await listen(server);
    cleanups.push(() => {
      for (const c of held) c.destroy();
      server.close();
    });
    const pool = new HbonePool({ certs, log, limits: tunnelLimits({ clientHandshakeMs: BOUND }) });
    cleanups.push(() => pool.close());
    await certs.fetch(SRC); // the certificate is not what is measured here
    const r = await within(
      settleAll(Array.from({ length: 150 }, () => pool.connect(target(port), headers))),
      5 * BOUND,
      '150 CONNECTs to a stalled peer',
    );
    assert.equal(r.ok.length, 0);
    assert.deepEqual(codes(r.errors), { AMBIT_E_HBONE_HANDSHAKE_TIMEOUT: 150 });
    assert.ok(r.slowestMs < BOUND + 500 * TIME_SCALE, `detected in ${r.slowestMs} ms (bound ${BOUND} ms)`);
    assert.match(r.errors[0]?.message ?? '', /TLS handshake with 127\.0\.0\.2:15008 not finished in \d+ ms/);
    assert.deepEqual(pool.stats(), { sessions: 0, streams: 0 });
    await waitFor('the stalled connections closed by the client', () => held.length > 0 && closed === held.length, 2000);
    console.log(
      `stalled TLS peer: 150 CONNECTs failed in ${r.slowestMs} ms over ${held.length} TCP connections (clientHandshakeMs ${BOUND})`,
    );
  });

  test('a peer that completes TLS and HTTP/2 and never answers CONNECT: fails within connectResponseMs; the session is dropped', async () => {
    const peer = await hbonePeer({ answer: false });
    const pool = new HbonePool({ certs, log, limits: tunnelLimits({ connectResponseMs: BOUND }) });
    cleanups.push(() => pool.close());
    const r = await within(
      settleAll(Array.from({ length: 20 }, () => pool.connect(target(peer.port), headers))),
      5 * BOUND,
      'CONNECTs never answered',
    );
    assert.deepEqual(codes(r.errors), { AMBIT_E_HBONE_CONNECT_TIMEOUT: 20 });
    assert.ok(r.slowestMs < BOUND + 500 * TIME_SCALE, `detected in ${r.slowestMs} ms (bound ${BOUND} ms)`);
    assert.equal(pool.stats().sessions, 0, 'no new stream goes to that session');
    await waitFor('the silent session closed', () => peer.sessions.length > 0 && peer.sessions.every((s) => s.closed), 2000);
    console.log(`silent CONNECT peer: 20 CONNECTs failed in ${r.slowestMs} ms (connectResponseMs ${BOUND})`);
  });

  test('300 concurrent CONNECTs with maxStreams 100 spread over 3 sessions', async () => {
    const peer = await hbonePeer({ answer: true });
    const pool = new HbonePool({ certs, log, maxStreams: 100 });
    cleanups.push(() => pool.close());
    const r = await within(
      settleAll(Array.from({ length: 300 }, () => pool.connect(target(peer.port), headers))),
      10 * BOUND,
      '300 CONNECTs',
    );
    assert.deepEqual(codes(r.errors), {});
    assert.equal(pool.sessionsOpened, 3);
    assert.deepEqual(
      peer.sessions.map((s) => s.max),
      [100, 100, 100],
    );
    assert.deepEqual(pool.stats(), { sessions: 3, streams: 300 });
    for (const s of r.ok) s.close();
    await waitFor('streams released', () => pool.stats().streams === 0, 2000);
  });

  test('a peer advertising SETTINGS_MAX_CONCURRENT_STREAMS 10: no session carries more than 10, none is left waiting', async () => {
    const peer = await hbonePeer({ answer: true, maxConcurrentStreams: 10 });
    const pool = new HbonePool({ certs, log, maxStreams: 100 });
    cleanups.push(() => pool.close());
    const r = await within(
      settleAll(Array.from({ length: 100 }, () => pool.connect(target(peer.port), headers))),
      10 * BOUND,
      '100 CONNECTs to a peer taking 10 per session',
    );
    assert.deepEqual(codes(r.errors), {});
    assert.ok(
      peer.sessions.every((s) => s.max <= 10),
      `streams per session: ${peer.sessions.map((s) => s.max).join(',')}`,
    );
    assert.equal(pool.stats().streams, 100);
    // What was learned is used: later sessions of the same destination open with room for 10 only.
    assert.ok(pool.sessionsOpened <= 15, `${pool.sessionsOpened} sessions for 100 streams at 10 each`);
    for (const s of r.ok) s.close();
  });

  test('a peer that goes silent after its streams are open: PING detects it and the streams end, not wait for ever', async () => {
    const peer = await hbonePeer({ answer: true });
    // A relay the test can freeze: the TCP connection stays up, nothing crosses any more.
    let frozen = false;
    const legs: net.Socket[] = [];
    const relay = net.createServer((c) => {
      const up = net.connect({ host: '127.0.0.1', port: peer.port });
      legs.push(c, up);
      for (const [a, b] of [
        [c, up],
        [up, c],
      ] as const) {
        a.on('error', () => undefined);
        a.on('data', (d: Buffer) => {
          if (!frozen) b.write(d);
        });
      }
    });
    const port = await listen(relay);
    cleanups.push(() => {
      for (const l of legs) l.destroy();
      relay.close();
    });
    const pingEveryMs = 200 * TIME_SCALE;
    const pingTimeoutMs = 300 * TIME_SCALE;
    const pool = new HbonePool({ certs, log, pingEveryMs, pingTimeoutMs });
    cleanups.push(() => pool.close());
    const streams = await within(
      Promise.all([1, 2, 3].map(() => pool.connect(target(port), headers))),
      5 * BOUND,
      'CONNECTs through the relay',
    );
    const ended = streams.map(
      (st) =>
        new Promise<number>((resolve) => {
          st.on('error', () => undefined);
          st.once('close', () => resolve(Date.now()));
        }),
    );
    const start = Date.now();
    frozen = true;
    const at = await within(Promise.all(ended), 4 * (pingEveryMs + pingTimeoutMs), 'streams of a silent peer ending');
    const tookMs = Math.max(...at) - start;
    assert.ok(tookMs <= pingEveryMs + pingTimeoutMs + 200 * TIME_SCALE, `ended after ${tookMs} ms`);
    assert.deepEqual(pool.stats(), { sessions: 0, streams: 0 });
    console.log(
      `silent established peer: 3 open streams ended ${tookMs} ms after it went silent (PING every ${pingEveryMs} ms, answer within ${pingTimeoutMs} ms)`,
    );
  });

  test('a CA that fails: connect rejects with AMBIT_E_CA at once, and a second connection does not ask the CA again', async () => {
    let calls = 0;
    const down: CertificateAuthority = {
      sign: () => {
        calls++;
        return Promise.reject(new Error('connect ECONNREFUSED 10.0.0.1:15012'));
      },
    };
    const failing = new CertificateManager(down, { log, backoffInitialMs: 60_000 });
    cleanups.push(() => failing.close());
    const peer = await hbonePeer({ answer: true });
    const pool = new HbonePool({ certs: failing, log });
    cleanups.push(() => pool.close());
    const start = Date.now();
    const err = await within(
      pool.connect(target(peer.port), headers).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      ),
      BOUND,
      'connect without a certificate',
    );
    assert.equal(err?.code, 'AMBIT_E_CA');
    assert.match(err?.message ?? '', /no certificate for spiffe:\/\/cluster\.local\/ns\/default\/sa\/client: .*ECONNREFUSED/);
    const again = await within(
      pool.connect(target(peer.port), headers).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      ),
      BOUND,
      'second connect',
    );
    assert.equal(again?.code, 'AMBIT_E_CA');
    assert.equal(calls, 1, 'while backing off, the CA is not asked per connection');
    assert.equal(peer.sessions.length, 0, 'nothing was dialed without a certificate');
    console.log(`CA down: connect failed with AMBIT_E_CA in ${Date.now() - start} ms (both connections)`);
  });

  test('a CA outage with a valid certificate in hand: connections keep working', async () => {
    let fail = false;
    const flaky: CertificateAuthority = { sign: (csr, id, ttl) => (fail ? Promise.reject(new Error('CA down')) : ca.sign(csr, id, ttl)) };
    const m = new CertificateManager(flaky, { log, backoffInitialMs: 60_000 });
    cleanups.push(() => m.close());
    await m.fetch(SRC);
    fail = true;
    const peer = await hbonePeer({ answer: true });
    const pool = new HbonePool({ certs: m, log });
    cleanups.push(() => pool.close());
    const s = await within(pool.connect(target(peer.port), headers), 5 * BOUND, 'connect with a cached certificate');
    s.close();
  });
});
