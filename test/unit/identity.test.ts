import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import type { CertificateAuthority } from '../../src/identity/ca';
import { CertificateManager } from '../../src/identity/cert-manager';
import { parseSpiffe, spiffeIdsOf } from '../../src/identity/spiffe';
import { createLogger } from '../../src/observability/log';
import { must } from '../helpers/must';

const log = createLogger('silent');
const ID = 'spiffe://cluster.local/ns/default/sa/sleep';
let dir: string;
let ca: BuiltinCa;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-ca-'));
  ca = await BuiltinCa.open(path.join(dir, 'ca'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('SPIFFE ids have exactly trust domain, ns, namespace, sa, service account', () => {
  assert.deepEqual(parseSpiffe(ID), { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' });
  for (const bad of [
    'spiffe://cluster.local/ns/default',
    'spiffe://cluster.local/ns/default/sa/sleep/extra',
    'spiffe://td/sa/x/ns/y',
    'https://td/ns/a/sa/b',
    'spiffe://td/ns//sa/b',
  ]) {
    assert.equal(parseSpiffe(bad), undefined, bad);
  }
  assert.deepEqual(spiffeIdsOf(`DNS:x.example, URI:${ID}, URI:https://example`), [ID]);
});

test('the CA directory is created once, readable by root only, and reused', async () => {
  const d = path.join(dir, 'ca');
  assert.equal(fs.statSync(d).mode & 0o777, 0o700);
  for (const f of ['root-cert.pem', 'root-key.pem']) assert.equal(fs.statSync(path.join(d, f)).mode & 0o777, 0o600, f);
  const again = await BuiltinCa.open(d);
  assert.equal(again.rootPem, ca.rootPem);
});

test('two processes creating the same CA at once end up with one root', async () => {
  const d = path.join(dir, 'race');
  const [a, b] = await Promise.all([BuiltinCa.open(d), BuiltinCa.open(d)]);
  assert.equal(a.rootPem, b.rootPem);
});

test('a leaf carries exactly the identity as its only SAN, 24 h by default', async () => {
  const m = new CertificateManager(ca, { log });
  const c = await m.fetch(ID);
  const { X509Certificate } = await import('node:crypto');
  const leaf = new X509Certificate(c.chainPem);
  assert.equal(leaf.subjectAltName, `URI:${ID}`);
  assert.ok(leaf.verify(new X509Certificate(c.rootsPem).publicKey));
  const hours = (c.notAfter.getTime() - Date.now()) / 3600_000;
  assert.ok(hours > 23.9 && hours <= 24, `lifetime ${hours} h`);
  m.close();
});

test('one CA request in flight per identity; cached afterwards', async () => {
  let calls = 0;
  const counting: CertificateAuthority = {
    sign: (csr, id, ttl) => {
      calls++;
      return ca.sign(csr, id, ttl);
    },
  };
  const m = new CertificateManager(counting, { log });
  const all = await Promise.all(Array.from({ length: 10 }, () => m.fetch(ID)));
  assert.equal(calls, 1);
  assert.ok(all.every((c) => c === all[0]));
  await m.fetch(ID);
  assert.equal(calls, 1);
  m.close();
});

test('a CA answer for another identity is refused', async () => {
  const lying: CertificateAuthority = { sign: (csr, _id, ttl) => ca.sign(csr, 'spiffe://cluster.local/ns/default/sa/other', ttl) };
  const m = new CertificateManager(lying, { log, backoffInitialMs: 60_000 });
  await assert.rejects(
    m.fetch(ID),
    /issued a certificate for \["spiffe:\/\/cluster\.local\/ns\/default\/sa\/other"\] when spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep was asked/,
  );
  m.close();
});

test('refresh at half-life; on CA failure the valid certificate keeps serving, with backoff', async () => {
  let fail = false;
  let calls = 0;
  const flaky: CertificateAuthority = {
    sign: (csr, id, ttl) => {
      calls++;
      return fail ? Promise.reject(new Error('CA down')) : ca.sign(csr, id, ttl);
    },
  };
  const m = new CertificateManager(flaky, { log, ttlSeconds: 2, backoffInitialMs: 100, backoffMaxMs: 200 });
  const first = await m.fetch(ID);
  fail = true;
  await waitUntil(() => calls >= 3, 3000); // refresh at ~1 s, then retries every 100-200 ms
  assert.equal(m.current(ID), first, 'still the first certificate while the CA is down');
  fail = false;
  await waitUntil(() => m.current(ID) !== first, 2000);
  assert.ok(must(m.current(ID), 'the certificate').notAfter > first.notAfter, 'a newer certificate once the CA is back');
  m.close();
});

test('identities no longer on the node are forgotten', async () => {
  const m = new CertificateManager(ca, { log });
  await m.fetch(ID);
  await m.fetch('spiffe://cluster.local/ns/default/sa/gone');
  m.retain(new Set([ID]));
  assert.deepEqual(m.identities(), [ID]);
  m.close();
});

async function waitUntil(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}
