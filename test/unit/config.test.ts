import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AmbitError } from '../../src/errors';
import { parseConfig } from '../../src/sources/config';

const GOOD = `
trustDomain: cluster.local
ca: { dir: /var/lib/ambit/ca }
nodes:
  - { name: node-1, address: 10.201.0.1 }
workloads:
  - uid: default/pod-a
    name: pod-a
    namespace: default
    serviceAccount: sleep
    node: node-1
    addresses: [10.200.0.10]
    protocol: HBONE
    netns: /var/run/netns/pod-a
    cgroup: /sys/fs/cgroup/ambit/node-1/pod-a
    labels: { app: sleep, version: v1 }
services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    addresses: [10.96.0.10]
    ports: [{ port: 80, targetPort: 8080 }]
    selector: { app: echo }
`;

test('the documented example parses', () => {
  const c = parseConfig(GOOD);
  assert.equal(c.trustDomain, 'cluster.local');
  assert.equal(c.workloads[0].protocol, 'HBONE');
  assert.deepEqual(c.workloads[0].labels, { app: 'sleep', version: 'v1' });
  assert.deepEqual(c.services[0].ports, [{ port: 80, targetPort: 8080 }]);
});

test('every problem is reported with its path, its value and a fix', () => {
  const bad = GOOD.replace('addresses: [10.200.0.10]', 'addresses: [10.200.0.300]')
    .replace('protocol: HBONE', 'protocol: TLS')
    .replace('node: node-1', 'node: node-9')
    .replace('{ port: 80, targetPort: 8080 }', '{ port: 80, targetPort: 70000 }');
  assert.throws(
    () => parseConfig(bad, 'mesh.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof AmbitError);
      assert.equal(err.code, 'AMBIT_E_CONFIG');
      assert.match(err.message, /mesh\.yaml is invalid/);
      assert.match(err.message, /workloads\[0\]\.addresses\[0\]: must be an IPv4 address .* \(got "10\.200\.0\.300"\)/);
      assert.match(err.message, /workloads\[0\]\.protocol: must be HBONE .* \(got "TLS"\)/);
      assert.match(err.message, /workloads\[0\]\.node: is not among nodes: \(node-1\).* \(got "node-9"\)/);
      assert.match(err.message, /services\[0\]\.ports\[0\]\.targetPort: must be a port number 1\.\.65535 \(got 70000\)/);
      return true;
    },
  );
});

test('duplicate uids and addresses are refused', () => {
  const twice = GOOD.replace(/workloads:\n([\s\S]*?)services:/, (_m, w: string) => `workloads:\n${w}${w}services:`);
  assert.throws(() => parseConfig(twice), /uids must be unique[\s\S]*pod addresses must be unique/);
});

test('broken YAML names the file', () => {
  assert.throws(() => parseConfig('nodes: [', 'x.yaml'), /x\.yaml is not valid YAML/);
});
