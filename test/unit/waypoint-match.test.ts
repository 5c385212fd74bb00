// Route matching and Gateway API precedence: a table of requests against a
// set of overlapping rules, each row naming the rule that must win.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { compileWaypointConfig } from '../../src/sources/gateway-api';
import type { Service } from '../../src/state/types';
import { pathMatches, type RequestFacts, RouteTable } from '../../src/waypoint/match';

const SERVICES: Service[] = ['reviews', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'].map((name) => ({
  name,
  namespace: 'default',
  hostname: `${name}.default.svc.cluster.local`,
  addresses: [],
  ports: [
    { port: 80, targetPort: 8080 },
    { port: 9080, targetPort: 9080 },
  ],
  selector: {},
}));
const REVIEWS = 'default/reviews.default.svc.cluster.local';

/** Each rule sends to a backend named after it, so the backend says which rule won. */
function table(yaml: string): RouteTable {
  const docs = YAML.parseAllDocuments(yaml)
    .map((d) => d.toJS() as unknown)
    .filter((d) => d !== null);
  const problems: string[] = [];
  const cfg = compileWaypointConfig(docs, { services: SERVICES, workloads: [] }, {}, (at, v, what) =>
    problems.push(`${at}: ${what} ${JSON.stringify(v)}`),
  );
  assert.deepEqual(problems, []);
  return new RouteTable(cfg.routes);
}

const to = (b: string): string => `backendRefs: [{ name: ${b}, port: 80 }]`;
const route = (name: string, created: string, rules: string[], parent = 'name: reviews'): string =>
  `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: ${name}, namespace: default, creationTimestamp: "${created}" }\nspec:\n  parentRefs: [{ group: "", kind: Service, ${parent} }]\n  rules:\n${rules.map((r) => `    - ${r}\n`).join('')}---\n`;

const PRECEDENCE = table(
  route('older', '2024-01-01T00:00:00Z', [
    `{ matches: [{ path: { type: PathPrefix, value: /api } }], ${to('a')} }`,
    `{ matches: [{ path: { type: PathPrefix, value: /api/v1 } }], ${to('b')} }`,
    `{ matches: [{ path: { type: Exact, value: /api/v1/users } }], ${to('c')} }`,
    `{ matches: [{ path: { value: /api }, method: GET }], ${to('d')} }`,
    `{ matches: [{ path: { value: /api }, headers: [{ name: X-A, value: "1" }] }], ${to('e')} }`,
    `{ matches: [{ path: { value: /api }, headers: [{ name: x-a, value: "1" }, { name: x-b, type: RegularExpression, value: "[0-9]+" }] }], ${to('f')} }`,
    `{ matches: [{ path: { value: /api }, queryParams: [{ name: q, value: "1" }] }], ${to('g')} }`,
    `{ matches: [{ path: { type: RegularExpression, value: "/api/.*" } }, { path: { type: RegularExpression, value: "/other/[0-9]+" } }], ${to('h')} }`,
  ]) +
    route('newer', '2024-06-01T00:00:00Z', [`{ matches: [{ path: { value: /api/v1 } }], ${to('i')} }`]) +
    // Same creation time: "<namespace>/<name>" decides, whatever the document order.
    route('zz-same-time', '2024-07-01T00:00:00Z', [`{ matches: [{ path: { type: Exact, value: /tie } }], ${to('j')} }`]) +
    route('aa-same-time', '2024-07-01T00:00:00Z', [`{ matches: [{ path: { type: Exact, value: /tie } }], ${to('k')} }`]) +
    route(
      'port-9080',
      '2023-01-01T00:00:00Z',
      [`{ matches: [{ path: { type: Exact, value: /api/x } }], ${to('l')} }`],
      'name: reviews, port: 9080',
    ),
);

const req = (method: string, target: string, headers: Record<string, string | string[]> = {}): RequestFacts => ({
  method,
  target,
  headers,
});

const ROWS: [string, RequestFacts, number, string | undefined][] = [
  ['exact path beats every prefix', req('POST', '/api/v1/users'), 80, 'c'],
  ['exact path beats a method match', req('GET', '/api/v1/users'), 80, 'c'],
  ['the longer prefix beats a method match on a shorter one', req('GET', '/api/v1/x'), 80, 'b'],
  ['the older route wins an identical match', req('POST', '/api/v1'), 80, 'b'],
  ['a method match beats header matches', req('GET', '/api/x', { 'x-a': '1', 'x-b': '2' }), 80, 'd'],
  ['two header matches beat one', req('POST', '/api/x', { 'x-a': '1', 'x-b': '22' }), 80, 'f'],
  ['a header regex must match in full', req('POST', '/api/x', { 'x-a': '1', 'x-b': '2x' }), 80, 'e'],
  ['one header match beats query matches', req('POST', '/api/x?q=1', { 'x-a': '1' }), 80, 'e'],
  ['a query match beats a bare prefix', req('POST', '/api/x?z=0&q=1'), 80, 'g'],
  ['the first value of a repeated query parameter counts', req('POST', '/api/x?q=2&q=1'), 80, 'a'],
  ['a prefix beats a regular expression', req('POST', '/api/x'), 80, 'a'],
  ['a regular expression matches when nothing else does', req('POST', '/other/12'), 80, 'h'],
  ['a regular expression is a full match', req('POST', '/other/12x'), 80, undefined],
  ['prefixes match whole segments', req('POST', '/apix'), 80, undefined],
  ['a prefix matches itself', req('POST', '/api'), 80, 'a'],
  ['ties on criteria and age go to the alphabetically first route', req('GET', '/tie'), 80, 'k'],
  ['repeated headers are joined with ","', req('POST', '/api/x', { 'x-a': ['1', '2'] }), 80, 'a'],
  ['rules for one port join the rest on that port', req('POST', '/api/x'), 9080, 'l'],
  ['and only on that port', req('POST', '/api/x'), 80, 'a'],
];

for (const [name, r, port, want] of ROWS) {
  test(`precedence: ${name}`, () => {
    const c = PRECEDENCE.route(REVIEWS, port, r);
    assert.equal(c?.rule.backends[0]?.name, want);
  });
}

test('the order is computed once per table: candidates come back sorted, the same array each time', () => {
  const list = PRECEDENCE.candidates(REVIEWS, 80);
  assert.equal(PRECEDENCE.candidates(REVIEWS, 80), list);
  // Exact (the longer first, then the /tie pair alphabetically), the longer prefix (older first), then /api by method,
  // headers, query parameters and bare; the regular expressions last, longer pattern first.
  assert.deepEqual(
    list.map((c) => c.rule.backends[0]?.name),
    ['c', 'k', 'j', 'b', 'i', 'd', 'f', 'e', 'g', 'a', 'h', 'h'],
  );
  assert.deepEqual(
    list.slice(-2).map((c) => c.match.path.value),
    ['/other/[0-9]+', '/api/.*'],
  );
});

test('a service without routes has no candidates, and a request that matches nothing gets none', () => {
  assert.equal(PRECEDENCE.has('default/a.default.svc.cluster.local'), false);
  assert.equal(PRECEDENCE.route('default/a.default.svc.cluster.local', 80, req('GET', '/')), undefined);
  assert.equal(PRECEDENCE.route(REVIEWS, 80, req('GET', '/nothing')), undefined);
});

test('PathPrefix compares whole segments and ignores a trailing slash in the prefix', () => {
  const p = (value: string) => ({ type: 'PathPrefix' as const, value });
  const rows: [string, string, boolean][] = [
    ['/abc', '/abc', true],
    ['/abc', '/abc/', true],
    ['/abc', '/abc/def', true],
    ['/abc', '/abcd', false],
    ['/abc/', '/abc', true],
    ['/abc/', '/abc/def', true],
    ['/abc/', '/abcd', false],
    ['/', '/anything', true],
    ['/abc', '/ab', false],
  ];
  for (const [prefix, path, want] of rows) assert.equal(pathMatches(p(prefix), path), want, `${prefix} vs ${path}`);
  assert.equal(pathMatches({ type: 'Exact', value: '/abc' }, '/abc/'), false);
});
