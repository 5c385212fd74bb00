// Admission caps on :15008 and the verified-source rules, as logic: which
// connection a cap refuses, that closing frees its slot, and which claims a
// peer's baggage may add to what its certificate and address prove.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { test } from 'node:test';
import type { MeshConfig, Workload } from '../../src/state/types';
import { Admission } from '../../src/tunnel/admission';
import { type MeshView, verifiedSource } from '../../src/tunnel/source';

let port = 1000;
const sock = (ip: string): net.Socket =>
  Object.assign(new EventEmitter(), { remoteAddress: ip, remotePort: port++ }) as unknown as net.Socket;

test('admission: per-source handshake cap, per-pod handshake cap, per-source connection cap; a close or a finished handshake frees its slot', () => {
  const a = new Admission({ maxPendingHandshakes: 3, maxPendingHandshakesPerSource: 2, maxConnectionsPerSource: 3 });
  const x1 = sock('10.0.0.1');
  const x2 = sock('10.0.0.1');
  assert.equal(a.admit(x1), undefined);
  assert.equal(a.admit(x2), undefined);
  assert.equal(a.admit(sock('10.0.0.1')), 'source_handshake_cap');
  assert.equal(a.admit(sock('10.0.0.2')), undefined);
  assert.equal(a.admit(sock('10.0.0.3')), 'handshake_cap');
  a.handshakeDone(x1);
  a.handshakeDone(x1); // twice (secure then close) counts once
  assert.equal(a.admit(sock('10.0.0.1')), undefined, 'a finished handshake frees a pending slot');
  assert.equal(a.admit(sock('10.0.0.1')), 'source_cap', 'three connections open from 10.0.0.1');
  (x2 as unknown as EventEmitter).emit('close');
  assert.deepEqual(a.stats(), { pending: 2, open: 3, sources: 2 });
});

test("verified source: the address's workload if it runs as the proven identity; baggage only from a non-workload address and only naming a workload of that identity", () => {
  const w = (name: string, ip: string, sa: string): Workload => ({
    uid: name,
    name,
    namespace: 'ns',
    serviceAccount: sa,
    node: 'n',
    addresses: [ip],
    protocol: 'HBONE',
    dataplane: 'ambient',
    labels: {},
    capacity: 1,
    authorizationPolicies: [],
  });
  const workloads = [w('a', '10.0.0.1', 'sa-a'), w('b', '10.0.0.2', 'sa-b')];
  const mesh: MeshView = {
    config: { workloads, services: [] } as unknown as MeshConfig,
    workloadByIp: (ip) => workloads.find((x) => x.addresses.includes(ip)),
    identityOf: (x) => `spiffe://td/ns/${x.namespace}/sa/${x.serviceAccount}`,
    endpoints: () => [],
  };
  const id = (sa: string): string => `spiffe://td/ns/ns/sa/${sa}`;
  assert.equal(
    verifiedSource(mesh, '10.0.0.1', id('sa-a'), { name: 'b', namespace: 'ns' }).workload?.name,
    'a',
    'the address wins over baggage',
  );
  assert.deepEqual(verifiedSource(mesh, '10.0.0.1', id('sa-b'), { name: 'b', namespace: 'ns' }), {
    namespace: 'ns',
    principal: id('sa-b'),
    how: 'address_identity_mismatch',
  });
  assert.equal(
    verifiedSource(mesh, '192.168.0.9', id('sa-b'), { name: 'b', namespace: 'ns' }).workload?.name,
    'b',
    'baggage that agrees with the identity',
  );
  assert.equal(
    verifiedSource(mesh, '192.168.0.9', id('sa-b'), { name: 'a', namespace: 'ns' }).workload,
    undefined,
    'baggage naming a workload of another identity',
  );
  assert.equal(
    verifiedSource(mesh, '192.168.0.9', id('sa-b'), { name: 'ghost', namespace: 'x' }).namespace,
    'ns',
    'namespace from the SPIFFE id',
  );
});
