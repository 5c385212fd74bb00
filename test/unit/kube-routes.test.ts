// The control plane's cluster view of the waypoints' L7 objects against the
// local stand-in for the API server (test/helpers/fake-kube.ts): HTTPRoutes,
// GRPCRoutes and AuthorizationPolicies as the API server serves them
// (defaulted fields, status), compiled into the routes it serves, the
// policies without targetRefs converted for the node tunnel, what is wrong
// in one object a warning naming it, and no CRDs no routes.

import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import pino from 'pino';
import { KubeClient } from '../../src/kube/client';
import { KubeClusterSource } from '../../src/kube/cluster-source';
import type { EndpointSlice, Gateway, Namespace, Pod, Service } from '../../src/kube/types';
import type { MeshConfig } from '../../src/state/types';
import { FakeKube, fixture } from '../helpers/fake-kube';
import { waitFor } from '../helpers/proc';

const log = pino({ level: 'silent' });
const WEB = 'demo/web.demo.svc.cluster.local';
const ECHO = 'demo/echo.demo.svc.cluster.local';
const WAYPOINT_REF = { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' };
const INGRESS_REF = { name: 'public', namespace: 'ingress' }; // group and kind default to a Gateway's

type Obj = { kind: string; metadata: { name: string; namespace?: string } & Record<string, unknown> } & Record<string, unknown>;

/** An HTTPRoute as the API server returns it: its defaults filled in, a status written by a controller. */
function httpRoute(name: string, parentRefs: unknown[], rules?: unknown[]): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'demo', uid: `uid-${name}`, generation: 1, creationTimestamp: '2026-11-21T10:00:00Z' },
    spec: {
      parentRefs,
      rules: rules ?? [
        {
          matches: [{ path: { type: 'PathPrefix', value: '/' } }],
          backendRefs: [{ group: '', kind: 'Service', name: 'web', port: 80, weight: 1 }],
        },
      ],
    },
    status: { parents: [] },
  };
}

function grpcRoute(name: string): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name, namespace: 'demo', uid: `uid-${name}` },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 9000 }],
      rules: [
        {
          matches: [{ method: { type: 'Exact', service: 'echo.Echo', method: 'Say' } }],
          backendRefs: [{ group: '', kind: 'Service', name: 'echo', port: 9000, weight: 1 }],
        },
      ],
    },
  };
}

function policy(name: string, spec: Record<string, unknown>, namespace = 'demo'): Obj {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace, uid: `uid-${name}` }, spec };
}

const BASE: MeshConfig = {
  trustDomain: 'cluster.local',
  ca: { dir: '' },
  nodes: [],
  workloads: [],
  services: [],
  policies: [],
  rootNamespace: 'istio-system',
  controlPlane: { tokens: [] },
};

/**
 * The fake API server with demo (ambient, every service of it through the
 * waypoint demo/waypoint): web (HTTP), echo (gRPC), the waypoint's pod and
 * service, and an ingress Gateway of another class; then the cluster view
 * over it, started.
 */
async function cluster(absent: string[] = []): Promise<{ api: FakeKube; source: KubeClusterSource; put(o: Obj): void; stop(): void }> {
  const api = new FakeKube();
  for (const k of absent) api.absent.add(k);
  await new Promise<void>((r) => api.server.listen(0, '127.0.0.1', () => r()));
  const client = new KubeClient({ server: `http://127.0.0.1:${(api.server.address() as AddressInfo).port}` });
  const put = (o: Obj): void => api.put(o);
  const as = (kind: string, o: { metadata: { name: string } }): Obj => ({ ...o, kind }) as unknown as Obj;
  const ns = fixture<Namespace>('namespace');
  ns.metadata.labels = { ...ns.metadata.labels, 'istio.io/use-waypoint': 'waypoint' };
  put(as('Namespace', ns));
  const web = fixture<Pod>('pod');
  Object.assign(web.metadata, { name: 'web-5b8d7c9f6-qz4lm', uid: 'a4e9c2d1-6b3f-4f8e-8c7a-1d2e3f4a5b6c', labels: { app: 'web' } });
  Object.assign(web.status, { podIP: '10.244.2.5', podIPs: [{ ip: '10.244.2.5' }] });
  put(as('Pod', web));
  put(as('Pod', fixture<Pod>('waypoint-pod')));
  put(as('Service', fixture<Service>('service')));
  const echo = fixture<Service>('service');
  Object.assign(echo.metadata, { name: 'echo', uid: 'e1c2o3', labels: { app: 'echo' } });
  Object.assign(echo.spec, {
    clusterIP: '10.96.14.200',
    clusterIPs: ['10.96.14.200'],
    selector: { app: 'echo' },
    ports: [{ name: 'grpc', port: 9000, protocol: 'TCP', targetPort: 9000, appProtocol: 'grpc' }],
  });
  put(as('Service', echo));
  put(as('Service', fixture<Service>('waypoint-service')));
  put(as('EndpointSlice', fixture<EndpointSlice>('endpointslice')));
  put(as('Gateway', fixture<Gateway>('gateway')));
  put(as('Gateway', fixture<Gateway>('gateway-ingress')));
  const source = new KubeClusterSource(client, log);
  const stop = (): void => {
    source.stop();
    api.server.closeAllConnections();
    api.server.close();
  };
  try {
    await source.start();
  } catch (err) {
    stop();
    throw err;
  }
  return { api, source, put, stop };
}

test("the cluster's HTTPRoutes, GRPCRoutes and targeted AuthorizationPolicies are its waypoint's; the others are the node tunnel's", async () => {
  const c = await cluster();
  try {
    // Another controller's first: each watch delivers in order, so once the rest is seen, these are too.
    c.put(httpRoute('ingress-only', [INGRESS_REF]));
    c.put(policy('ingress-authz', { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'public' }] }, 'ingress'));
    c.put(httpRoute('web', [{ group: '', kind: 'Service', name: 'web', port: 80 }, INGRESS_REF]));
    c.put(grpcRoute('echo'));
    c.put(
      policy('waypoint-deny', {
        targetRefs: [WAYPOINT_REF],
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/admin'] } }] }],
      }),
    );
    c.put(
      policy('web-l4', {
        selector: { matchLabels: { app: 'web' } },
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/sleep'] } }] }],
      }),
    );
    const base: MeshConfig = {
      ...BASE,
      policyDocs: [
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'file-web-get', namespace: 'demo' },
          spec: { targetRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ to: [{ operation: { methods: ['GET'] } }] }] },
        },
      ],
    };
    await waitFor(
      'the routes and policies watched',
      () =>
        c.source.mesh(base).routes.routes.length === 2 &&
        c.source.mesh(base).routes.policies.length === 2 &&
        c.source.mesh(base).policies.length,
    );
    const m = c.source.mesh(base);
    assert.deepEqual(m.warnings, [], 'the ingress route and policy are another controller’s: not a word');
    assert.deepEqual(
      m.routes.routes.map((r) => [r.service, r.port, r.rules.map((x) => `${x.origin.kind} ${x.origin.namespace}/${x.origin.name}`)]),
      [
        [WEB, 80, ['HTTPRoute demo/web']],
        [ECHO, 9000, ['GRPCRoute demo/echo']],
      ],
    );
    assert.deepEqual(m.routes.routes[1]?.rules[0]?.matches[0]?.path, { type: 'Exact', value: '/echo.Echo/Say' });
    assert.deepEqual(
      [m.routes.bindings.services.get(WEB), m.routes.bindings.services.get(ECHO)],
      ['demo/waypoint', 'demo/waypoint'],
      'the routes are served by the waypoint the namespace uses',
    );
    assert.deepEqual(
      m.routes.waypoints.map((w) => `${w.namespace}/${w.name}`),
      ['demo/waypoint'],
    );
    assert.deepEqual(
      m.routes.policies.map((p) => [`${p.namespace}/${p.name}`, p.action, p.targets]),
      [
        ['demo/file-web-get', 'ALLOW', [{ kind: 'Service', namespace: 'demo', service: WEB }]],
        ['demo/waypoint-deny', 'DENY', [{ kind: 'Gateway', namespace: 'demo', name: 'waypoint' }]],
      ],
      "the file's targeted policy and the cluster's",
    );
    assert.deepEqual(
      m.policies.map((p) => `${p.namespace}/${p.name}`),
      ['demo/web-l4'],
      'only the policy without targetRefs is converted for the node tunnel',
    );
    assert.deepEqual(m.workloads.find((w) => w.labels.app === 'web')?.authorizationPolicies, ['demo/web-l4']);
    assert.ok(
      m.notes?.includes(
        'AuthorizationPolicy demo/waypoint-deny spec.targetRefs: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
      ),
      m.notes?.join('\n'),
    );

    // Watch events: a route deleted goes, one added comes.
    c.api.delete('GRPCRoute', 'demo', 'echo');
    await waitFor('the GRPCRoute deleted', () => c.source.mesh(base).routes.routes.every((r) => r.service !== ECHO));
    c.put(
      httpRoute(
        'web-v2',
        [{ group: '', kind: 'Service', name: 'web' }],
        [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/v2' } }],
            backendRefs: [{ group: '', kind: 'Service', name: 'web', port: 80, weight: 1 }],
          },
        ],
      ),
    );
    await waitFor('the HTTPRoute added', () => c.source.mesh(base).routes.routes.some((r) => r.port === undefined));
    assert.deepEqual(
      c.source.mesh(base).routes.routes.map((r) => [r.service, r.port, r.rules.map((x) => x.origin.name)]),
      [
        [WEB, 80, ['web']],
        [WEB, undefined, ['web-v2']],
      ],
    );
  } finally {
    c.stop();
  }
});

test('a wrong object in the cluster is a warning naming it and its field; everything else is served', async () => {
  const c = await cluster();
  try {
    c.put(httpRoute('web', [{ group: '', kind: 'Service', name: 'web' }]));
    c.put(
      httpRoute(
        'bad-regex',
        [{ group: '', kind: 'Service', name: 'web', port: 80 }],
        [
          {
            matches: [{ path: { type: 'RegularExpression', value: '/api/(?=v1)' } }],
            backendRefs: [{ group: '', kind: 'Service', name: 'web', port: 80, weight: 1 }],
          },
        ],
      ),
    );
    // The ingress parent is left out before reading: the problem still names the parentRef as written, [1].
    c.put(httpRoute('typo', [INGRESS_REF, { group: '', kind: 'Service', name: 'webb' }]));
    c.put(policy('bad-l4', { action: 'ALOW', selector: { matchLabels: { app: 'web' } } }));
    c.put(policy('bad-l7', { targetRefs: [{ ...WAYPOINT_REF, name: 'waypoint-typo' }] }));
    await waitFor(
      'every object watched',
      () => (c.source.mesh(BASE).warnings?.length ?? 0) >= 4 && c.source.mesh(BASE).routes.routes.length,
    );
    const m = c.source.mesh(BASE);
    const find = (re: RegExp): string =>
      m.warnings?.find((w) => re.test(w)) ?? assert.fail(`no warning ${re} in:\n${m.warnings?.join('\n')}`);
    assert.match(
      find(/^HTTPRoute demo\/bad-regex /),
      /^HTTPRoute demo\/bad-regex spec\.rules\[0\]\.matches\[0\]\.path\.value: .*\(got "\/api\/\(\?=v1\)"\)$/,
    );
    assert.match(
      find(/^HTTPRoute demo\/typo /),
      /^HTTPRoute demo\/typo spec\.parentRefs\[1\]\.name: names no known service .*\(got "webb"\)$/,
    );
    assert.match(find(/^AuthorizationPolicy demo\/bad-l4 /), /^AuthorizationPolicy demo\/bad-l4 spec\.action: must be ALLOW/);
    assert.match(
      find(/^AuthorizationPolicy demo\/bad-l7 /),
      /^AuthorizationPolicy demo\/bad-l7 spec\.targetRefs\[0\]\.name: names no waypoint/,
    );
    assert.equal(m.warnings?.length, 4, m.warnings?.join('\n'));
    assert.ok(
      m.routes.warnings.some((w) => w.startsWith('HTTPRoute demo/bad-regex ')),
      'the route problems are the waypoint’s too',
    );
    assert.deepEqual(
      m.routes.routes.map((r) => [r.service, r.rules.map((x) => x.origin.name)]),
      [[WEB, ['web']]],
      'the good route is served, the wrong ones are not (not half of them either)',
    );
    assert.deepEqual(m.routes.policies, []);
    assert.deepEqual(m.policies, []);
    assert.deepEqual(
      m.waypoints?.map((w) => w.name),
      ['waypoint'],
    );

    // Fixed, the warning goes and the route is served.
    c.put(
      httpRoute(
        'typo',
        [INGRESS_REF, { group: '', kind: 'Service', name: 'web', port: 80 }],
        [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/typo' } }],
            backendRefs: [{ group: '', kind: 'Service', name: 'web', port: 80, weight: 1 }],
          },
        ],
      ),
    );
    await waitFor('the fixed route', () => c.source.mesh(BASE).warnings?.length === 3);
    assert.deepEqual(
      c.source.mesh(BASE).routes.routes.map((r) => [r.service, r.port, r.rules.map((x) => x.origin.name)]),
      [
        [WEB, 80, ['typo']],
        [WEB, undefined, ['web']],
      ],
    );
  } finally {
    c.stop();
  }
});

test("the cluster's DestinationRules are its waypoint's: one for a sidecar (workloadSelector) is left out, a wrong one is a warning naming it", async () => {
  const c = await cluster();
  const rule = (name: string, spec: Record<string, unknown>): Obj => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name, namespace: 'demo', uid: `uid-${name}`, generation: 1 },
    spec,
  });
  try {
    c.put(rule('sidecar-only', { host: 'echo', workloadSelector: { matchLabels: { app: 'echo' } } }));
    c.put(rule('typo', { host: 'echo', trafficPolicy: { outlierDetection: { baseEjectionTim: '1s' } } }));
    c.put(
      rule('web', {
        host: 'web',
        trafficPolicy: { connectionPool: { tcp: { maxConnections: 4 } } },
        subsets: [{ name: 'v1', labels: { version: 'v1' } }],
      }),
    );
    await waitFor('the rules watched', () => c.source.mesh(BASE).routes.destinations.length === 1 && c.source.mesh(BASE).warnings?.length);
    const m = c.source.mesh(BASE);
    assert.deepEqual(
      m.routes.destinations.map((d) => [
        `${d.namespace}/${d.name}`,
        d.service,
        d.trafficPolicy.connectionPool?.maxConnections,
        d.subsets.length,
      ]),
      [['demo/web', WEB, 4, 1]],
    );
    assert.deepEqual(m.warnings, [
      'DestinationRule demo/typo spec.trafficPolicy.outlierDetection.baseEjectionTim: unknown field; did you mean `baseEjectionTime`? (got "1s")',
    ]);
  } finally {
    c.stop();
  }
});

test("the cluster's mesh VirtualServices are its waypoint's: one bound to an ingress gateway only is left out, a wrong one is a warning naming it", async () => {
  const c = await cluster();
  const vs = (name: string, spec: Record<string, unknown>): Obj => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: { name, namespace: 'demo', uid: `uid-${name}`, generation: 1 },
    spec,
  });
  try {
    c.put(vs('ingress', { hosts: ['echo'], gateways: ['istio-system/ingress'], http: [{ route: [{ destination: { host: 'echo' } }] }] }));
    c.put(vs('typo', { hosts: ['echo'], http: [{ route: [{ destination: { host: 'echo' } }], timeot: '1s' }] }));
    c.put(
      vs('web', {
        hosts: ['web'],
        gateways: ['mesh', 'istio-system/ingress'],
        http: [{ route: [{ destination: { host: 'web', port: { number: 80 } } }], fault: { abort: { httpStatus: 503 } } }],
      }),
    );
    await waitFor(
      'the VirtualServices watched',
      () => c.source.mesh(BASE).routes.routes.length === 1 && c.source.mesh(BASE).warnings?.length,
    );
    const m = c.source.mesh(BASE);
    assert.deepEqual(
      m.routes.routes.map((r) => [r.service, r.rules.map((x) => [x.origin.kind, x.origin.name, x.fault?.abort?.status])]),
      [[WEB, [['VirtualService', 'web', 503]]]],
    );
    assert.equal(m.warnings?.length, 1, JSON.stringify(m.warnings));
    assert.match(String(m.warnings?.[0]), /^VirtualService demo\/typo spec\.http\[0\]\.timeot: unknown field; did you mean `timeout`\?/);
  } finally {
    c.stop();
  }
});

test("the cluster's HTTPLocalRateLimitPolicies on a Service are its waypoint's; one on a Linkerd Server is left out; a wrong one is a warning", async () => {
  const c = await cluster();
  const policy = (name: string, spec: Record<string, unknown>): Obj => ({
    apiVersion: 'policy.linkerd.io/v1alpha1',
    kind: 'HTTPLocalRateLimitPolicy',
    metadata: { name, namespace: 'demo', uid: `uid-${name}`, generation: 1 },
    spec,
  });
  try {
    c.put(
      policy('linkerd-server', {
        targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'web-http' },
        total: { requestsPerSecond: 1 },
      }),
    );
    c.put(policy('typo', { targetRef: { kind: 'Service', name: 'echo' }, identty: { requestsPerSecond: 1 } }));
    c.put(policy('web', { targetRef: { group: '', kind: 'Service', name: 'web' }, identity: { requestsPerSecond: 5 } }));
    await waitFor(
      'the policies watched',
      () => c.source.mesh(BASE).routes.rateLimits?.length === 1 && c.source.mesh(BASE).warnings?.length,
    );
    const m = c.source.mesh(BASE);
    assert.deepEqual(m.routes.rateLimits, [{ namespace: 'demo', name: 'web', service: WEB, identity: 5, overrides: [] }]);
    assert.equal(m.warnings?.length, 1, JSON.stringify(m.warnings));
    assert.match(String(m.warnings?.[0]), /^HTTPLocalRateLimitPolicy demo\/typo spec\.identty: unknown field; did you mean `identity`\?/);
  } finally {
    c.stop();
  }
});

test('without the HTTPRoute, GRPCRoute and AuthorizationPolicy CRDs (404) there are no routes and no L7 policies, and no error', async () => {
  const c = await cluster(['HTTPRoute', 'GRPCRoute', 'AuthorizationPolicy']);
  try {
    const m = c.source.mesh(BASE);
    assert.deepEqual(m.routes.routes, []);
    assert.deepEqual(m.routes.policies, []);
    assert.deepEqual(m.policies, []);
    assert.deepEqual(m.warnings, []);
    assert.deepEqual(
      m.waypoints?.map((w) => `${w.namespace}/${w.name}`),
      ['demo/waypoint'],
      'the waypoints are still there',
    );
    assert.equal(m.services.find((s) => s.name === 'web')?.waypoint?.destination.kind, 'address');
    assert.ok(c.api.requests.some((r) => r.startsWith('GET /apis/gateway.networking.k8s.io/v1/httproutes')));
  } finally {
    c.stop();
  }
});
