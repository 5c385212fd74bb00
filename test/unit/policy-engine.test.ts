import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnectionFacts } from '../../src/policy/authorize';
import { evaluate, matchOf, PolicyAuthorizer, PolicyIndex } from '../../src/policy/engine';
import type { Authorization, Match, PolicyAction, PolicyScope } from '../../src/policy/types';
import type { Workload } from '../../src/state/types';

const SLEEP = 'spiffe://cluster.local/ns/default/sa/sleep';
const OTHER = 'spiffe://cluster.local/ns/other/sa/client';

function workload(over: Partial<Workload> = {}): Workload {
  return {
    uid: 'default/echo',
    name: 'echo',
    namespace: 'default',
    serviceAccount: 'echo',
    node: 'n1',
    addresses: ['10.200.0.20'],
    protocol: 'HBONE',
    dataplane: 'ambient',
    labels: { app: 'echo' },
    capacity: 1,
    authorizationPolicies: [],
    ...over,
  };
}

function facts(over: Partial<ConnectionFacts> = {}): ConnectionFacts {
  return { srcIdentity: SLEEP, srcIp: '10.200.0.10', dst: workload(), dstIp: '10.200.0.20', dstPort: 8080, ...over };
}

/** A policy with one rule of one clause holding the given matches. */
function policy(name: string, action: PolicyAction, matches: Partial<Match>[], over: Partial<Authorization> = {}): Authorization {
  return {
    name,
    namespace: 'default',
    scope: 'NAMESPACE' as PolicyScope,
    action,
    rules: [{ clauses: [{ matches: matches.map(matchOf) }] }],
    dryRun: false,
    ...over,
  };
}

const allowed = (ps: Authorization[], c: Partial<ConnectionFacts> = {}): boolean => evaluate(ps, facts(c)).allow;

test('no policies: allowed, reason no_policies', () => {
  assert.deepEqual(evaluate([], facts()), { allow: true, reason: 'no_policies', dryRun: [] });
});

test('ALLOW by principal: exact, prefix, suffix, presence (compared without spiffe://)', () => {
  const cases: [Match['principals'][number], string | undefined, boolean][] = [
    [{ exact: 'cluster.local/ns/default/sa/sleep' }, SLEEP, true],
    [{ exact: 'cluster.local/ns/default/sa/sleep' }, OTHER, false],
    [{ exact: SLEEP }, SLEEP, false],
    [{ prefix: 'cluster.local/ns/default/' }, SLEEP, true],
    [{ prefix: 'cluster.local/ns/default/' }, OTHER, false],
    [{ suffix: '/sa/client' }, OTHER, true],
    [{ suffix: '/sa/client' }, SLEEP, false],
    [{ presence: true }, SLEEP, true],
    [{ presence: true }, undefined, false],
  ];
  for (const [m, id, want] of cases) {
    assert.equal(allowed([policy('p', 'ALLOW', [{ principals: [m] }])], { srcIdentity: id }), want, `${JSON.stringify(m)} vs ${id}`);
  }
});

test('notPrincipals: the listed identities are refused, others allowed', () => {
  const p = [policy('p', 'ALLOW', [{ notPrincipals: [{ suffix: '/sa/sleep' }] }])];
  assert.equal(allowed(p), false);
  assert.equal(allowed(p, { srcIdentity: OTHER }), true);
  assert.equal(allowed(p, { srcIdentity: undefined }), true, 'an empty principal does not end in /sa/sleep');
});

test('namespaces come from the source identity; none without mTLS', () => {
  const p = [policy('p', 'ALLOW', [{ namespaces: [{ exact: 'other' }] }])];
  assert.equal(allowed(p, { srcIdentity: OTHER }), true);
  assert.equal(allowed(p), false);
  const any = [policy('p', 'ALLOW', [{ namespaces: [{ presence: true }] }])];
  assert.equal(allowed(any), true);
  assert.equal(allowed(any, { srcIdentity: undefined }), false);
  const not = [policy('p', 'ALLOW', [{ notNamespaces: [{ exact: 'other' }] }])];
  assert.equal(allowed(not, { srcIdentity: OTHER }), false);
  assert.equal(allowed(not), true);
});

test('source IP blocks and their not_ form, IPv4 and IPv6', () => {
  const p = [
    policy('p', 'ALLOW', [
      {
        sourceIps: [
          { address: '10.200.0.0', length: 24 },
          { address: 'fd00::', length: 8 },
        ],
      },
    ]),
  ];
  assert.equal(allowed(p), true);
  assert.equal(allowed(p, { srcIp: '10.201.0.10' }), false);
  assert.equal(allowed(p, { srcIp: 'fd12::1' }), true);
  assert.equal(allowed(p, { srcIp: 'fe80::1' }), false);
  assert.equal(allowed(p, { srcIp: '::ffff:10.200.0.7' }), true, 'an IPv4-mapped peer counts as IPv4');
  const host = [policy('p', 'ALLOW', [{ sourceIps: [{ address: '10.200.0.10', length: 32 }] }])];
  assert.equal(allowed(host), true);
  assert.equal(allowed(host, { srcIp: '10.200.0.11' }), false);
  const not = [policy('p', 'ALLOW', [{ notSourceIps: [{ address: '10.200.0.0', length: 16 }] }])];
  assert.equal(allowed(not), false);
  assert.equal(allowed(not, { srcIp: '192.168.1.1' }), true);
});

test('an IPv6 block never matches an IPv4 address, nor the reverse', () => {
  const all6 = [policy('p', 'ALLOW', [{ sourceIps: [{ address: '::', length: 0 }] }])];
  assert.equal(allowed(all6), false);
  assert.equal(allowed(all6, { srcIp: '2001:db8::1' }), true);
  const all4 = [policy('p', 'ALLOW', [{ sourceIps: [{ address: '0.0.0.0', length: 0 }] }])];
  assert.equal(allowed(all4, { srcIp: '2001:db8::1' }), false);
  assert.equal(allowed(all4), true);
});

test('destination IP and its not_ form', () => {
  const p = [policy('p', 'ALLOW', [{ destinationIps: [{ address: '10.200.0.20', length: 32 }] }])];
  assert.equal(allowed(p), true);
  assert.equal(allowed(p, { dstIp: '10.200.0.21' }), false);
  const not = [policy('p', 'ALLOW', [{ notDestinationIps: [{ address: '10.200.0.0', length: 24 }] }])];
  assert.equal(allowed(not), false);
  assert.equal(allowed(not, { dstIp: '10.9.0.1' }), true);
});

test('destination port and its not_ form', () => {
  const p = [policy('p', 'ALLOW', [{ destinationPorts: [80, 8080] }])];
  assert.equal(allowed(p), true);
  assert.equal(allowed(p, { dstPort: 9090 }), false);
  const not = [policy('p', 'ALLOW', [{ notDestinationPorts: [8080] }])];
  assert.equal(allowed(not), false);
  assert.equal(allowed(not, { dstPort: 80 }), true);
});

test('inside a match every populated field must match', () => {
  const p = [policy('p', 'ALLOW', [{ principals: [{ exact: 'cluster.local/ns/default/sa/sleep' }], destinationPorts: [80] }])];
  assert.equal(allowed(p, { dstPort: 80 }), true);
  assert.equal(allowed(p, { dstPort: 8080 }), false);
  assert.equal(allowed(p, { dstPort: 80, srcIdentity: OTHER }), false);
});

test('a clause needs any match, a rule all its clauses, a policy any rule', () => {
  const two: Authorization = {
    name: 'p',
    namespace: 'default',
    scope: 'NAMESPACE',
    action: 'ALLOW',
    dryRun: false,
    rules: [
      {
        clauses: [
          { matches: [matchOf({ destinationPorts: [80] }), matchOf({ destinationPorts: [81] })] },
          { matches: [matchOf({ namespaces: [{ exact: 'default' }] })] },
        ],
      },
      { clauses: [{ matches: [matchOf({ destinationPorts: [9000] })] }] },
    ],
  };
  assert.equal(allowed([two], { dstPort: 81 }), true);
  assert.equal(allowed([two], { dstPort: 81, srcIdentity: OTHER }), false);
  assert.equal(allowed([two], { dstPort: 9000, srcIdentity: OTHER }), true);
  assert.equal(allowed([two], { dstPort: 82 }), false);
});

test('DENY precedes ALLOW and is named', () => {
  const allow = policy('allow-all', 'ALLOW', [{}]);
  const deny = policy('deny-8080', 'DENY', [{ destinationPorts: [8080] }]);
  assert.deepEqual(evaluate([allow, deny], facts()), { allow: false, policy: 'default/deny-8080', reason: 'denied_by_policy', dryRun: [] });
  assert.deepEqual(evaluate([allow, deny], facts({ dstPort: 80 })), {
    allow: true,
    policy: 'default/allow-all',
    reason: 'allowed_by_policy',
    dryRun: [],
  });
});

test('only DENY policies, none matching: allowed', () => {
  const v = evaluate([policy('deny-9', 'DENY', [{ destinationPorts: [9] }])], facts());
  assert.deepEqual(v, { allow: true, reason: 'no_allow_policies', dryRun: [] });
});

test('ALLOW policies present but none matches: denied without a policy name', () => {
  const v = evaluate([policy('a', 'ALLOW', [{ destinationPorts: [1] }]), policy('b', 'ALLOW', [{ destinationPorts: [2] }])], facts());
  assert.deepEqual(v, { allow: false, reason: 'no_allow_policy_matched', dryRun: [] });
});

test('dry-run DENY is reported, not enforced; a dry-run ALLOW does not make others required', () => {
  const dryDeny = policy('dry-deny', 'DENY', [{}], { dryRun: true });
  const v = evaluate([dryDeny], facts());
  assert.equal(v.allow, true);
  assert.deepEqual(v.dryRun, [{ policy: 'default/dry-deny', action: 'DENY', matched: true }]);
  const dryAllow = policy('dry-allow', 'ALLOW', [{ destinationPorts: [1] }], { dryRun: true });
  const w = evaluate([dryAllow], facts());
  assert.equal(w.allow, true, 'a dry-run ALLOW alone does not deny');
  assert.deepEqual(w.dryRun, [{ policy: 'default/dry-allow', action: 'ALLOW', matched: false }]);
});

test('empty rule matches all; zero rules match nothing; an empty clause matches nothing', () => {
  const base = { namespace: 'default', scope: 'NAMESPACE' as const, action: 'ALLOW' as const, dryRun: false };
  assert.equal(allowed([{ ...base, name: 'r', rules: [{ clauses: [] }] }], { srcIdentity: undefined, srcIp: '1.2.3.4' }), true);
  assert.equal(allowed([{ ...base, name: 'r', rules: [] }]), false);
  assert.equal(allowed([{ ...base, name: 'r', rules: [{ clauses: [{ matches: [] }] }] }]), false);
  assert.equal(allowed([{ ...base, action: 'DENY', name: 'r', rules: [] }]), true, 'a DENY without rules denies nothing');
});

test('STRICT as DENY notPrincipals presence: plaintext refused, mTLS peers pass', () => {
  const strict = policy('strict', 'DENY', [{ notPrincipals: [{ presence: true }] }]);
  assert.deepEqual(evaluate([strict], facts({ srcIdentity: undefined })), {
    allow: false,
    policy: 'default/strict',
    reason: 'denied_by_policy',
    dryRun: [],
  });
  assert.equal(allowed([strict]), true);
  const permissive80 = policy('strict', 'DENY', [{ notPrincipals: [{ presence: true }], notDestinationPorts: [80] }]);
  assert.equal(allowed([permissive80], { srcIdentity: undefined, dstPort: 80 }), true);
  assert.equal(allowed([permissive80], { srcIdentity: undefined, dstPort: 81 }), false);
});

test('scope: global, own namespace, selected by name; another namespace and unknown names ignored', () => {
  const g = policy('g', 'DENY', [{ destinationPorts: [1] }], { namespace: 'istio-system', scope: 'GLOBAL' });
  const mine = policy('mine', 'DENY', [{ destinationPorts: [2] }]);
  const theirs = policy('theirs', 'DENY', [{ destinationPorts: [3] }], { namespace: 'other' });
  const sel = policy('sel', 'DENY', [{ destinationPorts: [4] }], { scope: 'WORKLOAD_SELECTOR' });
  const unsel = policy('unsel', 'DENY', [{ destinationPorts: [5] }], { scope: 'WORKLOAD_SELECTOR' });
  const index = new PolicyIndex([g, mine, theirs, sel, unsel]);
  const dst = workload({ authorizationPolicies: ['default/sel', 'default/missing', 'istio-system/g'] });
  const names = (ps: readonly Authorization[]): string[] => ps.map((p) => p.name);
  assert.deepEqual(names(index.inScope(dst)), ['g', 'mine', 'sel']);
  assert.deepEqual(names(index.inScope(workload())), ['g', 'mine']);
  assert.deepEqual(names(index.inScope(workload({ namespace: 'other' }))), ['g', 'theirs']);

  const authz = new PolicyAuthorizer(index);
  for (const [port, want] of [
    [1, false],
    [2, false],
    [3, true],
    [4, false],
    [5, true],
  ] as const) {
    assert.equal(authz.check(facts({ dst, dstPort: port })).allow, want, `port ${port}`);
  }
});

test('the authorizer maps verdicts onto decisions, with the deciding policy and dry-run results', () => {
  const authz = PolicyAuthorizer.of([
    policy('deny', 'DENY', [{ destinationPorts: [8080] }]),
    policy('dry', 'DENY', [{}], { dryRun: true }),
  ]);
  assert.deepEqual(authz.check(facts()), {
    allow: false,
    reason: 'denied_by_policy',
    policy: 'default/deny',
    dryRun: [{ policy: 'default/dry', action: 'DENY', matched: true }],
  });
  assert.deepEqual(PolicyAuthorizer.of([]).check(facts()), { allow: true, reason: 'no_policies' });
});
