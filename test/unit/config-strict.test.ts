// The standalone YAML is strict: misspelt keys, rules across entries and
// oversized or hostile documents are all AMBIT_E_CONFIG naming the path.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/sources/config';
import { closest } from '../../src/sources/schema';
import { BASE, HASH_B, once, problemsOf } from '../helpers/mesh-yaml';

test('the base file is valid', () => {
  const c = parseConfig(BASE);
  assert.equal(c.workloads.length, 2);
  assert.equal(c.policies.length, 2);
});

test('each typo is rejected with its path and the key meant', () => {
  const cases: [string, string, RegExp][] = [
    ['policies:', 'polices:', /^polices: unknown field; did you mean `policies`\?/],
    ['rootNamespace:', 'rootNamespce:', /^rootNamespce: unknown field; did you mean `rootNamespace`\?/],
    [
      '    dataplane: ambient',
      '    dataplan: sidecar',
      /^workloads\[0\]\.dataplan: unknown field; did you mean `dataplane`\? \(got "sidecar"\)/,
    ],
    ['    capacity: 1', '    capcity: 0', /^workloads\[0\]\.capcity: unknown field; did you mean `capacity`\?/],
    ['targetPort: 8080', 'targetport: 8080', /^services\[0\]\.ports\[0\]\.targetport: unknown field; did you mean `targetPort`\?/],
    ['    selector: { app: echo }', '    selecter: { app: echo }', /^services\[0\]\.selecter: unknown field; did you mean `selector`\?/],
    ['{ name: node-2, address', '{ name: node-2, adress', /^nodes\[1\]\.adress: unknown field; did you mean `address`\?/],
    ['ca: { dir:', 'ca: { dri:', /^ca\.dri: unknown field; did you mean `dir`\?/],
    ['  tokens:', '  token:', /^controlPlane\.token: unknown field; did you mean `tokens`\?/],
    [
      `node: node-2, sha256: ${HASH_B}`,
      `node: node-2, sha: ${HASH_B}`,
      /^controlPlane\.tokens\[1\]\.sha: unknown field; did you mean `sha256`\?/,
    ],
    ['trustDomain:', 'trustdomain:', /^trustdomain: unknown field; did you mean `trustDomain`\?/],
    // The Istio objects under policies:
    [
      '      selector: { matchLabels',
      '      selecter: { matchLabels',
      /^policies\[0\]\.spec\.selecter: unknown field; did you mean `selector`\?/,
    ],
    [
      '{ matchLabels: { app: echo } }',
      '{ matchLabel: { app: echo } }',
      /^policies\[0\]\.spec\.selector\.matchLabel: unknown field; did you mean `matchLabels`\?/,
    ],
    ['        - from:', '        - form:', /^policies\[0\]\.spec\.rules\[0\]\.form: unknown field; did you mean `from`\?/],
    [
      '{ source: { principals',
      '{ sources: { principals',
      /^policies\[0\]\.spec\.rules\[0\]\.from\[0\]\.sources: unknown field; did you mean `source`\?/,
    ],
    [
      '{ principals: [',
      '{ principles: [',
      /^policies\[0\]\.spec\.rules\[0\]\.from\[0\]\.source\.principles: unknown field; did you mean `principals`\?/,
    ],
    [
      '{ operation: { ports:',
      '{ operation: { port:',
      /^policies\[0\]\.spec\.rules\[0\]\.to\[0\]\.operation\.port: unknown field; did you mean `ports`\?/,
    ],
    ['      action: ALLOW', '      actions: ALLOW', /^policies\[0\]\.spec\.actions: unknown field; did you mean `action`\?/],
    ['      mtls: { mode: STRICT }', '      mTLS: { mode: STRICT }', /^policies\[1\]\.spec\.mTLS: unknown field; did you mean `mtls`\?/],
    ['{ mode: STRICT }', '{ mod: STRICT }', /^policies\[1\]\.spec\.mtls\.mod: unknown field; did you mean `mode`\?/],
    [
      '{ name: strict, namespace: default }',
      '{ name: strict, namespace: default, lables: { a: b } }',
      /^policies\[1\]\.metadata\.lables: unknown field; did you mean `labels`\?/,
    ],
  ];
  for (const [from, to, want] of cases) {
    const problems = problemsOf(once(BASE, from, to));
    assert.ok(
      problems.some((p) => want.test(p)),
      `${to.trim()}: expected ${want} among\n${problems.join('\n')}`,
    );
  }
});

test('every unknown key is reported in one pass; far-off keys list what the level takes', () => {
  const text = once(
    once(once(BASE, 'policies:', 'polices:'), '    dataplane: ambient', '    dataplan: sidecar'),
    '    capacity: 1',
    '    capacity: 1\n    flavour: mint',
  );
  const problems = problemsOf(text);
  assert.equal(problems.length, 3, problems.join('\n'));
  assert.match(problems.join('\n'), /workloads\[0\]\.flavour: unknown field; expected one of uid, name, namespace, .*capacity/);
  // A long value is quoted only in part.
  assert.ok(
    problems.every((p) => p.length < 400),
    problems.join('\n'),
  );
});

test('a derived field is accepted only empty, and a YAML merge key says it is not supported', () => {
  assert.doesNotThrow(() => parseConfig(once(BASE, '    capacity: 1', '    capacity: 1\n    authorizationPolicies: []')));
  assert.match(
    problemsOf(once(BASE, '    capacity: 1', '    capacity: 1\n    authorizationPolicies: [default/allow-all]')).join('\n'),
    /workloads\[0\]\.authorizationPolicies: is computed from the policies' selectors/,
  );
  assert.match(
    problemsOf(once(BASE, '    labels: { app: sleep }', '    labels: { app: sleep }\n    <<: { node: node-2 }')).join('\n'),
    /workloads\[0\]\.<<: YAML merge keys \(<<\) are not supported/,
  );
});

test('objects exported from Kubernetes load with their metadata', () => {
  const exported = once(
    BASE,
    '{ name: strict, namespace: default }',
    `
      name: strict
      namespace: default
      uid: 9d3c1b1e-0000-4000-8000-000000000001
      resourceVersion: "12345"
      generation: 2
      creationTimestamp: "2024-05-01T10:00:00Z"
      labels: { team: sre }
      annotations: { kubectl.kubernetes.io/last-applied-configuration: "{}" }
      managedFields: [{ manager: kubectl, operation: Apply }]
      finalizers: []
      ownerReferences: []
    status: {}`,
  );
  assert.equal(parseConfig(exported).policies.length, 2);
});

test('did-you-mean guesses only close keys', () => {
  assert.equal(closest('targetport', ['port', 'targetPort']), 'targetPort');
  assert.equal(closest('polices', ['nodes', 'policies', 'services']), 'policies');
  assert.equal(closest('flavour', ['uid', 'name', 'node']), undefined);
  assert.equal(closest('x'.repeat(10_000), ['uid']), undefined);
});

test('a file full of the same mistake lists the first hundred and counts the rest', () => {
  const many = Array.from({ length: 500 }, (_, i) => `  - { name: n${i}, adress: 10.1.${i >> 8}.${i & 255} }`).join('\n');
  const problems = problemsOf(`trustDomain: cluster.local\nnodes:\n${many}\n`);
  assert.equal(problems.length, 101);
  assert.match(problems[0] ?? '', /^nodes\[0\]\.adress: unknown field; did you mean `address`\?/);
  assert.match(problems[100] ?? '', /^… and 900 more problems of the same kinds/);
});
