// Rules across entries, and the bounds on a file: each is a problem
// reported by parseConfig, before anything could be applied.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AmbitError } from '../../src/errors';
import { loadConfigFile, parseConfig } from '../../src/sources/config';
import { MAX_ALIAS_COUNT, MAX_CONFIG_BYTES, MAX_DEPTH } from '../../src/sources/yaml-bounded';
import { BASE, HASH_A, HASH_B, once, problemsOf } from '../helpers/mesh-yaml';

/** AMBIT_E_CONFIG whose message matches want, thrown by fn. */
function rejects(fn: () => unknown, want: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AmbitError, String(err));
    assert.equal(err.code, 'AMBIT_E_CONFIG');
    assert.match(err.message, want);
    return true;
  });
}

test('each rule across entries is checked', () => {
  const cases: [string, string, string, RegExp][] = [
    [
      'duplicate token hashes',
      `node: node-2, sha256: ${HASH_B}`,
      `node: node-2, sha256: ${HASH_A}`,
      /^controlPlane\.tokens\[1\]\.sha256: duplicates controlPlane\.tokens\[0\]\.sha256; every node needs its own token/,
    ],
    [
      'a token for a node not listed',
      `node: node-2, sha256: ${HASH_B}`,
      `node: node-3, sha256: ${HASH_B}`,
      /^controlPlane\.tokens\[1\]\.node: is not among nodes: \(node-1, node-2\)/,
    ],
    [
      'duplicate workload uids',
      'uid: default/echo',
      'uid: default/sleep',
      /^workloads\[1\]\.uid: duplicates workloads\[0\]\.uid; uids must be unique/,
    ],
    [
      'duplicate workload addresses',
      'addresses: [10.200.0.20]',
      'addresses: [10.200.0.10]',
      /^workloads\[1\]\.addresses\[0\]: duplicates workloads\[0\]\.addresses\[0\]; pod addresses must be unique, or one workload could pass for another/,
    ],
    [
      'an address twice in one workload',
      'addresses: [10.200.0.20]',
      'addresses: [10.200.0.20, 10.200.0.20]',
      /^workloads\[1\]\.addresses\[1\]: duplicates workloads\[1\]\.addresses\[0\]/,
    ],
    [
      'duplicate node names',
      '{ name: node-2, address',
      '{ name: node-1, address',
      /^nodes\[1\]\.name: duplicates nodes\[0\]\.name; node names must be unique/,
    ],
    [
      'duplicate node addresses',
      'address: 10.201.0.2',
      'address: 10.201.0.1',
      /^nodes\[1\]\.address: duplicates nodes\[0\]\.address; each node needs its own address/,
    ],
    [
      'a workload on an unknown node',
      'node: node-2\n    addresses',
      'node: node-9\n    addresses',
      /^workloads\[1\]\.node: is not among nodes: \(node-1, node-2\)/,
    ],
    [
      'a service VIP that is a pod address',
      'addresses: [10.96.0.10]',
      'addresses: [10.200.0.20]',
      /^services\[0\]\.addresses\[0\]: is also workloads\[1\]\.addresses\[0\]/,
    ],
    [
      'a service port twice',
      '[{ port: 80, targetPort: 8080 }]',
      '[{ port: 80, targetPort: 8080 }, { port: 80, targetPort: 9090 }]',
      /^services\[0\]\.ports\[1\]\.port: duplicates services\[0\]\.ports\[0\]\.port/,
    ],
  ];
  for (const [what, from, to, want] of cases) {
    const problems = problemsOf(once(BASE, from, to));
    assert.ok(
      problems.some((p) => want.test(p)),
      `${what}: expected ${want} among\n${problems.join('\n')}`,
    );
  }
});

test('services: duplicate hostnames, names and VIPs', () => {
  const svc = (name: string, host: string, vip: string): string =>
    `  - { name: ${name}, namespace: default, hostname: ${host}, addresses: [${vip}], ports: [{ port: 80 }] }\n`;
  const text = once(
    BASE,
    'controlPlane:',
    `${svc('echo2', 'echo.default.svc.cluster.local', '10.96.0.11')}${svc('echo', 'other.default.svc.cluster.local', '10.96.0.12')}${svc('third', 'third.default.svc.cluster.local', '10.96.0.10')}controlPlane:`,
  );
  const problems = problemsOf(text).join('\n');
  assert.match(problems, /services\[1\]\.hostname: duplicates services\[0\]\.hostname; a service is named by namespace\/hostname/);
  assert.match(problems, /services\[2\]\.name: duplicates services\[0\]\.name; service names must be unique per namespace/);
  assert.match(problems, /services\[3\]\.addresses\[0\]: duplicates services\[0\]\.addresses\[0\]; a virtual IP must lead to one service/);
});

test('a node may hold two tokens (rotation); tokens need no nodes: list (Kubernetes mode)', () => {
  const rotated = once(
    BASE,
    `    - { node: node-2, sha256: ${HASH_B} }`,
    `    - { node: node-2, sha256: ${HASH_B} }\n    - { node: node-2, sha256: ${'c'.repeat(64)} }`,
  );
  assert.equal(parseConfig(rotated).controlPlane.tokens.length, 3);
  const kube = `trustDomain: cluster.local\nnodes: []\ncontrolPlane:\n  tokens:\n    - { node: anything, sha256: ${HASH_A} }\n`;
  assert.equal(parseConfig(kube).controlPlane.tokens.length, 1);
});

test('text over the size limit is refused before it is parsed', () => {
  // Broken YAML past the limit: refused for its size, not its syntax, so parsing never started.
  const big = `trustDomain: cluster.local\n#${'x'.repeat(MAX_CONFIG_BYTES)}\n[`;
  const t0 = Date.now();
  rejects(() => parseConfig(big, 'big.yaml'), /big\.yaml is 16\.0 MiB, over the limit of 16\.0 MiB \(16777216 bytes\)/);
  assert.ok(Date.now() - t0 < 5_000, 'the size check does not parse');
});

test('a file over the size limit is refused without being read', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-cfgsize-'));
  try {
    const file = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 1024 * 1024 * 1024); // sparse: 1 GiB on paper, nothing on disk
    const before = process.memoryUsage().rss;
    rejects(() => loadConfigFile(file), /mesh\.yaml \(--config\) is 1024\.0 MiB, over the limit of 16\.0 MiB/);
    assert.ok(process.memoryUsage().rss - before < 64 * 1024 * 1024, 'the file was not read into memory');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nesting deeper than the limit is refused, at any depth, without a stack overflow escaping', () => {
  const nested = (n: number): string => `trustDomain: cluster.local\nnodes: ${'['.repeat(n)}${']'.repeat(n)}\n`;
  rejects(
    () => parseConfig(nested(MAX_DEPTH + 1), 'deep.yaml'),
    new RegExp(`deep\\.yaml is not valid YAML: nested deeper than ${MAX_DEPTH} levels`),
  );
  rejects(() => parseConfig(nested(200_000), 'deeper.yaml'), /deeper\.yaml is not valid YAML: nested (too deeply|deeper than)/);
  // Block style nests by indentation.
  const block = Array.from({ length: MAX_DEPTH + 5 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n');
  rejects(() => parseConfig(`${block} end\n`, 'block.yaml'), /block\.yaml is not valid YAML: nested deeper than/);
  // A real file is far from the limit.
  assert.doesNotThrow(() => parseConfig(BASE));
});

test('a "billion laughs" document is refused; a few aliases are fine', () => {
  let bomb = 'a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
  for (let i = 1; i < 9; i++)
    bomb += `a${i}: &a${i} [${Array(9)
      .fill(`*a${i - 1}`)
      .join(', ')}]\n`;
  const t0 = Date.now();
  rejects(
    () => parseConfig(`${bomb}policies: *a8\n`, 'lol.yaml'),
    new RegExp(`lol\\.yaml is not valid YAML: its aliases \\(\\*name\\) expand to more than ${MAX_ALIAS_COUNT} nodes`),
  );
  assert.ok(Date.now() - t0 < 5_000, 'refused without walking the expansion');
  const shared = once(BASE, '    labels: { app: sleep }', '    labels: &common { app: sleep }');
  assert.deepEqual(parseConfig(shared.replace('    labels: { app: echo }', '    labels: *common')).workloads[1]?.labels, { app: 'sleep' });
});

test('duplicate keys in one map are refused', () => {
  rejects(() => parseConfig('trustDomain: a.local\ntrustDomain: b.local\n', 'dup.yaml'), /dup\.yaml is not valid YAML: .*unique/);
});

test('an alias inside its own anchor (data that contains itself) is refused, not a TypeError', () => {
  for (const text of ['nodes: &a [*a]\n', 'nodes: [&a { name: *a }]\n', 'policies: &p [{ metadata: *p }]\n']) {
    rejects(
      () => parseConfig(`trustDomain: cluster.local\n${text}`, 'loop.yaml'),
      /loop\.yaml is not valid YAML: an alias \(\*name\) is inside its own anchor/,
    );
  }
});

test('a value that cannot become a string is a problem, not a TypeError', () => {
  rejects(
    () =>
      parseConfig(
        'trustDomain: cluster.local\nworkloads: [{ addresses: [{ toString: {} }] }]\nservices: [{ addresses: [{ toString: {} }] }]\n',
      ),
    /workloads\[0\]\.addresses\[0\]: must be an IPv4 address[\s\S]*services\[0\]\.addresses\[0\]: must be an IPv4 virtual IP/,
  );
});
