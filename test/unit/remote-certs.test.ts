// A tunnel worker's certificate source: what the agent answers (a
// certificate, or why it has none) reaches every connection waiting, and no
// connection waits past certificateWaitMs when the agent does not answer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FromWorker, WireCert } from '../../src/tunnel/ipc';
import { RemoteCerts } from '../../src/tunnel/remote-certs';
import { TIME_SCALE } from '../helpers/proc';

const ID = 'spiffe://cluster.local/ns/default/sa/client';
const wire = (notAfter: Date): WireCert => ({
  identity: ID,
  chainPem: 'c',
  keyPem: 'k',
  rootsPem: 'r',
  notBefore: new Date(0).toISOString(),
  notAfter: notAfter.toISOString(),
});

test('a failed fetch in the agent fails every waiter with AMBIT_E_CA; one question per identity', async () => {
  const sent: FromWorker[] = [];
  const certs = new RemoteCerts(
    (m) => sent.push(m),
    () => 60_000,
  );
  const waiting = Array.from({ length: 5 }, () => certs.fetch(ID));
  assert.deepEqual(sent, [{ t: 'cert?', identity: ID }]);
  certs.failed(ID, 'CA at 10.0.0.1:15012 unreachable: UNAVAILABLE');
  for (const w of waiting)
    await assert.rejects(w, (e: Error & { code?: string }) => e.code === 'AMBIT_E_CA' && /UNAVAILABLE/.test(e.message));
  // The next connection asks again (the CA may be back).
  const again = certs.fetch(ID);
  assert.equal(sent.length, 2);
  certs.put(wire(new Date(Date.now() + 60_000)));
  assert.equal((await again).identity, ID);
});

test('an agent that never answers: waiters fail after certificateWaitMs', async () => {
  const waitMs = 200 * TIME_SCALE;
  const certs = new RemoteCerts(
    () => undefined,
    () => waitMs,
  );
  const start = Date.now();
  await assert.rejects(
    certs.fetch(ID),
    (e: Error & { code?: string }) => e.code === 'AMBIT_E_CA' && /within \d+ ms \(certificateWaitMs\)/.test(e.message),
  );
  const took = Date.now() - start;
  assert.ok(took >= waitMs - 5 && took < waitMs + 500 * TIME_SCALE, `failed after ${took} ms`);
});

test('an expired certificate is asked for again; a valid one is served without asking', async () => {
  const sent: FromWorker[] = [];
  const certs = new RemoteCerts(
    (m) => sent.push(m),
    () => 60_000,
  );
  certs.put(wire(new Date(Date.now() + 60_000)));
  await certs.fetch(ID);
  assert.equal(sent.length, 0);
  certs.put(wire(new Date(Date.now() - 1)));
  const p = certs.fetch(ID);
  assert.equal(sent.length, 1);
  certs.put(wire(new Date(Date.now() + 60_000)));
  await p;
});
