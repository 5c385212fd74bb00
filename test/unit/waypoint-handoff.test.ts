// The node side of waypoints: which waypoint the standalone YAML gives each
// service and workload (istio.io/use-waypoint on the object, its namespace,
// `none`), the problems it reports, the GatewayAddress over xDS both ways,
// and the outbound route that hands a connection to the waypoint.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AddressMessage } from '../../src/protocol/messages';
import { TYPE_ADDRESS, unpack } from '../../src/protocol/protos';
import { parseConfig } from '../../src/sources/config';
import { addressFromMessage, ResourceError, toResources } from '../../src/sources/xds-resources';
import { MeshStore } from '../../src/state/store';
import type { GatewayAddress, MeshConfig, Service, Workload } from '../../src/state/types';
import { resolveOutbound } from '../../src/tunnel/route';
import { problemsOf as problemsWithHint } from '../helpers/mesh-yaml';
import { modelWorkload } from '../helpers/model';

const WP_IP = '10.200.0.50';

/** The problems of an invalid file, without the hint that ends the last one. */
const problemsOf = (text: string): string[] => problemsWithHint(text).map((l) => l.replace(/ \(hint: [^)]*\)$/, ''));

/** A mesh with a waypoint `waypoint` in default (its pod without netns, so no node captures it); `extra` is appended as YAML. */
function mesh(opts: { forLabel?: string; echoLabels?: string; podLabels?: string; nsLabels?: string; routes?: string } = {}): string {
  return `
trustDomain: cluster.local
nodes: [{ name: n1, address: 10.201.0.1 }]
namespaces:
  - { name: default, labels: { ${opts.nsLabels ?? ''} } }
workloads:
  - { uid: default/sleep, name: sleep, namespace: default, serviceAccount: sleep, node: n1, addresses: [10.200.0.10], labels: { app: sleep } }
  - uid: default/echo
    name: echo
    namespace: default
    serviceAccount: echo
    node: n1
    addresses: [10.200.0.20]
    labels: { app: echo${opts.podLabels ? `, ${opts.podLabels}` : ''} }
  - uid: default/waypoint-0
    name: waypoint-0
    namespace: default
    serviceAccount: waypoint
    node: n1
    addresses: [${WP_IP}]
    labels: { gateway.networking.k8s.io/gateway-name: waypoint }
services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    addresses: [10.96.0.10]
    ports: [{ port: 80, targetPort: 8080 }]
    selector: { app: echo }
    labels: { ${opts.echoLabels ?? ''} }
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata:
      name: waypoint
      namespace: default
      labels: { ${opts.forLabel ? `istio.io/waypoint-for: ${opts.forLabel}` : ''} }
    spec:
      gatewayClassName: istio-waypoint
      listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
${opts.routes ?? ''}`;
}

const at = (ip: string): GatewayAddress => ({ destination: { kind: 'address', network: '', ip }, hboneMtlsPort: 15008 });
const echoOf = (cfg: MeshConfig): { svc?: Service; pod?: Workload } => ({
  svc: cfg.services.find((s) => s.name === 'echo'),
  pod: cfg.workloads.find((w) => w.uid === 'default/echo'),
});

test('a service label opts the service in (waypoint-for service, the default); its pods are not', () => {
  const cfg = parseConfig(mesh({ echoLabels: 'istio.io/use-waypoint: waypoint' }));
  assert.deepEqual(echoOf(cfg).svc?.waypoint, at(WP_IP));
  assert.equal(echoOf(cfg).pod?.waypoint, undefined);
  assert.deepEqual(cfg.waypoints, [
    { name: 'waypoint', namespace: 'default', for: 'service', address: at(WP_IP), serviceAccount: 'waypoint' },
  ]);
  assert.deepEqual([...cfg.routes.bindings.services], [['default/echo.default.svc.cluster.local', 'default/waypoint']]);
});

test('a namespace label covers its services, and its pods when the waypoint is for all; the waypoint pod itself never', () => {
  const svcOnly = parseConfig(mesh({ nsLabels: 'istio.io/use-waypoint: waypoint' }));
  assert.deepEqual(echoOf(svcOnly).svc?.waypoint, at(WP_IP));
  assert.equal(echoOf(svcOnly).pod?.waypoint, undefined);
  const all = parseConfig(mesh({ nsLabels: 'istio.io/use-waypoint: waypoint', forLabel: 'all' }));
  assert.deepEqual(echoOf(all).pod?.waypoint, at(WP_IP));
  assert.equal(all.workloads.find((w) => w.name === 'waypoint-0')?.waypoint, undefined);
});

test("a pod's own label wins over its namespace's, and none opts a service or pod out", () => {
  const cfg = parseConfig(
    mesh({
      nsLabels: 'istio.io/use-waypoint: waypoint',
      forLabel: 'all',
      echoLabels: 'istio.io/use-waypoint: none',
      podLabels: 'istio.io/use-waypoint: none',
    }),
  );
  assert.equal(echoOf(cfg).svc?.waypoint, undefined);
  assert.equal(echoOf(cfg).pod?.waypoint, undefined);
  assert.deepEqual(cfg.workloads.find((w) => w.name === 'sleep')?.waypoint, at(WP_IP));
  // A workload label naming a service-only waypoint: no waypoint, and a warning saying why.
  const wrongKind = parseConfig(mesh({ podLabels: 'istio.io/use-waypoint: waypoint' }));
  assert.equal(echoOf(wrongKind).pod?.waypoint, undefined);
  assert.match(wrongKind.warnings?.join('\n') ?? '', /waypoint default\/waypoint is for service traffic/);
});

test('spec.addresses and a service selecting the waypoint pods give the address; none at all is a problem', () => {
  const vip = mesh({ echoLabels: 'istio.io/use-waypoint: waypoint' }).replace(
    'services:\n',
    `services:
  - { name: waypoint, namespace: default, hostname: waypoint.default.svc.cluster.local, addresses: [10.96.0.50],
      ports: [{ port: 15008 }], selector: { gateway.networking.k8s.io/gateway-name: waypoint } }
`,
  );
  assert.deepEqual(echoOf(parseConfig(vip)).svc?.waypoint, at('10.96.0.50'));
  const written = mesh({ echoLabels: 'istio.io/use-waypoint: waypoint' }).replace(
    'gatewayClassName: istio-waypoint',
    `gatewayClassName: istio-waypoint\n      addresses: [{ type: IPAddress, value: ${WP_IP} }]`,
  );
  assert.deepEqual(echoOf(parseConfig(written)).svc?.waypoint, at(WP_IP));
  const nowhere = written.replace(`value: ${WP_IP}`, 'value: 192.0.2.9');
  assert.deepEqual(problemsOf(nowhere), [
    'routes[0] (Gateway default/waypoint) spec.addresses[0].value: ' +
      "is neither a service's VIP nor a workload's address; the node tunnel finds the waypoint's pods through it (got \"192.0.2.9\")",
  ]);
  const podless = mesh().replace('labels: { gateway.networking.k8s.io/gateway-name: waypoint }', 'labels: {}');
  assert.match(problemsOf(podless).join('\n'), /^routes\[0\] \(Gateway default\/waypoint\) spec.addresses: the waypoint has no address/);
});

test('a waypoint name nobody declares is a problem naming the object and the label, wherever the label is', () => {
  assert.deepEqual(problemsOf(mesh({ echoLabels: 'istio.io/use-waypoint: wp' })), [
    'services[0].labels.istio.io/use-waypoint: names waypoint default/wp, which no Gateway of class istio-waypoint declares; ' +
      'declare it or fix the label (got "wp")',
  ]);
  assert.match(
    problemsOf(mesh({ nsLabels: 'istio.io/use-waypoint: wp' })).join('\n'),
    /^namespaces\[0\]\.labels\.istio\.io\/use-waypoint: /,
  );
  assert.match(
    problemsOf(mesh({ podLabels: 'istio.io/use-waypoint: wp' })).join('\n'),
    /^workloads\[1\] \(default\/echo\) labels\.istio\.io\/use-waypoint: names waypoint default\/wp/,
  );
});

test('routes: are compiled with the mesh (StandaloneConfig.routes); a wrong route rejects the whole file with every problem', () => {
  const route = (backend: string): string => `
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: { name: echo, namespace: default }
    spec:
      parentRefs: [{ kind: Service, group: "", name: echo, port: 80 }]
      rules: [{ backendRefs: [{ name: ${backend}, port: 80 }] }]`;
  const cfg = parseConfig(mesh({ echoLabels: 'istio.io/use-waypoint: waypoint', routes: route('echo') }));
  assert.equal(cfg.routes.routes[0]?.service, 'default/echo.default.svc.cluster.local');
  assert.equal(cfg.routes.routes[0]?.rules[0]?.backends[0]?.port, 80);
  const problems = problemsOf(mesh({ echoLabels: 'istio.io/use-waypoint: wp', routes: route('echoo') }));
  assert.equal(problems.length, 2, problems.join('\n'));
  assert.match(
    problems.join('\n'),
    /routes\[1\] \(HTTPRoute default\/echo\) spec\.rules\[0\]\.backendRefs\[0\]\.name: names no known service/,
  );
  assert.deepEqual(problemsOf(mesh().replace('namespaces:', 'namespace:')).length, 1);
  assert.deepEqual(problemsOf(mesh().replace('namespaces:\n', 'namespaces:\n  - { name: default }\n')), [
    'namespaces[1].name: duplicates namespaces[0]; names must be unique per kind and namespace (got "default")',
  ]);
});

test('xDS carries Service.waypoint and Workload.waypoint both ways (address and hostname forms)', () => {
  const cfg = parseConfig(mesh({ nsLabels: 'istio.io/use-waypoint: waypoint', forLabel: 'all' }));
  const svc = echoOf(cfg).svc;
  assert.ok(svc);
  svc.waypoint = {
    destination: { kind: 'hostname', namespace: 'default', hostname: 'waypoint.default.svc.cluster.local' },
    hboneMtlsPort: 15008,
  };
  const store = new MeshStore(cfg);
  const res = toResources(cfg, (s) => store.endpoints(s)).get(TYPE_ADDRESS);
  const decode = (name: string) => {
    const r = res?.get(name);
    assert.ok(r, name);
    return addressFromMessage(name, unpack<AddressMessage>(r.resource), 'cluster.local');
  };
  const s = decode('default/echo.default.svc.cluster.local');
  assert.deepEqual('service' in s && s.service.waypoint, svc.waypoint);
  const w = decode('default/echo');
  assert.deepEqual('workload' in w && w.workload.waypoint, at(WP_IP));
  const wp = decode('default/waypoint-0');
  assert.equal('workload' in wp && wp.workload.waypoint, undefined);
  // A port left unset on the wire is Istio's 15008; a GatewayAddress naming nothing is refused.
  const msg = unpack<AddressMessage>(res?.get('default/echo')?.resource ?? { type_url: '', value: Buffer.alloc(0) });
  assert.ok(msg.workload?.waypoint);
  msg.workload.waypoint.hbone_mtls_port = 0;
  const unset = addressFromMessage('default/echo', msg, 'cluster.local');
  assert.equal('workload' in unset && unset.workload.waypoint?.hboneMtlsPort, 15008);
  msg.workload.waypoint = { hbone_mtls_port: 15008, address: null, hostname: null };
  assert.throws(
    () => addressFromMessage('default/echo', msg, 'cluster.local'),
    (e: unknown) => {
      assert.ok(e instanceof ResourceError);
      assert.match(e.message, /^default\/echo: waypoint .* names neither an address nor a namespace and hostname/);
      return true;
    },
  );
});

// ---- route decisions ----

const wl = modelWorkload;

function routeStore(opts: { svcWaypoint?: GatewayAddress; podWaypoint?: GatewayAddress } = {}): MeshStore {
  return new MeshStore({
    trustDomain: 'cluster.local',
    ca: { dir: '/tmp/x' },
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
    nodes: [{ name: 'n1', address: '10.0.0.1' }],
    workloads: [
      wl('sleep', '10.200.0.10'),
      wl('echo', '10.200.0.20', { labels: { app: 'echo' }, waypoint: opts.podWaypoint }),
      wl('wp-0', '10.200.0.50', { serviceAccount: 'waypoint', labels: { wp: 'yes' } }),
      wl('wp-1', '10.200.0.51', { serviceAccount: 'waypoint', labels: { wp: 'yes' } }),
    ],
    services: [
      {
        name: 'echo',
        namespace: 'default',
        hostname: 'echo.default.svc.cluster.local',
        addresses: ['10.96.0.10'],
        ports: [{ port: 80, targetPort: 8080 }],
        selector: { app: 'echo' },
        waypoint: opts.svcWaypoint,
      },
      {
        name: 'waypoint',
        namespace: 'default',
        hostname: 'waypoint.default.svc.cluster.local',
        addresses: ['10.96.0.50'],
        ports: [{ port: 15008, targetPort: 15008 }],
        selector: { wp: 'yes' },
      },
    ],
  });
}

test('to a service with a waypoint: HBONE to a waypoint pod with its identity, authority the VIP:port (not an endpoint)', () => {
  const store = routeStore({ svcWaypoint: at('10.96.0.50') });
  const src = store.workloadByIp('10.200.0.10');
  const seen = new Set<string>();
  for (const x of [0, 0.3, 0.6, 0.9]) {
    const r = resolveOutbound(store, '10.96.0.10', 80, () => x, src);
    assert.equal(r.kind, 'hbone');
    if (r.kind !== 'hbone') return;
    assert.deepEqual(
      [r.ip, r.port, r.service?.name, r.identities],
      ['10.96.0.10', 80, 'echo', ['spiffe://cluster.local/ns/default/sa/waypoint']],
    );
    assert.equal(r.waypoint?.address, '10.96.0.50');
    seen.add(r.waypoint?.ip ?? '');
  }
  assert.deepEqual([...seen].sort(), ['10.200.0.50', '10.200.0.51']);
  // An unknown service port is refused before any waypoint is involved.
  assert.equal(resolveOutbound(store, '10.96.0.10', 81, Math.random, src).kind, 'refuse');
});

test('to a pod with a waypoint: authority podIP:port, straight to the pod address the GatewayAddress names', () => {
  const store = routeStore({ podWaypoint: at('10.200.0.51') });
  const r = resolveOutbound(store, '10.200.0.20', 8080, Math.random, store.workloadByIp('10.200.0.10'));
  assert.equal(r.kind, 'hbone');
  if (r.kind !== 'hbone') return;
  assert.deepEqual(
    [r.ip, r.port, r.waypoint, r.workload.name],
    ['10.200.0.20', 8080, { address: '10.200.0.51', ip: '10.200.0.51' }, 'wp-1'],
  );
  // Through a service without a waypoint, the endpoint's own waypoint still takes it, with the endpoint as authority.
  const viaSvc = resolveOutbound(store, '10.96.0.10', 80, Math.random, store.workloadByIp('10.200.0.10'));
  assert.deepEqual(viaSvc.kind === 'hbone' && [viaSvc.ip, viaSvc.port, viaSvc.waypoint?.ip, viaSvc.service?.name], [
    '10.200.0.20',
    8080,
    '10.200.0.51',
    'echo',
  ]);
});

test('without a waypoint (none, or never set) the route is direct', () => {
  const store = routeStore();
  const r = resolveOutbound(store, '10.96.0.10', 80, Math.random, store.workloadByIp('10.200.0.10'));
  assert.deepEqual(r.kind === 'hbone' && [r.ip, r.port, r.waypoint], ['10.200.0.20', 8080, undefined]);
});

test('never a loop: traffic from the waypoint itself goes straight to an endpoint', () => {
  const store = routeStore({ svcWaypoint: at('10.96.0.50'), podWaypoint: at('10.96.0.50') });
  for (const ip of ['10.200.0.50', '10.200.0.51']) {
    const r = resolveOutbound(store, '10.96.0.10', 80, Math.random, store.workloadByIp(ip));
    assert.deepEqual(r.kind === 'hbone' && [r.ip, r.port, r.waypoint, r.identities], [
      '10.200.0.20',
      8080,
      undefined,
      ['spiffe://cluster.local/ns/default/sa/echo'],
    ]);
  }
  // Known as a waypoint pod by its Kubernetes label alone (the standalone YAML keeps labels; xDS does not).
  const labelled = wl('other', '10.200.0.99', { labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } });
  const r = resolveOutbound(store, '10.96.0.10', 80, Math.random, labelled);
  assert.equal(r.kind === 'hbone' && r.waypoint, undefined);
});

test('a waypoint that cannot be reached refuses the connection rather than going around it', () => {
  const nowhere = routeStore({ svcWaypoint: at('192.0.2.1') });
  assert.deepEqual(resolveOutbound(nowhere, '10.96.0.10', 80, Math.random, nowhere.workloadByIp('10.200.0.10')), {
    kind: 'refuse',
    reason: 'no_waypoint',
    service: nowhere.serviceByVip('10.96.0.10'),
  });
  const otherPort = routeStore({ podWaypoint: { ...at('10.96.0.50'), hboneMtlsPort: 15009 } });
  const r = resolveOutbound(otherPort, '10.200.0.20', 8080, Math.random, otherPort.workloadByIp('10.200.0.10'));
  assert.deepEqual(r.kind === 'refuse' && [r.reason, r.workload?.name], ['no_waypoint', 'echo']);
});

const policies = (...docs: string[]): string => `policies:\n${docs.join('')}`;
const policy = (name: string, spec: string): string => `
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: { name: ${name}, namespace: default }
    spec:
${spec}`;

test("a targetRefs AuthorizationPolicy under policies: is the waypoint's (routes.policies), noted, not converted for the node", () => {
  const cfg = parseConfig(
    mesh({ echoLabels: 'istio.io/use-waypoint: waypoint' }) +
      policies(
        policy(
          'echo-admin',
          '      targetRefs: [{ kind: Service, group: "", name: echo }]\n      action: DENY\n      rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]',
        ),
        policy(
          'wp-get',
          '      targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]\n      rules: [{ to: [{ operation: { methods: ["GET"] } }] }]',
        ),
      ),
  );
  assert.deepEqual(
    cfg.routes.policies.map((p) => [p.name, p.action, p.targets]),
    [
      ['echo-admin', 'DENY', [{ kind: 'Service', namespace: 'default', service: 'default/echo.default.svc.cluster.local' }]],
      ['wp-get', 'ALLOW', [{ kind: 'Gateway', namespace: 'default', name: 'waypoint' }]],
    ],
  );
  assert.deepEqual(cfg.policies, []);
  assert.deepEqual(cfg.warnings, []);
  assert.deepEqual(cfg.notes, [
    'policies[0] (default/echo-admin) spec.targetRefs: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
    'policies[1] (default/wp-get) spec.targetRefs: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
  ]);
});

test('a wrong targetRefs policy under policies: is reported once, under its own path', () => {
  const problems = problemsOf(
    mesh() +
      policies(
        policy(
          'x',
          '      targetRefs: [{ kind: Service, group: "", name: echoo }]\n      rules: [{ to: [{ operation: { paths: ["/a*b*"] } }] }]',
        ),
      ),
  );
  assert.deepEqual(problems, [
    'policies[0] (AuthorizationPolicy default/x) spec.targetRefs[0].name: names no known service (services in default: echo) (got "echoo")',
    'policies[0] (AuthorizationPolicy default/x) spec.rules[0].to[0].operation.paths[0]: Istio allows * only at the start or the end, ' +
      'e.g. "cluster.local/ns/foo/*", /api/* or *.png (got "/a*b*")',
  ]);
});

test('a selector policy with HTTP fields on a pod behind the waypoint stays L4 and the warning says to use targetRefs', () => {
  const cfg = parseConfig(
    mesh({ forLabel: 'all', podLabels: 'istio.io/use-waypoint: waypoint' }) +
      policies(
        policy('echo-get', '      selector: { matchLabels: { app: echo } }\n      rules: [{ to: [{ operation: { methods: ["GET"] } }] }]'),
      ),
  );
  assert.deepEqual(cfg.policies.find((p) => p.name === 'echo-get')?.rules, []);
  assert.equal(cfg.warnings?.length, 1);
  assert.match(
    cfg.warnings?.[0] ?? '',
    /^policies\[0\] \(default\/echo-get\) spec\.rules\[0\]\.to\[0\]\.operation\.methods: HTTP attribute; .* this ALLOW rule is ignored; workload default\/echo sits behind waypoint default\/waypoint, which sees HTTP: attach the policy to the waypoint instead \(spec\.targetRefs/,
  );
});
