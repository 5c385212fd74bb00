// Istio's GatewayAddress as istiod puts it on the wire, in both of its forms:
// `address` (a NetworkAddress: a waypoint pod's IP or its service's VIP) and
// `hostname` (a NamespacedHostname, which istiod sends in some setups, e.g.
// a waypoint whose service it does not resolve to a VIP). The bytes are
// written here by hand from Istio's field numbers (GatewayAddress: hostname 1,
// address 2, hbone_mtls_port 3; NamespacedHostname: namespace 1, hostname 2)
// so a wrong number in ambit's copy of the .proto would show, then decoded as
// the node decodes them and routed: the hostname form reaches the waypoint's
// pods through the Service of that namespace and hostname.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AddressMessage } from '../../src/protocol/messages';
import { TYPE_ADDRESS, unpack } from '../../src/protocol/protos';
import { addressFromMessage } from '../../src/sources/xds-resources';
import { MeshStore } from '../../src/state/store';
import type { Service, Workload } from '../../src/state/types';
import { resolveOutbound } from '../../src/tunnel/route';
import { modelWorkload } from '../helpers/model';

// ---- a protobuf writer small enough to check by eye ----

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return Buffer.from(out);
}
const tag = (field: number, wire: 0 | 2): Buffer => varint((field << 3) | wire);
const num = (field: number, n: number): Buffer => Buffer.concat([tag(field, 0), varint(n)]);
const bytes = (field: number, b: Buffer): Buffer => Buffer.concat([tag(field, 2), varint(b.length), b]);
const str = (field: number, s: string): Buffer => bytes(field, Buffer.from(s));
const msg = (field: number, ...parts: Buffer[]): Buffer => bytes(field, Buffer.concat(parts));
const ipv4 = (ip: string): Buffer => Buffer.from(ip.split('.').map(Number));

/** NetworkAddress { network = 1, address = 2 } */
const networkAddress = (field: number, ip: string): Buffer => msg(field, str(1, ''), bytes(2, ipv4(ip)));

/** GatewayAddress { oneof destination { NamespacedHostname hostname = 1; NetworkAddress address = 2; } uint32 hbone_mtls_port = 3; } */
const gatewayHostname = (field: number, namespace: string, hostname: string, port = 15008): Buffer =>
  msg(field, msg(1, str(1, namespace), str(2, hostname)), ...(port ? [num(3, port)] : []));
const gatewayAddress = (field: number, ip: string, port = 15008): Buffer => msg(field, networkAddress(2, ip), num(3, port));

/** Address { Service service = 2 }: Service { name 1, namespace 2, hostname 3, addresses 4, ports 5 (service_port 1, target_port 2), waypoint 7 } */
const serviceAddress = (name: string, namespace: string, vip: string, port: number, targetPort: number, waypoint?: Buffer): Buffer =>
  msg(
    2,
    str(1, name),
    str(2, namespace),
    str(3, `${name}.${namespace}.svc.cluster.local`),
    networkAddress(4, vip),
    msg(5, num(1, port), num(2, targetPort)),
    ...(waypoint ? [waypoint] : []),
  );

/** Address { Workload workload = 1 }: uid 20, name 1, namespace 2, addresses 3, tunnel_protocol 5 (HBONE 1), service_account 7, waypoint 8 */
const workloadAddress = (name: string, namespace: string, ip: string, sa: string, waypoint?: Buffer): Buffer =>
  msg(
    1,
    str(20, `Kubernetes//Pod/${namespace}/${name}`),
    str(1, name),
    str(2, namespace),
    bytes(3, ipv4(ip)),
    num(5, 1),
    str(7, sa),
    ...(waypoint ? [waypoint] : []),
  );

function decode(name: string, value: Buffer) {
  return addressFromMessage(name, unpack<AddressMessage>({ type_url: TYPE_ADDRESS, value }), 'cluster.local');
}
const serviceOf = (name: string, value: Buffer): Service => {
  const a = decode(name, value);
  assert.ok('service' in a, JSON.stringify(a));
  return a.service;
};
const workloadOf = (name: string, value: Buffer): Workload => {
  const a = decode(name, value);
  assert.ok('workload' in a, JSON.stringify(a));
  return a.workload;
};

test('GatewayAddress in the hostname form decodes to the namespace and hostname, hbone_mtls_port kept, 0 read as 15008', () => {
  const s = serviceOf(
    'default/reviews.default.svc.cluster.local',
    serviceAddress(
      'reviews',
      'default',
      '10.96.0.10',
      80,
      9080,
      gatewayHostname(7, 'istio-system', 'waypoint.istio-system.svc.cluster.local'),
    ),
  );
  assert.deepEqual(s.waypoint, {
    destination: { kind: 'hostname', namespace: 'istio-system', hostname: 'waypoint.istio-system.svc.cluster.local' },
    hboneMtlsPort: 15008,
  });
  const unset = serviceOf(
    'default/reviews.default.svc.cluster.local',
    serviceAddress('reviews', 'default', '10.96.0.10', 80, 9080, gatewayHostname(7, 'default', 'waypoint.default.svc.cluster.local', 0)),
  );
  assert.equal(unset.waypoint?.hboneMtlsPort, 15008);
  const w = workloadOf(
    'Kubernetes//Pod/default/reviews-1',
    workloadAddress('reviews-1', 'default', '10.0.1.1', 'reviews', gatewayHostname(8, 'default', 'waypoint.default.svc.cluster.local')),
  );
  assert.deepEqual(w.waypoint?.destination, { kind: 'hostname', namespace: 'default', hostname: 'waypoint.default.svc.cluster.local' });
});

test('GatewayAddress in the address form decodes to the IP', () => {
  const s = serviceOf(
    'default/reviews.default.svc.cluster.local',
    serviceAddress('reviews', 'default', '10.96.0.10', 80, 9080, gatewayAddress(7, '10.96.0.50', 15008)),
  );
  assert.deepEqual(s.waypoint, { destination: { kind: 'address', network: '', ip: '10.96.0.50' }, hboneMtlsPort: 15008 });
});

test("the hostname form routes through the waypoint Service's pods; a hostname no service has refuses rather than bypassing", () => {
  const wpNs = 'istio-system';
  const wpHost = `waypoint.${wpNs}.svc.cluster.local`;
  const reviews = serviceOf(
    'default/reviews.default.svc.cluster.local',
    serviceAddress('reviews', 'default', '10.96.0.10', 80, 9080, gatewayHostname(7, wpNs, wpHost)),
  );
  const waypointSvc: Service = {
    ...serviceOf(`${wpNs}/${wpHost}`, serviceAddress('waypoint', wpNs, '10.96.0.50', 15008, 15008)),
    selector: { wp: 'yes' },
  };
  const pods = [
    modelWorkload('wp-0', '10.200.0.50', { namespace: wpNs, serviceAccount: 'waypoint', labels: { wp: 'yes' }, uid: `${wpNs}/wp-0` }),
    modelWorkload('wp-1', '10.200.0.51', { namespace: wpNs, serviceAccount: 'waypoint', labels: { wp: 'yes' }, uid: `${wpNs}/wp-1` }),
  ];
  const store = (services: Service[]) =>
    new MeshStore({
      trustDomain: 'cluster.local',
      ca: { dir: '/nonexistent' },
      nodes: [],
      policies: [],
      rootNamespace: 'istio-system',
      controlPlane: { tokens: [] },
      workloads: [
        modelWorkload('sleep', '10.200.0.10'),
        modelWorkload('reviews-1', '10.200.0.20', { labels: { app: 'reviews' } }),
        ...pods,
      ],
      services,
    });
  const mesh = store([{ ...reviews, selector: { app: 'reviews' } }, waypointSvc]);
  const seen = new Set<string>();
  for (const x of [0, 0.9]) {
    const r = resolveOutbound(mesh, '10.96.0.10', 80, () => x, mesh.workloadByIp('10.200.0.10'));
    assert.equal(r.kind, 'hbone', JSON.stringify(r));
    if (r.kind !== 'hbone') return;
    // Authority stays the service VIP:port (what ztunnel sends a waypoint); the peer is a waypoint pod with the waypoint's identity.
    assert.deepEqual([r.ip, r.port, r.identities], ['10.96.0.10', 80, [`spiffe://cluster.local/ns/${wpNs}/sa/waypoint`]]);
    assert.equal(r.waypoint?.address, `${wpNs}/${wpHost}`);
    seen.add(r.waypoint?.ip ?? '');
  }
  assert.deepEqual([...seen].sort(), ['10.200.0.50', '10.200.0.51']);

  const missing = store([{ ...reviews, selector: { app: 'reviews' } }]);
  const r = resolveOutbound(missing, '10.96.0.10', 80, Math.random, missing.workloadByIp('10.200.0.10'));
  assert.deepEqual(r.kind === 'refuse' && r.reason, 'no_waypoint');
});
