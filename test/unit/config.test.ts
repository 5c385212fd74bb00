// The standalone configuration: a valid file parses into the model, and an
// invalid one is refused with every problem named by its path, its value
// and a fix.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/sources/config';
import { BASE, once, problemsOf } from '../helpers/mesh-yaml';

test('a valid file parses', () => {
  const c = parseConfig(BASE);
  assert.equal(c.trustDomain, 'cluster.local');
  assert.equal(c.workloads[0]?.protocol, 'HBONE', 'the default tunnel protocol');
  assert.deepEqual(c.workloads[0]?.labels, { app: 'sleep' });
  assert.deepEqual(c.services[0]?.ports, [{ port: 80, targetPort: 8080 }]);
});

test('every problem is reported with its path, its value and a fix', () => {
  let bad = once(BASE, 'addresses: [10.200.0.10]', 'addresses: [10.200.0.300]');
  bad = once(bad, 'dataplane: ambient', 'dataplane: ambient\n    protocol: TLS');
  bad = once(bad, '    node: node-1\n', '    node: node-9\n');
  bad = once(bad, '{ port: 80, targetPort: 8080 }', '{ port: 80, targetPort: 70000 }');
  const problems = problemsOf(bad);
  for (const want of [
    /^workloads\[0\]\.addresses\[0\]: must be an IPv4 address .* \(got "10\.200\.0\.300"\)/,
    /^workloads\[0\]\.protocol: must be HBONE .* \(got "TLS"\)/,
    /^workloads\[0\]\.node: is not among nodes: \(node-1, node-2\).* \(got "node-9"\)/,
    /^services\[0\]\.ports\[0\]\.targetPort: must be a port number 1\.\.65535 \(got 70000\)/,
  ])
    assert.ok(
      problems.some((p) => want.test(p)),
      `${want} among:\n${problems.join('\n')}`,
    );
  assert.throws(() => parseConfig(bad, 'mesh.yaml'), /^AmbitError.*mesh\.yaml is invalid/);
});

test('duplicate uids and addresses are refused', () => {
  const twice = BASE.replace(/workloads:\n([\s\S]*?)services:/, (_m, w: string) => `workloads:\n${w}${w}services:`);
  assert.throws(() => parseConfig(twice), /uids must be unique[\s\S]*pod addresses must be unique/);
});

test('broken YAML names the file', () => {
  assert.throws(() => parseConfig('nodes: [', 'x.yaml'), /x\.yaml is not valid YAML/);
});
