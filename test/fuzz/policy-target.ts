// Fuzz and property targets for authorization.
// - policy-crd: arbitrary objects and mutated Istio AuthorizationPolicy /
//   PeerAuthentication documents through compileIstioPolicies: problems are
//   reported, never thrown, and what comes out is well formed.
// - policy-engine: random policies over a small vocabulary (so that they
//   do match now and then) and random connections, checked against the
//   semantics docs/wire.md states, without re-implementing the matcher:
//   a matching DENY wins over any ALLOW; no enforced ALLOW → allow unless a
//   DENY matches; dry-run policies never change the verdict; order does not
//   matter; adding a DENY never allows more, adding an ALLOW next to other
//   ALLOWs never allows less.
import fc from 'fast-check';
import type { ConnectionFacts } from '../../src/policy/authorize';
import { evaluate, matchOf } from '../../src/policy/engine';
import type { Authorization, Match, StringMatch } from '../../src/policy/types';
import { compileIstioPolicies } from '../../src/sources/istio-crd';
import type { Workload } from '../../src/state/types';
import { at } from '../helpers/must';
import { mutate, mutationArb, SEED_CONFIGS } from './config-target';

// ---- policy-crd ----

const seedDocs = (at(SEED_CONFIGS, 1, 'seed configurations').policies as unknown[]).concat([
  {
    apiVersion: 'security.istio.io/v1beta1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'allow', namespace: 'default' },
    spec: {
      selector: { matchLabels: { app: 'w1' } },
      rules: [
        {
          from: [{ source: { principals: ['cluster.local/ns/default/sa/*'], ipBlocks: ['10.0.0.0/8'] } }],
          when: [{ key: 'destination.port', values: ['8080'] }],
        },
      ],
    },
  },
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name: 'pa', namespace: 'default', creationTimestamp: '2024-01-01T00:00:00Z' },
    spec: { selector: { matchLabels: { app: 'w1' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { 8080: { mode: 'STRICT' } } },
  },
]);

const workloads = (): Workload[] =>
  [1, 2].map((i) => ({
    uid: `default/w${i}`,
    name: `w${i}`,
    namespace: i === 1 ? 'default' : 'istio-system',
    serviceAccount: 'default',
    node: 'n1',
    addresses: [`10.0.0.${i}`],
    protocol: 'HBONE',
    dataplane: 'ambient',
    labels: { app: `w${i}` },
    capacity: 1,
    authorizationPolicies: [],
  }));

export const crdInputArb: fc.Arbitrary<unknown[]> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.array(fc.nat(seedDocs.length - 1), { minLength: 1, maxLength: 4 }), fc.array(mutationArb, { minLength: 1, maxLength: 6 }))
      .map(([picks, ms]) => ms.reduce(mutate, structuredClone(picks.map((i) => seedDocs[i]))) as unknown[]),
  },
  {
    weight: 1,
    arbitrary: fc.array(
      fc.anything({
        maxDepth: 4,
        withNullPrototype: true,
        withMap: true,
        withSet: true,
        withBigInt: true,
        withDate: true,
        withTypedArray: true,
        withSparseArray: true,
      }),
      { maxLength: 3 },
    ),
  },
);

const isObjectLike = (v: unknown): boolean => typeof v === 'object' && v !== null;

/** Throws if conversion throws or yields a malformed policy. */
export function checkCrd(docs: unknown): 'accepted' | 'rejected' {
  const problems: string[] = [];
  const list = Array.isArray(docs) ? docs : [docs];
  const r = compileIstioPolicies(list, workloads(), { rootNamespace: 'istio-system' }, (at, _v, what) => problems.push(`${at}: ${what}`));
  for (const p of r.policies) {
    if (p.action !== 'ALLOW' && p.action !== 'DENY') throw new Error(`policy ${p.namespace}/${p.name} has action ${String(p.action)}`);
    if (
      !p.name ||
      !p.namespace ||
      !Array.isArray(p.rules) ||
      !p.rules.every((x) => Array.isArray(x.clauses) && x.clauses.every((c) => Array.isArray(c.matches) && c.matches.every(isObjectLike)))
    ) {
      throw new Error(`malformed policy ${JSON.stringify(p)}`);
    }
  }
  if (problems.some((m) => typeof m !== 'string')) throw new Error('a problem is not text');
  return problems.length === 0 ? 'accepted' : 'rejected';
}

// ---- policy-engine ----

const str: fc.Arbitrary<StringMatch> = fc.oneof(
  fc.constantFrom('a', 'b', 'cluster.local/ns/a/sa/x', 'cluster.local/ns/b/sa/y').map((exact) => ({ exact })),
  fc.constantFrom('cluster.local/', 'cluster.local/ns/a').map((prefix) => ({ prefix })),
  fc.constantFrom('/sa/x', 'b').map((suffix) => ({ suffix })),
  fc.constant({ presence: true as const }),
);
const ip = fc.constantFrom(
  { address: '10.0.0.0', length: 8 },
  { address: '10.0.0.1', length: 32 },
  { address: '10.0.0.2', length: 32 },
  { address: '::', length: 0 },
  { address: '0.0.0.0', length: 0 },
);
const port = fc.constantFrom(80, 8080, 9090);
const some = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T[]> =>
  fc.oneof({ weight: 3, arbitrary: fc.constant<T[]>([]) }, { weight: 1, arbitrary: fc.array(a, { minLength: 1, maxLength: 2 }) });

const matchArb: fc.Arbitrary<Match> = fc
  .record({
    namespaces: some(str),
    notNamespaces: some(str),
    principals: some(str),
    notPrincipals: some(str),
    sourceIps: some(ip),
    notSourceIps: some(ip),
    destinationIps: some(ip),
    notDestinationIps: some(ip),
    destinationPorts: some(port),
    notDestinationPorts: some(port),
  })
  .map((m) => matchOf(m));

let counter = 0;
export const policyArb: fc.Arbitrary<Authorization> = fc
  .record({
    action: fc.constantFrom('ALLOW' as const, 'DENY' as const),
    dryRun: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    rules: fc.array(fc.record({ clauses: fc.array(fc.record({ matches: fc.array(matchArb, { maxLength: 2 }) }), { maxLength: 2 }) }), {
      maxLength: 2,
    }),
  })
  .map((p) => ({ ...p, name: `p${counter++}`, namespace: 'default', scope: 'NAMESPACE' as const }));

const dst: Workload = {
  uid: 'default/d',
  name: 'd',
  namespace: 'default',
  serviceAccount: 'd',
  node: 'n',
  addresses: ['10.0.0.1'],
  protocol: 'HBONE',
  dataplane: 'ambient',
  labels: {},
  capacity: 1,
  authorizationPolicies: [],
};

export const factsArb: fc.Arbitrary<ConnectionFacts> = fc
  .record({
    srcIdentity: fc.constantFrom(
      undefined,
      'spiffe://cluster.local/ns/a/sa/x',
      'spiffe://cluster.local/ns/b/sa/y',
      'spiffe://other/ns/a/sa/x',
    ),
    srcIp: fc.constantFrom('10.0.0.1', '10.0.0.2', '192.168.0.1', '::ffff:10.0.0.2', '::1', 'garbage'),
    dstIp: fc.constantFrom('10.0.0.1', '10.0.0.2', '::1'),
    dstPort: port,
  })
  .map((f) => ({ ...f, dst }));

export interface EngineInput {
  policies: Authorization[];
  facts: ConnectionFacts;
  extra: Authorization;
  order: number[];
}

export const engineInputArb: fc.Arbitrary<EngineInput> = fc.record({
  policies: fc.array(policyArb, { maxLength: 6 }),
  facts: factsArb,
  extra: policyArb,
  order: fc.array(fc.nat(), { maxLength: 6 }),
});

const matchAll = (action: 'ALLOW' | 'DENY'): Authorization => ({
  name: `all-${action}`,
  namespace: 'default',
  scope: 'NAMESPACE',
  action,
  dryRun: false,
  rules: [{ clauses: [] }],
});
const enforced = (ps: Authorization[]): Authorization[] => ps.filter((p) => !p.dryRun);
const denies = (p: Authorization, c: ConnectionFacts): boolean => !evaluate([{ ...p, action: 'DENY', dryRun: false }], c).allow;

/** Throws naming the property a verdict broke. */
export function checkEngine(i: EngineInput): 'allow' | 'deny' {
  const { policies: ps, facts: c } = i;
  const v = evaluate(ps, c);
  const fail = (what: string): never => {
    throw new Error(`${what}: verdict ${JSON.stringify(v)}`);
  };
  const denyMatched = enforced(ps).some((p) => p.action === 'DENY' && denies(p, c));
  const allowMatched = enforced(ps).some((p) => p.action === 'ALLOW' && denies(p, c));
  const anyAllow = enforced(ps).some((p) => p.action === 'ALLOW');
  if (denyMatched && v.allow) fail('a matching DENY must deny, whatever ALLOWs say');
  if (!anyAllow && v.allow !== !denyMatched) fail('with no enforced ALLOW the connection is allowed unless a DENY matches');
  if (anyAllow && !denyMatched && v.allow !== allowMatched) fail('with ALLOWs and no matching DENY, allowed exactly when an ALLOW matches');
  if (evaluate(enforced(ps), c).allow !== v.allow) fail('dry-run policies must not change the verdict');
  const shuffled = ps
    .map((p, k) => [i.order[k] ?? k, p] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, p]) => p);
  if (evaluate(shuffled, c).allow !== v.allow) fail('the order of policies must not matter');
  if (!v.allow && evaluate([...ps, { ...i.extra, action: 'DENY' }], c).allow) fail('adding a DENY must not allow more');
  if (!v.allow && denyMatched && evaluate([...ps, matchAll('ALLOW')], c).allow)
    fail('an allow-all ALLOW must not override a matching DENY');
  if (evaluate([...ps, matchAll('DENY')], c).allow) fail('a deny-all DENY must deny everything');
  if (anyAllow && v.allow && !evaluate([...ps, { ...i.extra, action: 'ALLOW' }], c).allow)
    fail('adding an ALLOW next to other ALLOWs must not allow less');
  return v.allow ? 'allow' : 'deny';
}
