import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MeshStore } from '../../src/state/store';
import type { MeshConfig } from '../../src/state/types';
import { baggageOf, connectHeaders, connIdOf, newTraceparent, parseAuthority } from '../../src/tunnel/headers';
import { pickWeighted, resolveOutbound } from '../../src/tunnel/route';
import { modelWorkload } from '../helpers/model';

const w = modelWorkload;

const cfg: MeshConfig = {
  trustDomain: 'cluster.local',
  ca: { dir: '/tmp/x' },
  policies: [],
  rootNamespace: 'istio-system',
  controlPlane: { tokens: [] },
  nodes: [{ name: 'n1', address: '10.0.0.1' }],
  workloads: [
    w('a', '10.200.0.1', { labels: { app: 'echo' } }),
    w('b', '10.200.0.2', { labels: { app: 'echo' }, capacity: 3 }),
    w('plain', '10.200.0.3', { protocol: 'NONE' }),
    w('other-ns', '10.200.0.4', { labels: { app: 'echo' }, namespace: 'prod' }),
  ],
  services: [
    {
      name: 'echo',
      namespace: 'default',
      hostname: 'echo.default.svc.cluster.local',
      addresses: ['10.96.0.10'],
      ports: [{ port: 80, targetPort: 8080 }],
      selector: { app: 'echo' },
    },
  ],
};
const store = new MeshStore(cfg);

test('a mesh workload gets HBONE with its identity; a NONE workload and unknown addresses go plain', () => {
  const r = resolveOutbound(store, '10.200.0.1', 9000);
  assert.equal(r.kind, 'hbone');
  assert.deepEqual(r.kind === 'hbone' && r.identities, ['spiffe://cluster.local/ns/default/sa/a']);
  assert.equal(resolveOutbound(store, '10.200.0.3', 9000).kind, 'plain');
  assert.deepEqual(resolveOutbound(store, '192.0.2.1', 443), { kind: 'plain', ip: '192.0.2.1', port: 443 });
});

test('a service VIP picks an endpoint of the same namespace, weighted by capacity, and translates the port', () => {
  const counts: Record<string, number> = {};
  for (let i = 0; i < 4000; i++) {
    const r = resolveOutbound(store, '10.96.0.10', 80);
    assert.equal(r.kind, 'hbone');
    if (r.kind !== 'hbone') return;
    assert.equal(r.port, 8080);
    assert.equal(r.service?.hostname, 'echo.default.svc.cluster.local');
    counts[r.workload.name] = (counts[r.workload.name] ?? 0) + 1;
  }
  assert.deepEqual(Object.keys(counts).sort(), ['a', 'b'], 'prod/other-ns is not an endpoint of default/echo');
  const ratio = (counts.b ?? 0) / (counts.a ?? 0);
  assert.ok(ratio > 2.4 && ratio < 3.7, `weights 1:3, got ${JSON.stringify(counts)}`);
  assert.deepEqual(resolveOutbound(store, '10.96.0.10', 81).kind, 'refuse');
});

test('pickWeighted never picks a zero-capacity item and returns nothing when all are zero', () => {
  const items = [
    { capacity: 0, n: 1 },
    { capacity: 1, n: 2 },
  ];
  for (const x of [0, 0.5, 0.999999]) assert.equal(pickWeighted(items, () => x)?.n, 2);
  assert.equal(
    pickWeighted([{ capacity: 0 }], () => 0.3),
    undefined,
  );
});

test('CONNECT headers: authority, baggage, forwarded with host for services, W3C traceparent', () => {
  const { traceparent, connId } = newTraceparent();
  assert.match(traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(connIdOf(traceparent), connId);
  const h = connectHeaders({
    authority: '10.200.0.1:8080',
    traceparent,
    baggage: baggageOf(w('a', '10.200.0.1', { labels: { app: 'sleep', version: 'v1' } })),
    clientAddr: '10.200.0.1:4242',
    service: cfg.services[0],
  });
  assert.equal(h[':authority'], '10.200.0.1:8080');
  assert.equal(h.baggage, 'k8s.namespace.name=default,k8s.pod.name=a,service.name=sleep,service.version=v1');
  assert.equal(h.forwarded, 'for="10.200.0.1:4242";host=echo.default.svc.cluster.local');
});

test('authorities must be IPv4:port', () => {
  assert.deepEqual(parseAuthority('10.1.2.3:80'), { ip: '10.1.2.3', port: 80 });
  for (const bad of ['10.1.2.3', 'host:80', '10.1.2.300:80', '10.1.2.3:0', '10.1.2.3:70000', undefined])
    assert.equal(parseAuthority(bad), undefined, String(bad));
});
