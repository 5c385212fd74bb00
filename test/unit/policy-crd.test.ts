import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { matchOf, PolicyAuthorizer } from '../../src/policy/engine';
import type { Authorization } from '../../src/policy/types';
import { compileIstioPolicies } from '../../src/sources/istio-crd';
import type { GatewayAddress, MeshWaypoint, Service, Workload } from '../../src/state/types';

const ROOT = 'istio-system';
const gw = (ip: string): GatewayAddress => ({ destination: { kind: 'address', network: '', ip }, hboneMtlsPort: 15008 });

function wl(uid: string, labels: Record<string, string>): Workload {
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
}

function compile(yaml: string, workloads: Workload[] = []) {
  // A stream's trailing --- yields an empty document, which is not a policy.
  const docs = YAML.parseAllDocuments(yaml)
    .map((d) => d.toJS() as unknown)
    .filter((d) => d !== null);
  const problems: string[] = [];
  const out = compileIstioPolicies(docs, workloads, { rootNamespace: ROOT }, (at, value, what) =>
    problems.push(`${at}: ${what} (got ${JSON.stringify(value)})`),
  );
  const byName = (name: string): Authorization | undefined => out.policies.find((p) => p.name === name);
  return { ...out, problems, byName };
}

const ap = (ns: string, name: string, spec: string, meta = ''): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ${name}, namespace: ${ns}${meta} }\nspec:\n${spec}\n---\n`;
const pa = (ns: string, name: string, spec: string, meta = ''): string =>
  `apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: { name: ${name}, namespace: ${ns}${meta} }\nspec:\n${spec}\n---\n`;

test('ALLOW by principal and namespace with Istio wildcards', () => {
  const r = compile(
    ap(
      'default',
      'allow-sleep',
      `
  rules:
    - from:
        - source: { principals: ["cluster.local/ns/default/sa/sleep", "cluster.local/ns/prod/*"] }
        - source: { namespaces: ["*"], notPrincipals: ["*/sa/blocked"] }`,
    ),
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.policies, [
    {
      name: 'allow-sleep',
      namespace: 'default',
      scope: 'NAMESPACE',
      action: 'ALLOW',
      dryRun: false,
      rules: [
        {
          clauses: [
            {
              matches: [
                matchOf({ principals: [{ exact: 'cluster.local/ns/default/sa/sleep' }, { prefix: 'cluster.local/ns/prod/' }] }),
                matchOf({ namespaces: [{ presence: true }], notPrincipals: [{ suffix: '/sa/blocked' }] }),
              ],
            },
          ],
        },
      ],
    },
  ]);
});

test('DENY with ipBlocks, notIpBlocks and ports written as strings; to and from are separate clauses', () => {
  const r = compile(
    ap(
      'default',
      'deny-outsiders',
      `
  action: DENY
  rules:
    - from:
        - source: { ipBlocks: ["10.0.0.0/8", "fd00::/8", "192.168.1.7"], notIpBlocks: ["10.200.0.0/16"] }
      to:
        - operation: { ports: ["8080", 9090], notPorts: ["9091"] }`,
    ),
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.byName('deny-outsiders')?.rules, [
    {
      clauses: [
        {
          matches: [
            matchOf({
              sourceIps: [
                { address: '10.0.0.0', length: 8 },
                { address: 'fd00::', length: 8 },
                { address: '192.168.1.7', length: 32 },
              ],
              notSourceIps: [{ address: '10.200.0.0', length: 16 }],
            }),
          ],
        },
        { matches: [matchOf({ destinationPorts: [8080, 9090], notDestinationPorts: [9091] })] },
      ],
    },
  ]);
});

test('each L4 when condition is its own clause', () => {
  const r = compile(
    ap(
      'default',
      'when',
      `
  rules:
    - when:
        - { key: source.ip, values: ["10.1.0.0/16"] }
        - { key: source.namespace, notValues: ["legacy"] }
        - { key: source.principal, values: ["*/sa/sleep"] }
        - { key: destination.ip, values: ["10.200.0.20"] }
        - { key: destination.port, values: ["80", "443"] }`,
    ),
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.byName('when')?.rules[0]?.clauses, [
    { matches: [matchOf({ sourceIps: [{ address: '10.1.0.0', length: 16 }] })] },
    { matches: [matchOf({ notNamespaces: [{ exact: 'legacy' }] })] },
    { matches: [matchOf({ principals: [{ suffix: '/sa/sleep' }] })] },
    { matches: [matchOf({ destinationIps: [{ address: '10.200.0.20', length: 32 }] })] },
    { matches: [matchOf({ destinationPorts: [80, 443] })] },
  ]);
});

test('HTTP attributes: an ALLOW rule using one is dropped, a DENY only loses the field; both warn', () => {
  const r = compile(
    `${ap('default', 'plain', '  rules: [{}]')}${ap(
      'default',
      'allow-get',
      `
  rules:
    - to: [{ operation: { methods: ["GET"], ports: ["80"] } }]
    - from: [{ source: { namespaces: ["default"] } }]`,
    )}${ap(
      'default',
      'deny-admin',
      `
  action: DENY
  rules:
    - from: [{ source: { requestPrincipals: ["*"], namespaces: ["other"] } }]
      when: [{ key: "request.headers[x-admin]", values: ["1"] }]`,
    )}`,
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.warnings, [
    'policies[1] (default/allow-get) spec.rules[0].to[0].operation.methods: HTTP attribute; a node tunnel sees only L4, so this ALLOW rule is ignored',
    'policies[2] (default/deny-admin) spec.rules[0].from[0].source.requestPrincipals: HTTP attribute; a node tunnel sees only L4, so this DENY ignores it and applies more widely',
    'policies[2] (default/deny-admin) spec.rules[0].when[0].key: request.headers[x-admin] is an HTTP attribute; a node tunnel sees only L4, so this DENY ignores it and applies more widely',
  ]);
  assert.deepEqual(r.byName('plain')?.rules, [{ clauses: [] }]);
  assert.deepEqual(r.byName('allow-get')?.rules, [{ clauses: [{ matches: [matchOf({ namespaces: [{ exact: 'default' }] })] }] }]);
  assert.deepEqual(r.byName('deny-admin')?.rules, [{ clauses: [{ matches: [matchOf({ namespaces: [{ exact: 'other' }] })] }] }]);
});

test('an ALLOW whose every rule is HTTP-only stays and matches nothing', () => {
  const r = compile(ap('default', 'paths', '  rules: [{ to: [{ operation: { paths: ["/api"] } }] }]'));
  assert.deepEqual(r.byName('paths')?.rules, []);
  assert.equal(r.warnings.length, 1);
});

test("AUDIT and CUSTOM are skipped with a warning; a targetRefs policy is the waypoint's: noted, not converted, not warned", () => {
  const r = compile(
    `${ap('default', 'audit', '  action: AUDIT\n  rules: [{}]')}${ap('default', 'ext', '  action: CUSTOM\n  provider: { name: opa }')}${ap(
      'default',
      'wp',
      '  targetRefs: [{ kind: Service, group: "", name: echo }]\n  rules: [{ to: [{ operation: { methods: ["GET"] } }] }]',
    )}${ap('default', 'gw', '  targetRef: { kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }\n  action: DENY')}`,
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.policies, []);
  assert.deepEqual(r.warnings, [
    'policies[0] (default/audit) spec.action: AUDIT is not enforced by a node tunnel; the policy is skipped',
    'policies[1] (default/ext) spec.action: CUSTOM is not enforced by a node tunnel; the policy is skipped',
  ]);
  assert.deepEqual(r.notes, [
    'policies[2] (default/wp) spec.targetRefs: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
    'policies[3] (default/gw) spec.targetRef: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
  ]);
});

test('a targetRefs policy is checked by the waypoint reader only; a name it shares with a selector policy is a problem here', () => {
  // An invalid field in a targeted policy is the waypoint reader's to report (once), not this conversion's.
  const r = compile(
    `${ap('default', 'same', '  rules: [{}]')}${ap('default', 'same', '  targetRefs: [{ kind: Service, name: echo }]\n  rulez: []')}`,
  );
  assert.deepEqual(r.problems, [
    'policies[1].metadata.name: duplicates policies[0]; names must be unique per kind and namespace (got "same")',
  ]);
  assert.equal(r.policies.length, 1);
});

test('scopes and selector assignment, a root-namespace selector spanning namespaces', () => {
  const echo = wl('default/echo', { app: 'echo', version: 'v1' });
  const echo2 = wl('other/echo', { app: 'echo' });
  const sleep = wl('default/sleep', { app: 'sleep' });
  sleep.authorizationPolicies = ['default/kept'];
  const r = compile(
    `${ap(ROOT, 'mesh-deny', '  action: DENY\n  rules: [{ to: [{ operation: { ports: ["1"] } }] }]')}${ap('default', 'ns-allow', '  {}')}${ap('default', 'echo-v1', '  selector: { matchLabels: { app: echo, version: v1 } }\n  rules: [{}]')}${ap(ROOT, 'all-echo', '  selector: { matchLabels: { app: echo } }\n  action: DENY\n  rules: [{}]')}${ap('default', 'sleep', '  selector: { matchLabels: { app: sleep } }\n  rules: [{}]')}`,
    [echo, echo2, sleep],
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.policies.map((p) => [p.name, p.scope]),
    [
      ['mesh-deny', 'GLOBAL'],
      ['ns-allow', 'NAMESPACE'],
      ['echo-v1', 'WORKLOAD_SELECTOR'],
      ['all-echo', 'WORKLOAD_SELECTOR'],
      ['sleep', 'WORKLOAD_SELECTOR'],
    ],
  );
  assert.deepEqual(r.byName('ns-allow')?.rules, [], 'spec: {} allows nothing');
  assert.deepEqual(echo.authorizationPolicies, ['default/echo-v1', 'istio-system/all-echo']);
  assert.deepEqual(echo2.authorizationPolicies, ['istio-system/all-echo']);
  assert.deepEqual(sleep.authorizationPolicies, ['default/kept', 'default/sleep']);
});

test('the dry-run annotation marks a policy dry-run', () => {
  const r = compile(
    ap('default', 'dry', '  action: DENY\n  rules: [{}]', ', annotations: { "istio.io/dry-run": "true" }') +
      ap('default', 'wet', '  action: DENY\n  rules: [{}]', ', annotations: { "istio.io/dry-run": "false" }'),
  );
  assert.equal(r.byName('dry')?.dryRun, true);
  assert.equal(r.byName('wet')?.dryRun, false);
});

const STRICT_MATCH = { notPrincipals: [{ presence: true as const }] };
const denyPlain = (ns: string, pa: string, extra = {}): Authorization => ({
  name: `ambit-peerauthn-${pa}`,
  namespace: ns,
  scope: 'WORKLOAD_SELECTOR',
  action: 'DENY',
  dryRun: false,
  rules: [{ clauses: [{ matches: [matchOf({ ...STRICT_MATCH, ...extra })] }] }],
});

test('PeerAuthentication precedence: workload over namespace over mesh; UNSET inherits', () => {
  const a = wl('default/a', { app: 'a' });
  const b = wl('default/b', { app: 'b' });
  const c = wl('prod/c', { app: 'c' });
  const d = wl('dev/d', { app: 'd' });
  const r = compile(
    `${pa(ROOT, 'mesh', '  mtls: { mode: STRICT }')}${pa('default', 'ns', '  mtls: { mode: PERMISSIVE }')}${pa('default', 'a-strict', '  selector: { matchLabels: { app: a } }\n  mtls: { mode: STRICT }')}${pa('prod', 'ns', '  mtls: { mode: UNSET }')}${pa('dev', 'ns', '  mtls: { mode: STRICT }')}`,
    [a, b, c, d],
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.policies, [denyPlain('default', 'a-strict'), denyPlain(ROOT, 'mesh'), denyPlain('dev', 'ns')]);
  assert.deepEqual(a.authorizationPolicies, ['default/ambit-peerauthn-a-strict']);
  assert.deepEqual(b.authorizationPolicies, [], 'the namespace PERMISSIVE overrides mesh STRICT');
  assert.deepEqual(c.authorizationPolicies, ['istio-system/ambit-peerauthn-mesh'], 'UNSET inherits the mesh mode');
  assert.deepEqual(d.authorizationPolicies, ['dev/ambit-peerauthn-ns']);

  const authz = PolicyAuthorizer.of(r.policies);
  const plain = (dst: Workload) => authz.check({ srcIp: '10.0.0.1', dst, dstIp: '10.200.0.1', dstPort: 80 }).allow;
  assert.deepEqual([a, b, c, d].map(plain), [false, true, false, false]);
  assert.equal(
    authz.check({ srcIdentity: 'spiffe://cluster.local/ns/x/sa/y', srcIp: '10.0.0.1', dst: a, dstIp: '10.200.0.1', dstPort: 80 }).allow,
    true,
  );
});

test('portLevelMtls in both directions, DISABLE warned, port levels without a selector ignored', () => {
  const s = wl('default/s', { app: 's' });
  const p = wl('default/p', { app: 'p' });
  const r = compile(
    `${pa('default', 'ns', '  mtls: { mode: DISABLE }\n  portLevelMtls: { 80: { mode: STRICT } }')}${pa(
      'default',
      'strict-but-metrics',
      `
  selector: { matchLabels: { app: s } }
  mtls: { mode: STRICT }
  portLevelMtls:
    15020: { mode: PERMISSIVE }
    9000: { mode: DISABLE }
    8080: { mode: STRICT }`,
    )}${pa(
      'default',
      'only-db',
      `
  selector: { matchLabels: { app: p } }
  portLevelMtls:
    5432: { mode: STRICT }`,
    )}`,
    [s, p],
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.policies, [
    denyPlain('default', 'strict-but-metrics', { notDestinationPorts: [9000, 15020] }),
    denyPlain('default', 'only-db', { destinationPorts: [5432] }),
  ]);
  assert.deepEqual(r.warnings, [
    'policies[0] (default/ns) spec.mtls.mode: DISABLE acts as PERMISSIVE for a node tunnel: plaintext is accepted and mesh peers still use mTLS',
    'policies[0] (default/ns) spec.portLevelMtls: counts only on a PeerAuthentication with a selector; ignored',
    'policies[1] (default/strict-but-metrics) spec.portLevelMtls.9000.mode: DISABLE acts as PERMISSIVE for a node tunnel: plaintext is accepted and mesh peers still use mTLS',
  ]);
  assert.deepEqual(p.authorizationPolicies, ['default/ambit-peerauthn-only-db']);
});

test('rival PeerAuthentications: the oldest wins, with a warning', () => {
  const a = wl('default/a', { app: 'a' });
  const r = compile(
    `${pa('default', 'newer', '  selector: { matchLabels: { app: a } }\n  mtls: { mode: PERMISSIVE }', ', creationTimestamp: "2024-05-01T00:00:00Z"')}${pa('default', 'older', '  selector: { matchLabels: { app: a } }\n  mtls: { mode: STRICT }', ', creationTimestamp: "2023-01-01T00:00:00Z"')}`,
    [a],
  );
  assert.deepEqual(a.authorizationPolicies, ['default/ambit-peerauthn-older']);
  assert.deepEqual(r.warnings, [
    'policies[0] (default/newer) spec: selects workload default/a, like the older default/older, which wins; this one is ignored',
  ]);
});

test('invalid documents are problems naming path, value and fix; nothing of them is emitted', () => {
  const r = compile(`${ap(
    'default',
    'bad',
    `
  rules:
    - from:
        - source: { ipBlocks: ["10.0.0.0/8", "10.0.0.300"], principals: ["a*b"] }
      to:
        - operation: { ports: [70000] }
      when:
        - { key: source.ip }
    - form: [{ source: { namespaces: [x] } }]`,
  )}apiVersion: security.istio.io/v1alpha3
kind: Sidecar
metadata: { name: x }
---
${pa('default', 'pa', '  mtls: { mode: STRICTER }')}${ap('default', 'bad', '  {}')}`);
  assert.deepEqual(r.policies, []);
  assert.deepEqual(r.problems, [
    'policies[0].spec.rules[0].from[0].source.principals[0]: Istio allows * only at the start or the end, e.g. "cluster.local/ns/foo/*", /api/* or *.png (got "a*b")',
    'policies[0].spec.rules[0].from[0].source.ipBlocks[1]: must be an IPv4/IPv6 address or CIDR such as 10.0.0.0/8 (got "10.0.0.300")',
    'policies[0].spec.rules[0].to[0].operation.ports[0]: must be a port number 1..65535, e.g. 8080 or "8080" (got 70000)',
    'policies[0].spec.rules[0].when[0]: needs values or notValues (got {"key":"source.ip"})',
    'policies[0].spec.rules[1].form: unknown field; did you mean `from`? (got [{"source":{"namespaces":["x"]}}])',
    'policies[1].apiVersion: must be security.istio.io/v1 or security.istio.io/v1beta1 (got "security.istio.io/v1alpha3")',
    'policies[1].kind: must be AuthorizationPolicy or PeerAuthentication (got "Sidecar")',
    'policies[1].metadata.namespace: is required: lower-case letters, digits, - and . (got undefined)',
    'policies[2].spec.mtls.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT (got "STRICTER")',
    'policies[3].metadata.name: duplicates policies[0]; names must be unique per kind and namespace (got "bad")',
  ]);
});

test('an HTTP attribute on workloads behind a waypoint keeps the L4 conversion; the warning names the policy, field and waypoint', () => {
  const behind = { ...wl('default/echo-1', { app: 'echo' }), waypoint: gw('10.200.9.9') };
  const viaService = { ...wl('default/api-1', { app: 'api' }), services: ['default/api.default.svc.cluster.local'] };
  const direct = wl('default/plain-1', { app: 'plain' });
  const waypoints: MeshWaypoint[] = [
    { name: 'waypoint', namespace: 'default', for: 'service', address: gw('10.200.9.9'), serviceAccount: 'waypoint' },
  ];
  const services: Service[] = [
    {
      name: 'api',
      namespace: 'default',
      hostname: 'api.default.svc.cluster.local',
      addresses: ['10.96.0.20'],
      ports: [{ port: 80, targetPort: 8080 }],
      selector: {},
      waypoint: gw('10.200.9.9'),
    },
  ];
  const docs = [
    ap('default', 'echo-get', '  selector: { matchLabels: { app: echo } }\n  rules: [{ to: [{ operation: { methods: ["GET"] } }] }]'),
    ap(
      'default',
      'api-deny',
      '  selector: { matchLabels: { app: api } }\n  action: DENY\n  rules: [{ to: [{ operation: { paths: ["/admin"] } }] }]',
    ),
    ap('default', 'plain-get', '  selector: { matchLabels: { app: plain } }\n  rules: [{ to: [{ operation: { methods: ["GET"] } }] }]'),
  ].join('');
  const parsed = YAML.parseAllDocuments(docs)
    .map((d) => d.toJS() as unknown)
    .filter((d) => d !== null);
  const problems: string[] = [];
  const r = compileIstioPolicies(parsed, [behind, viaService, direct], { rootNamespace: ROOT, waypoints, services }, (at) =>
    problems.push(at),
  );
  assert.deepEqual(problems, []);
  const advice = (uid: string): string =>
    `; workload ${uid} sits behind waypoint default/waypoint, which sees HTTP: attach the policy to the waypoint instead ` +
    '(spec.targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: <waypoint> }] or a Service, no selector)';
  assert.deepEqual(r.warnings, [
    `policies[0] (default/echo-get) spec.rules[0].to[0].operation.methods: HTTP attribute; a node tunnel sees only L4, so this ALLOW rule is ignored${advice('default/echo-1')}`,
    `policies[1] (default/api-deny) spec.rules[0].to[0].operation.paths: HTTP attribute; a node tunnel sees only L4, so this DENY ignores it and applies more widely${advice('default/api-1')}`,
    'policies[2] (default/plain-get) spec.rules[0].to[0].operation.methods: HTTP attribute; a node tunnel sees only L4, so this ALLOW rule is ignored',
  ]);
  // Today's L4 behaviour stays: the ALLOW keeps no rule, the DENY applies more widely.
  assert.deepEqual(r.policies.find((p) => p.name === 'echo-get')?.rules, []);
  assert.deepEqual(r.policies.find((p) => p.name === 'api-deny')?.rules, [{ clauses: [{ matches: [matchOf()] }] }]);
  assert.deepEqual(behind.authorizationPolicies, ['default/echo-get']);
});
