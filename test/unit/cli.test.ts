// The `ambit` binary as operators use it (no root needed for these).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-cli-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function ambit(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
}

test('ambit ca init creates a root readable by its owner only; ca issue writes cert, key and root', async () => {
  const ca = path.join(dir, 'ca');
  const init = await ambit('ca', 'init', '--dir', ca);
  assert.equal(init.code, 0, init.stderr);
  assert.equal(fs.statSync(path.join(ca, 'root-key.pem')).mode & 0o777, 0o600);

  const out = path.join(dir, 'out');
  const id = 'spiffe://cluster.local/ns/default/sa/sleep';
  const issue = await ambit('ca', 'issue', '--dir', ca, '--identity', id, '--out', out);
  assert.equal(issue.code, 0, issue.stderr);
  const cert = new X509Certificate(fs.readFileSync(path.join(out, 'cert.pem')));
  const root = new X509Certificate(fs.readFileSync(path.join(out, 'root.pem')));
  assert.equal(cert.subjectAltName, `URI:${id}`);
  assert.ok(cert.verify(root.publicKey), 'signed by the root');
  assert.ok(cert.checkPrivateKey(createPrivateKey(fs.readFileSync(path.join(out, 'key.pem')))), 'key.pem is the certificate\'s key');
  assert.equal(fs.statSync(path.join(out, 'key.pem')).mode & 0o777, 0o600);
});

test('ca issue refuses an identity that is not spiffe://td/ns/NS/sa/SA', async () => {
  const r = await ambit('ca', 'issue', '--dir', path.join(dir, 'ca'), '--identity', 'spiffe://cluster.local/sleep', '--out', path.join(dir, 'x'));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /AMBIT_E_CONFIG: --identity "spiffe:\/\/cluster\.local\/sleep" is not spiffe:\/\/<trust domain>\/ns\/<namespace>\/sa\/<service account>/);
});

test('ambit node with an invalid configuration names the field, the value and the fix, and starts nothing', async () => {
  const file = path.join(dir, 'bad.yaml');
  fs.writeFileSync(file, 'trustDomain: cluster.local\nnodes: [{ name: n1, address: 10.0.0.1 }]\nworkloads:\n  - { uid: a, name: a, namespace: Default, serviceAccount: s, node: n1, addresses: [10.0.0.300] }\n');
  const r = await ambit('node', '--config', file, '--node', 'n1');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /AMBIT_E_CONFIG: .*bad\.yaml is invalid/);
  assert.match(r.stderr, /workloads\[0\]\.namespace: a Kubernetes namespace name: lower-case letters, digits and - \(got "Default"\)/);
  assert.match(r.stderr, /workloads\[0\]\.addresses\[0\]: must be an IPv4 address/);
});

test('unknown commands print the usage', async () => {
  const r = await ambit('frobnicate');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /usage:\n {2}ambit node/);
});
