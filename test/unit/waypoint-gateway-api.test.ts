// Gateway API (HTTPRoute, GRPCRoute), waypoint Gateways, use-waypoint labels
// and targeted AuthorizationPolicies into the waypoint's model: what is
// accepted becomes exactly the model, and every refusal names the object,
// the field and the value.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { AmbitError } from '../../src/errors';
import { compileWaypointConfig, parseDuration, parseWaypointConfig } from '../../src/sources/gateway-api';
import { compileRouteRegex, regexShapeProblem } from '../../src/sources/route-regex';
import type { Service, Workload } from '../../src/state/types';
import { MAX_REGEX_INPUT, regexMatches } from '../../src/waypoint/regex';

const svc = (namespace: string, name: string, ports: number[]): Service => ({
  name,
  namespace,
  hostname: `${name}.${namespace}.svc.cluster.local`,
  addresses: ['10.96.0.10'],
  ports: ports.map((port) => ({ port, targetPort: port + 8000 })),
  selector: { app: name },
});

const wl = (uid: string, labels: Record<string, string> = {}): Workload => {
  const [namespace = '', name = ''] = uid.split('/');
  return {
    uid,
    name,
    namespace,
    serviceAccount: name,
    node: 'n1',
    addresses: ['10.200.0.1'],
    protocol: 'HBONE',
    dataplane: 'ambient',
    labels,
    capacity: 1,
    authorizationPolicies: [],
  };
};

const SERVICES = [
  svc('default', 'reviews', [80, 9080]),
  svc('default', 'reviews-v2', [80]),
  svc('default', 'ratings', [80]),
  svc('prod', 'api', [80]),
];
const WORKLOADS = [wl('default/reviews-1'), wl('default/ratings-1', { 'istio.io/use-waypoint': 'none' }), wl('prod/api-1')];

function compile(yaml: string, workloads: Workload[] = WORKLOADS) {
  const docs = YAML.parseAllDocuments(yaml)
    .map((d) => d.toJS() as unknown)
    .filter((d) => d !== null);
  const problems: string[] = [];
  const cfg = compileWaypointConfig(docs, { services: SERVICES, workloads }, {}, (at, value, what) =>
    problems.push(`${at}: ${what} (got ${JSON.stringify(value)})`),
  );
  return { ...cfg, problems };
}

const route = (spec: string, name = 'reviews', meta = '', kind = 'HTTPRoute'): string =>
  `apiVersion: gateway.networking.k8s.io/v1\nkind: ${kind}\nmetadata: { name: ${name}, namespace: default${meta} }\nspec:\n  parentRefs: [{ group: "", kind: Service, name: reviews }]\n${spec}\n---\n`;

/** Asserts exactly one problem, containing every fragment. */
function oneProblem(problems: string[], ...fragments: string[]): void {
  assert.equal(problems.length, 1, `expected one problem, got:\n${problems.join('\n')}`);
  for (const f of fragments) assert.ok(problems[0]?.includes(f), `"${f}" not in: ${problems[0]}`);
}

test('an HTTPRoute with a canary split, matches, filters, timeouts and retry becomes the model', () => {
  const r = compile(
    route(`  rules:
    - matches:
        - path: { type: PathPrefix, value: /api }
          headers: [{ name: X-Version, value: v2 }, { name: x-user, type: RegularExpression, value: "u[0-9]+" }]
          queryParams: [{ name: debug, value: "1" }]
          method: GET
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-Route, value: canary }], add: [{ name: x-tag, value: a }], remove: [X-Drop] }
        - type: URLRewrite
          urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }
      backendRefs:
        - { name: reviews, port: 9080, weight: 90 }
        - { name: reviews-v2, port: 80, weight: 10 }
      timeouts: { request: 10s, backendRequest: 500ms }
      retry: { attempts: 3, codes: [503], backoff: 100ms }`),
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.warnings, []);
  assert.equal(r.routes.length, 1);
  const sr = r.routes[0];
  assert.equal(sr?.service, 'default/reviews.default.svc.cluster.local');
  assert.equal(sr?.port, undefined);
  const rule = sr?.rules[0];
  assert.deepEqual(rule?.origin, { kind: 'HTTPRoute', namespace: 'default', name: 'reviews', created: '', order: 0 });
  const m = rule?.matches[0];
  assert.deepEqual(m?.path, { type: 'PathPrefix', value: '/api' });
  assert.equal(m?.method, 'GET');
  assert.deepEqual(m?.headers[0], { name: 'x-version', type: 'Exact', value: 'v2' });
  assert.equal(m?.headers[1]?.type, 'RegularExpression');
  assert.deepEqual(m?.queryParams, [{ name: 'debug', type: 'Exact', value: '1' }]);
  assert.deepEqual(rule?.filters, [
    {
      type: 'RequestHeaderModifier',
      modifier: { set: [{ name: 'x-route', value: 'canary' }], add: [{ name: 'x-tag', value: 'a' }], remove: ['x-drop'] },
    },
    { type: 'URLRewrite', path: { type: 'ReplacePrefixMatch', value: '/v2' } },
  ]);
  assert.deepEqual(rule?.backends, [
    { namespace: 'default', name: 'reviews', service: 'default/reviews.default.svc.cluster.local', port: 9080, weight: 90 },
    { namespace: 'default', name: 'reviews-v2', service: 'default/reviews-v2.default.svc.cluster.local', port: 80, weight: 10 },
  ]);
  assert.deepEqual(rule?.timeouts, { requestMs: 10_000, backendRequestMs: 500 });
  assert.deepEqual(rule?.retry, {
    attempts: 3,
    on: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
    codes: [503],
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
  });
});

test('defaults: no matches is PathPrefix /, weight 1, no retry stanza leaves Istio defaults to the waypoint', () => {
  const r = compile(route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]'));
  assert.deepEqual(r.problems, []);
  const rule = r.routes[0]?.rules[0];
  assert.deepEqual(rule?.matches, [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] }]);
  assert.equal(rule?.backends[0]?.weight, 1);
  assert.equal(rule?.retry, undefined);
  assert.deepEqual(rule?.timeouts, {});
});

test('a parentRef port attaches the rules to that service port only', () => {
  const r = compile(
    `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r, namespace: default }\nspec:\n  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]\n  rules: [{ backendRefs: [{ name: reviews, port: 9080 }] }]\n`,
  );
  assert.deepEqual(r.problems, []);
  assert.equal(r.routes[0]?.port, 9080);
});

test('GRPCRoute matches become POST /<service>/<method> paths', () => {
  const r = compile(
    route(
      `  rules:
    - matches:
        - method: { service: helloworld.Greeter, method: SayHello }
        - method: { service: helloworld.Greeter }
        - method: { method: SayBye }
        - method: { type: RegularExpression, service: "helloworld\\\\..*", method: "Say.*" }
          headers: [{ name: x-canary, value: "yes" }]
      backendRefs: [{ name: reviews, port: 80 }]`,
      'greeter',
      '',
      'GRPCRoute',
    ),
  );
  assert.deepEqual(r.problems, []);
  const ms = r.routes[0]?.rules[0]?.matches ?? [];
  assert.deepEqual(
    ms.map((m) => [m.path.type, m.path.value, m.method]),
    [
      ['Exact', '/helloworld.Greeter/SayHello', 'POST'],
      ['PathPrefix', '/helloworld.Greeter', 'POST'],
      ['RegularExpression', '/[^/]+/SayBye', 'POST'],
      ['RegularExpression', '/(?:helloworld\\..*)/(?:Say.*)', 'POST'],
    ],
  );
  const byMethod = ms[2]?.path;
  assert.ok(byMethod?.type === 'RegularExpression' && byMethod.regex.test('/a.B/SayBye') && !byMethod.regex.test('/a.B/SayByeX'));
  assert.deepEqual(ms[3]?.headers, [{ name: 'x-canary', type: 'Exact', value: 'yes' }]);
});

test('HTTPRoutes and GRPCRoutes on one service are not merged: the oldest kind wins, the other is ignored with a warning', () => {
  const r = compile(
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]', 'http', ', creationTimestamp: "2024-02-01T00:00:00Z"') +
      route(
        '  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]',
        'grpc',
        ', creationTimestamp: "2024-01-01T00:00:00Z"',
        'GRPCRoute',
      ),
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.routes[0]?.rules.map((x) => x.origin.kind),
    ['GRPCRoute'],
  );
  assert.equal(r.warnings.length, 1);
  assert.match(r.warnings[0] ?? '', /HTTPRoute default\/http\).*ignored for service default\/reviews.*older GRPCRoute default\/grpc/);
});

test('identical matches are accepted with a warning naming the one that wins', () => {
  const r = compile(
    route('  rules: [{ matches: [{ path: { type: Exact, value: /a } }], backendRefs: [{ name: reviews, port: 80 }] }]', 'b-newer') +
      route('  rules: [{ matches: [{ path: { type: Exact, value: /a } }], backendRefs: [{ name: ratings, port: 80 }] }]', 'a-older'),
  );
  assert.deepEqual(r.problems, []);
  assert.equal(r.warnings.length, 1);
  assert.match(
    r.warnings[0] ?? '',
    /HTTPRoute default\/b-newer spec\.rules\[0\]\.matches\[0\]: never used .* identical to HTTPRoute default\/a-older/,
  );
});

// Every refusal: the YAML, then fragments the one problem must contain (object, field, value, fix).
const REFUSED: [string, string, string[]][] = [
  [
    'missing backend service',
    route('  rules: [{ backendRefs: [{ name: reviewz, port: 80 }] }]'),
    [
      'routes[0] (HTTPRoute default/reviews) spec.rules[0].backendRefs[0].name',
      'names no known service',
      'reviews, reviews-v2',
      '"reviewz"',
    ],
  ],
  [
    'backend port not on the service',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 81 }] }]'),
    ['spec.rules[0].backendRefs[0].port', 'must be a port of service default/reviews: 80, 9080', '(got 81)'],
  ],
  ['backend without a port', route('  rules: [{ backendRefs: [{ name: reviews }] }]'), ['backendRefs[0].port', 'is required']],
  [
    'backend in another namespace',
    route('  rules: [{ backendRefs: [{ name: api, namespace: prod, port: 80 }] }]'),
    ['backendRefs[0].namespace', "must be the route's namespace default", '"prod"'],
  ],
  [
    'weights all zero',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80, weight: 0 }, { name: ratings, port: 80, weight: 0 }] }]'),
    ['spec.rules[0].backendRefs', 'weights are all 0', '[0,0]'],
  ],
  [
    'negative weight',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80, weight: -1 }] }]'),
    ['backendRefs[0].weight', '0..1000000', '-1'],
  ],
  [
    'invalid regex',
    route('  rules: [{ matches: [{ path: { type: RegularExpression, value: "/a(b" } }], backendRefs: [{ name: reviews, port: 80 }] }]'),
    ['spec.rules[0].matches[0].path.value', 'is not a valid regular expression', '"/a(b"'],
  ],
  [
    'catastrophic regex',
    route(
      '  rules: [{ matches: [{ headers: [{ name: x, type: RegularExpression, value: "(a+)+b" }] }], backendRefs: [{ name: reviews, port: 80 }] }]',
    ),
    ['matches[0].headers[0].value', 'exponential', '"(a+)+b"'],
  ],
  [
    'regex with a backreference',
    route(
      '  rules: [{ matches: [{ path: { type: RegularExpression, value: "/(a)\\\\1" } }], backendRefs: [{ name: reviews, port: 80 }] }]',
    ),
    ['path.value', 'backreferences are not supported'],
  ],
  [
    'unknown filter type',
    route('  rules: [{ filters: [{ type: RequestMirrorz }], backendRefs: [{ name: reviews, port: 80 }] }]'),
    ['spec.rules[0].filters[0].type', 'must be a Gateway API filter type', '"RequestMirrorz"'],
  ],
  [
    'unsupported filter type',
    route('  rules: [{ filters: [{ type: CORS, cors: { allowOrigins: ["*"] } }], backendRefs: [{ name: reviews, port: 80 }] }]'),
    ['filters[0].type', "is not supported by ambit's waypoint", 'RequestHeaderModifier'],
  ],
  [
    'timeout that is not a Gateway API duration',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], timeouts: { request: 10 } }]'),
    ['spec.rules[0].timeouts.request', 'Gateway API duration', '(got 10)'],
  ],
  [
    'timeout in microseconds',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], timeouts: { request: 100us } }]'),
    ['timeouts.request', '"100us"'],
  ],
  [
    'backendRequest longer than request',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], timeouts: { request: 1s, backendRequest: 2s } }]'),
    ['timeouts.backendRequest', 'must not be longer than request (1s)', '"2s"'],
  ],
  [
    'parentRef to a Gateway',
    `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r, namespace: default }\nspec:\n  parentRefs: [{ name: my-gateway }]\n  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]\n`,
    ['(HTTPRoute default/r) spec.parentRefs[0]', 'must be a Service', '"kind":"Gateway"'],
  ],
  [
    'parentRef to a missing service',
    `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r, namespace: default }\nspec:\n  parentRefs: [{ group: "", kind: Service, name: nope }]\n  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]\n`,
    ['spec.parentRefs[0].name', 'names no known service', '"nope"'],
  ],
  [
    'no parentRefs',
    `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r, namespace: default }\nspec:\n  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]\n`,
    ['spec.parentRefs', 'must name the Service'],
  ],
  [
    'misspelt field',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], timeout: { request: 1s } }]'),
    ['spec.rules[0].timeout', 'did you mean `timeouts`'],
  ],
  [
    'path that is not absolute',
    route('  rules: [{ matches: [{ path: { value: api } }], backendRefs: [{ name: reviews, port: 80 }] }]'),
    ['path.value', 'must start with /'],
  ],
  [
    'unknown method',
    route('  rules: [{ matches: [{ method: FETCH }], backendRefs: [{ name: reviews, port: 80 }] }]'),
    ['matches[0].method', '"FETCH"'],
  ],
  [
    'redirect with backends',
    route(
      '  rules: [{ filters: [{ type: RequestRedirect, requestRedirect: { scheme: https } }], backendRefs: [{ name: reviews, port: 80 }] }]',
    ),
    ['spec.rules[0].backendRefs', 'takes no backendRefs'],
  ],
  [
    'ReplacePrefixMatch without a PathPrefix match',
    route(
      '  rules: [{ matches: [{ path: { type: Exact, value: /a } }], filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /b } } }], backendRefs: [{ name: reviews, port: 80 }] }]',
    ),
    ['spec.rules[0].matches', 'ReplacePrefixMatch needs exactly one match, of type PathPrefix'],
  ],
  [
    'two actions on one header',
    route(
      '  rules: [{ filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: X-A, value: "1" }], remove: [x-a] } }], backendRefs: [{ name: reviews, port: 80 }] }]',
    ),
    ['requestHeaderModifier.remove[0]', 'one action per header name', '"x-a"'],
  ],
  [
    'retry code outside 400..599',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], retry: { codes: [302] } }]'),
    ['retry.codes[0]', '302'],
  ],
  [
    'rule without backends',
    route('  rules: [{ matches: [{ path: { value: /a } }] }]'),
    ['spec.rules[0].backendRefs', 'needs at least one backend'],
  ],
  [
    'GRPCRoute service with a slash',
    route(
      '  rules: [{ matches: [{ method: { service: "a/b", method: M } }], backendRefs: [{ name: reviews, port: 80 }] }]',
      'g',
      '',
      'GRPCRoute',
    ),
    ['(GRPCRoute default/g) spec.rules[0].matches[0].method.service', '"a/b"'],
  ],
  [
    'GRPCRoute with neither service nor method',
    route('  rules: [{ matches: [{ method: { type: Exact } }], backendRefs: [{ name: reviews, port: 80 }] }]', 'g', '', 'GRPCRoute'),
    ['matches[0].method', 'needs service, method or both'],
  ],
  [
    'GRPCRoute with an HTTP-only field',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }], timeouts: { request: 1s } }]', 'g', '', 'GRPCRoute'),
    ['spec.rules[0].timeouts', 'unknown field'],
  ],
  [
    'wrong apiVersion',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]').replace('/v1\n', '/v1beta1\n'),
    ['apiVersion', 'gateway.networking.k8s.io/v1'],
  ],
  [
    'duplicate route name',
    route('  rules: [{ backendRefs: [{ name: reviews, port: 80 }] }]') + route('  rules: [{ backendRefs: [{ name: ratings, port: 80 }] }]'),
    ['routes[1] (HTTPRoute default/reviews) metadata.name', 'duplicates routes[0]'],
  ],
];

for (const [name, yaml, fragments] of REFUSED) {
  test(`refused: ${name}`, () => {
    const r = compile(yaml);
    oneProblem(r.problems, ...fragments);
  });
}

test('parseWaypointConfig throws AMBIT_E_CONFIG listing every problem; nothing comes back', () => {
  const docs = YAML.parseAllDocuments(route('  rules: [{ backendRefs: [{ name: nope, port: 80 }], timeouts: { request: soon } }]')).map(
    (d) => d.toJS() as unknown,
  );
  assert.throws(
    () => parseWaypointConfig(docs, { services: SERVICES, workloads: [] }, 'routes.yaml'),
    (err: unknown) =>
      err instanceof AmbitError &&
      err.code === 'AMBIT_E_CONFIG' &&
      /routes\.yaml is invalid/.test(err.message) &&
      /backendRefs\[0\]\.name/.test(err.message) &&
      /timeouts\.request/.test(err.message) &&
      /nothing was applied/.test(err.message),
  );
});

test('Gateway API durations: the CRD grammar, summed', () => {
  const ok: [string, number][] = [
    ['0s', 0],
    ['500ms', 500],
    ['10s', 10_000],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1h1m1s1ms', 3_661_001],
    ['99999ms', 99_999],
  ];
  for (const [v, ms] of ok) assert.equal(parseDuration(v), ms, v);
  for (const v of ['', '10', '1.5s', '100us', '1d', '123456s', '1h1m1s1ms1h', '-1s', ' 1s']) assert.equal(parseDuration(v), undefined, v);
});

test('regex screening: what RE2 lacks and shapes that backtrack are refused, ordinary patterns pass', () => {
  const refused = ['(a+)+', '(a*)*b', '(?:x*y)+', '(a|b+)*', '.*.*.*', '.*a.+b[^c]*', '(?=a)', '(?<!a)b', '(a)\\1', '\\k<n>'];
  for (const p of refused) assert.ok(regexShapeProblem(p), `should refuse ${p}`);
  const fine = [
    '/api/v[0-9]+/users/[a-z]+/items/[0-9]+',
    '/(foo|bar)/.*',
    'a{2,5}',
    '(ab)+',
    '(a{1})+',
    '[^/]+/.*',
    'v[12]',
    '(?:ab|cd)?x*',
  ];
  for (const p of fine) assert.equal(regexShapeProblem(p), undefined, p);
  const c = compileRouteRegex('/api/.*');
  assert.ok('regex' in c && c.regex.test('/api/x') && !c.regex.test('x/api/x'), 'full match, not a search');
});

test('a pattern the screen accepts stays fast on a near-miss of the maximum length, and longer input never matches', () => {
  // Two wide repeats are allowed: the worst case is quadratic in MAX_REGEX_INPUT.
  const c = compileRouteRegex('.*a.*b');
  assert.ok('regex' in c);
  const nearMiss = 'a'.repeat(MAX_REGEX_INPUT);
  const start = performance.now();
  assert.equal(regexMatches(c.regex, nearMiss), false);
  const ms = performance.now() - start;
  assert.ok(ms < 500, `near-miss took ${ms.toFixed(1)} ms`);
  assert.equal(regexMatches(c.regex, `${'a'.repeat(MAX_REGEX_INPUT)}b`), false, 'past the bound: no match, not evaluated');
  assert.equal(regexMatches(c.regex, 'xaxb'), true);
});

// ---- waypoints and labels ----

const WAYPOINT = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: default, labels: { istio.io/waypoint-for: all } }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
---
`;

test('use-waypoint labels on a namespace, a service and a pod bind them to the declared waypoint; none opts out', () => {
  const r = compile(
    `${WAYPOINT}apiVersion: v1\nkind: Namespace\nmetadata: { name: default, labels: { istio.io/use-waypoint: waypoint } }\n---\n` +
      `apiVersion: v1\nkind: Service\nmetadata: { name: reviews-v2, namespace: default, labels: { istio.io/use-waypoint: none } }\n---\n`,
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.waypoints, [{ namespace: 'default', name: 'waypoint', for: 'all' }]);
  assert.deepEqual(
    [...r.bindings.services],
    [
      ['default/reviews.default.svc.cluster.local', 'default/waypoint'],
      ['default/ratings.default.svc.cluster.local', 'default/waypoint'],
    ],
  );
  // ratings-1 has istio.io/use-waypoint: none; prod/api-1's namespace has no label.
  assert.deepEqual([...r.bindings.workloads], [['default/reviews-1', 'default/waypoint']]);
});

test('a waypoint for services only is not used by workloads; its own pods never use one', () => {
  const r = compile(
    `${WAYPOINT.replace('all', 'service')}apiVersion: v1\nkind: Namespace\nmetadata: { name: default, labels: { istio.io/use-waypoint: waypoint } }\n---\n`,
    [
      wl('default/reviews-1'),
      wl('default/waypoint-1', { 'gateway.networking.k8s.io/gateway-name': 'waypoint', 'istio.io/use-waypoint': 'waypoint' }),
    ],
  );
  assert.deepEqual(r.problems, []);
  assert.equal(r.bindings.services.size, 3);
  assert.equal(r.bindings.workloads.size, 0);
  assert.deepEqual(r.warnings, []);
});

test('a waypoint in another namespace is named with istio.io/use-waypoint-namespace', () => {
  const r = compile(
    `${WAYPOINT}apiVersion: v1\nkind: Service\nmetadata: { name: api, namespace: prod, labels: { istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: default } }\n---\n`,
  );
  assert.deepEqual(r.problems, []);
  assert.equal(r.bindings.services.get('prod/api.prod.svc.cluster.local'), 'default/waypoint');
});

test('refused: a waypoint name nobody serves, on the object that carries the label', () => {
  const r = compile(`apiVersion: v1\nkind: Namespace\nmetadata: { name: default, labels: { istio.io/use-waypoint: wp } }\n---\n`);
  oneProblem(
    r.problems,
    'routes[0] (Namespace default/default) metadata.labels.istio.io/use-waypoint',
    'names waypoint default/wp',
    'no Gateway of class istio-waypoint',
    '"wp"',
  );
  assert.equal(r.bindings.services.size, 0);
});

test('refused: a waypoint Gateway without the HBONE listener, and a bad waypoint-for', () => {
  const r = compile(
    `apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: wp, namespace: default, labels: { istio.io/waypoint-for: everything } }\nspec: { gatewayClassName: istio-waypoint, listeners: [{ name: http, port: 80, protocol: HTTP }] }\n`,
  );
  assert.equal(r.problems.length, 2, r.problems.join('\n'));
  assert.match(
    r.problems[0] ?? '',
    /\(Gateway default\/wp\) spec\.listeners: a waypoint needs a listener \{ name: mesh, port: 15008, protocol: HBONE \}/,
  );
  assert.match(r.problems[1] ?? '', /metadata\.labels\.istio\.io\/waypoint-for: must be service .* \(got "everything"\)/);
});

// ---- L7 AuthorizationPolicy ----

const policy = (spec: string, name = 'p'): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ${name}, namespace: default }\nspec:\n${spec}\n---\n`;

test('an AuthorizationPolicy targeting the waypoint and a service becomes an L7 policy; one without targetRefs is left to the node tunnel', () => {
  const r = compile(
    WAYPOINT +
      policy(`  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }, { kind: Service, group: "", name: reviews }]
  action: DENY
  rules:
    - from: [{ source: { notNamespaces: [prod], principals: ["cluster.local/ns/default/*"] } }]
      to: [{ operation: { methods: [DELETE], paths: ["/admin/*", "*.php"], hosts: [Reviews.Default], notPorts: ["9080"] } }]
      when: [{ key: "request.headers[X-Debug]", values: ["*"] }]`) +
      policy('  selector: { matchLabels: { app: reviews } }\n  rules: [{}]', 'l4'),
  );
  assert.deepEqual(r.problems, []);
  assert.equal(r.policies.length, 1);
  const p = r.policies[0];
  assert.deepEqual(p?.targets, [
    { kind: 'Gateway', namespace: 'default', name: 'waypoint' },
    { kind: 'Service', namespace: 'default', service: 'default/reviews.default.svc.cluster.local' },
  ]);
  assert.equal(p?.action, 'DENY');
  const [from, to, when] = p?.rules[0]?.clauses ?? [];
  assert.deepEqual(from?.[0]?.notNamespaces, [{ exact: 'prod' }]);
  assert.deepEqual(from?.[0]?.principals, [{ prefix: 'cluster.local/ns/default/' }]);
  assert.deepEqual(to?.[0]?.methods, [{ exact: 'DELETE' }]);
  assert.deepEqual(to?.[0]?.paths, [{ prefix: '/admin/' }, { suffix: '.php' }]);
  assert.deepEqual(to?.[0]?.hosts, [{ exact: 'reviews.default' }]);
  assert.deepEqual(to?.[0]?.notPorts, [9080]);
  assert.deepEqual(when?.[0]?.headers, [{ name: 'x-debug', values: [{ presence: true }], notValues: [] }]);
});

const REFUSED_POLICIES: [string, string, string[]][] = [
  [
    'a target that is not a waypoint',
    policy('  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: ingress }]\n  rules: [{}]'),
    ['(AuthorizationPolicy default/p) spec.targetRefs[0].name', 'names no waypoint in default', '"ingress"'],
  ],
  [
    'a target service that does not exist',
    policy('  targetRefs: [{ kind: Service, group: "", name: nope }]\n  rules: [{}]'),
    ['spec.targetRefs[0].name', 'names no known service', '"nope"'],
  ],
  [
    'request principals (JWT)',
    policy('  targetRefs: [{ kind: Service, group: "", name: reviews }]\n  rules: [{ from: [{ source: { requestPrincipals: ["*"] } }] }]'),
    ['spec.rules[0].from[0].source.requestPrincipals', 'no RequestAuthentication'],
  ],
  [
    'a when key ambit cannot evaluate',
    policy(
      '  targetRefs: [{ kind: Service, group: "", name: reviews }]\n  rules: [{ when: [{ key: "request.auth.claims[iss]", values: [x] }] }]',
    ),
    ['spec.rules[0].when[0].key', 'must be request.headers[<name>]', '"request.auth.claims[iss]"'],
  ],
  [
    'a wildcard in the middle',
    policy('  targetRefs: [{ kind: Service, group: "", name: reviews }]\n  rules: [{ to: [{ operation: { paths: ["/a/*/b"] } }] }]'),
    ['spec.rules[0].to[0].operation.paths[0]', 'only at the start or the end', '"/a/*/b"'],
  ],
  [
    'selector together with targetRefs',
    policy('  selector: { matchLabels: { app: x } }\n  targetRefs: [{ kind: Service, group: "", name: reviews }]'),
    ['spec.selector', 'does not go with targetRefs'],
  ],
  [
    'CUSTOM action',
    policy('  targetRefs: [{ kind: Service, group: "", name: reviews }]\n  action: CUSTOM'),
    ['spec.action', 'AUDIT and CUSTOM are not enforced', '"CUSTOM"'],
  ],
];

for (const [name, yaml, fragments] of REFUSED_POLICIES) {
  test(`refused policy: ${name}`, () => {
    const r = compile(WAYPOINT + yaml);
    oneProblem(r.problems, ...fragments);
    assert.equal(r.policies.length, 0, 'a policy with a problem is not applied');
  });
}
