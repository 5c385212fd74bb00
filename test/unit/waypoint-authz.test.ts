// L7 authorization truth tables: each field and its `not` form, the
// wildcard forms, DENY before ALLOW, no ALLOW matched → deny, dry-run, and
// which policies are in scope (targetRefs to the waypoint or the service).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { evaluateL7, hostOnly, L7Authorizer, type RequestAuthzFacts } from '../../src/waypoint/authz';
import { type L7Match, type L7Policy, l7Match } from '../../src/waypoint/types';

const m = l7Match;

const SVC = 'default/reviews.default.svc.cluster.local';
const policy = (name: string, action: 'ALLOW' | 'DENY', clauses: L7Match[][][], extra: Partial<L7Policy> = {}): L7Policy => ({
  namespace: 'default',
  name,
  action,
  targets: [{ kind: 'Service', namespace: 'default', service: SVC }],
  rules: clauses.map((c) => ({ clauses: c })),
  dryRun: false,
  ...extra,
});

const facts = (over: Partial<RequestAuthzFacts> = {}): RequestAuthzFacts => ({
  srcIdentity: 'spiffe://cluster.local/ns/default/sa/productpage',
  srcIp: '10.200.1.11',
  host: 'reviews.default.svc.cluster.local:9080',
  port: 9080,
  method: 'GET',
  target: '/api/v1/reviews?id=1',
  headers: { 'x-debug': '1' },
  waypoint: 'default/waypoint',
  service: SVC,
  ...over,
});

/** Whether a lone ALLOW with this one entry allows the request. */
const allows = (entry: Partial<L7Match>, f: RequestAuthzFacts = facts()): boolean =>
  evaluateL7([policy('p', 'ALLOW', [[[m(entry)]]])], f).allow;

const TRUTH: [string, Partial<L7Match>, Partial<RequestAuthzFacts>, boolean][] = [
  ['exact method', { methods: [{ exact: 'GET' }] }, {}, true],
  ['exact method, other method', { methods: [{ exact: 'GET' }] }, { method: 'DELETE' }, false],
  ['notMethods', { notMethods: [{ exact: 'DELETE' }] }, { method: 'DELETE' }, false],
  ['notMethods, other method', { notMethods: [{ exact: 'DELETE' }] }, {}, true],
  ['exact path ignores the query', { paths: [{ exact: '/api/v1/reviews' }] }, {}, true],
  ['prefix path /api/*', { paths: [{ prefix: '/api/' }] }, {}, true],
  ['prefix path, other path', { paths: [{ prefix: '/admin/' }] }, {}, false],
  ['suffix path *.php', { paths: [{ suffix: '.php' }] }, { target: '/index.php' }, true],
  ['presence path *', { paths: [{ presence: true }] }, {}, true],
  ['notPaths', { notPaths: [{ prefix: '/api/' }] }, {}, false],
  [
    'host without port, any case',
    { hosts: [{ exact: 'reviews.default.svc.cluster.local' }] },
    { host: 'Reviews.Default.svc.cluster.local:9080' },
    true,
  ],
  ['host suffix', { hosts: [{ suffix: '.svc.cluster.local' }] }, {}, true],
  ['notHosts', { notHosts: [{ prefix: 'reviews.' }] }, {}, false],
  ['port', { ports: [9080] }, {}, true],
  ['port, other port', { ports: [80] }, {}, false],
  ['notPorts', { notPorts: [9080] }, {}, false],
  ['principal exact', { principals: [{ exact: 'cluster.local/ns/default/sa/productpage' }] }, {}, true],
  ['principal prefix', { principals: [{ prefix: 'cluster.local/ns/prod/' }] }, {}, false],
  ['principal presence, no identity', { principals: [{ presence: true }] }, { srcIdentity: undefined }, false],
  ['notPrincipals presence, no identity', { notPrincipals: [{ presence: true }] }, { srcIdentity: undefined }, true],
  ['namespace from the SPIFFE id', { namespaces: [{ exact: 'default' }] }, {}, true],
  ['notNamespaces', { notNamespaces: [{ exact: 'default' }] }, {}, false],
  ['source IP block', { sourceIps: [{ address: '10.200.0.0', length: 16 }] }, {}, true],
  ['source IP block, IPv4-mapped peer', { sourceIps: [{ address: '10.200.0.0', length: 16 }] }, { srcIp: '::ffff:10.200.1.11' }, true],
  ['notSourceIps', { notSourceIps: [{ address: '10.200.1.11', length: 32 }] }, {}, false],
  ['header value', { headers: [{ name: 'x-debug', values: [{ exact: '1' }], notValues: [] }] }, {}, true],
  ['header absent', { headers: [{ name: 'x-other', values: [{ presence: true }], notValues: [] }] }, {}, false],
  ['header notValues', { headers: [{ name: 'x-debug', values: [], notValues: [{ exact: '1' }] }] }, {}, false],
  ['every field must hold', { methods: [{ exact: 'GET' }], paths: [{ prefix: '/admin/' }] }, {}, false],
  ['values of one field are OR-ed', { methods: [{ exact: 'POST' }, { exact: 'GET' }] }, {}, true],
];

for (const [name, entry, over, want] of TRUTH) {
  test(`L7 match: ${name}`, () => {
    assert.equal(allows(entry, facts(over)), want);
  });
}

test('DENY wins over ALLOW; with ALLOW policies in scope, none matching denies; without any, allowed', () => {
  const denyDelete = policy('deny-delete', 'DENY', [[[m({ methods: [{ exact: 'DELETE' }] })]]]);
  const allowGet = policy('allow-get', 'ALLOW', [[[m({ methods: [{ exact: 'GET' }, { exact: 'DELETE' }] })]]]);
  assert.deepEqual(evaluateL7([allowGet, denyDelete], facts({ method: 'DELETE' })), {
    allow: false,
    policy: 'default/deny-delete',
    reason: 'denied_by_policy',
    dryRun: [],
  });
  assert.deepEqual(evaluateL7([allowGet, denyDelete], facts()), {
    allow: true,
    policy: 'default/allow-get',
    reason: 'allowed_by_policy',
    dryRun: [],
  });
  assert.deepEqual(evaluateL7([allowGet], facts({ method: 'PUT' })), { allow: false, reason: 'no_allow_policy_matched', dryRun: [] });
  assert.deepEqual(evaluateL7([denyDelete], facts({ method: 'PUT' })), { allow: true, reason: 'no_allow_policies', dryRun: [] });
  assert.deepEqual(evaluateL7([], facts()), { allow: true, reason: 'no_policies', dryRun: [] });
});

test('clauses are AND-ed, entries of a clause OR-ed; a rule without clauses matches all, a policy without rules nothing', () => {
  const fromTo = (method: string, ns: string) =>
    policy('p', 'ALLOW', [
      [[m({ namespaces: [{ exact: ns }] })], [m({ methods: [{ exact: method }] }), m({ paths: [{ exact: '/never' }] })]],
    ]);
  assert.equal(evaluateL7([fromTo('GET', 'default')], facts()).allow, true);
  assert.equal(evaluateL7([fromTo('GET', 'prod')], facts()).allow, false);
  assert.equal(evaluateL7([fromTo('POST', 'default')], facts()).allow, false);
  assert.equal(evaluateL7([policy('all', 'ALLOW', [[]])], facts()).allow, true, 'rules: [{}] allows everything');
  assert.equal(evaluateL7([policy('none', 'ALLOW', [])], facts()).allow, false, 'an ALLOW without rules allows nothing');
  assert.equal(evaluateL7([policy('none', 'DENY', [])], facts()).allow, true, 'a DENY without rules denies nothing');
});

test('dry-run policies are reported with whether they matched, never enforced', () => {
  const dry = policy('dry-deny', 'DENY', [[]], { dryRun: true });
  assert.deepEqual(evaluateL7([dry], facts()), {
    allow: true,
    reason: 'no_policies',
    dryRun: [{ policy: 'default/dry-deny', action: 'DENY', matched: true }],
  });
});

test('in scope: policies targeting this waypoint or the service addressed, not others', () => {
  const onWaypoint = policy('on-waypoint', 'DENY', [[[m({ paths: [{ prefix: '/admin/' }] })]]], {
    targets: [{ kind: 'Gateway', namespace: 'default', name: 'waypoint' }],
  });
  const onOtherWaypoint = policy('on-other', 'DENY', [[]], { targets: [{ kind: 'Gateway', namespace: 'prod', name: 'waypoint' }] });
  const onOtherService = policy('other-svc', 'DENY', [[]], {
    targets: [{ kind: 'Service', namespace: 'default', service: 'default/ratings.default.svc.cluster.local' }],
  });
  const authz = new L7Authorizer([onWaypoint, onOtherWaypoint, onOtherService]);
  assert.deepEqual(
    authz.inScope(facts()).map((p) => p.name),
    ['on-waypoint'],
  );
  assert.equal(authz.check(facts({ target: '/admin/x' })).allow, false);
  assert.equal(authz.check(facts()).allow, true);
});

test('hostOnly drops the port and the case, keeps IPv6 brackets', () => {
  assert.equal(hostOnly('Echo.Default:8080'), 'echo.default');
  assert.equal(hostOnly('echo'), 'echo');
  assert.equal(hostOnly('[::1]:80'), '[::1]');
  assert.equal(hostOnly('10.0.0.1:80'), '10.0.0.1');
});
