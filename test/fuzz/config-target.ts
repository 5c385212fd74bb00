// Fuzz target: the mesh YAML (parseConfig). Inputs are valid documents
// mutated structurally (fields deleted, misspelt, replaced by odd values,
// lists duplicated, nesting deepened), valid YAML text edited with YAML's
// own syntax (anchors, aliases — recursive ones too —, tags, merges, flow
// collections, directives), and random text. The property: the result is a
// config or an AmbitError with code AMBIT_E_CONFIG; any other exception,
// or an input that takes longer than SLOW_MS, is a failure.
import fc from 'fast-check';
import YAML from 'yaml';
import { AmbitError } from '../../src/errors';
import { parseConfig } from '../../src/sources/config';

const SLOW_MS = 2000;

const workload = (i: number, node: string): Record<string, unknown> => ({
  uid: `default/w${i}`,
  name: `w${i}`,
  namespace: 'default',
  serviceAccount: 'default',
  node,
  addresses: [`10.200.1.${10 + i}`],
  labels: { app: `w${i}`, version: 'v1' },
  capacity: 1,
});

/** Valid configurations the mutations start from. */
export const SEED_CONFIGS: Record<string, unknown>[] = [
  { trustDomain: 'cluster.local', nodes: [{ name: 'n1', address: '10.201.0.1' }], workloads: [workload(1, 'n1')] },
  {
    trustDomain: 'cluster.local',
    ca: { dir: '/tmp/ca' },
    rootNamespace: 'istio-system',
    nodes: [
      { name: 'n1', address: '10.201.0.1' },
      { name: 'n2', address: '10.201.0.2' },
    ],
    workloads: [workload(1, 'n1'), { ...workload(2, 'n2'), protocol: 'NONE' }, { ...workload(3, 'n2'), dataplane: 'sidecar' }],
    services: [
      {
        name: 'echo',
        namespace: 'default',
        hostname: 'echo.default.svc.cluster.local',
        addresses: ['10.96.0.10'],
        ports: [{ port: 80, targetPort: 8080 }],
        selector: { app: 'w1' },
      },
    ],
    controlPlane: { tokens: [{ node: 'n1', sha256: 'a'.repeat(64) }] },
    policies: [
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'deny', namespace: 'default' },
        spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }], to: [{ operation: { ports: ['8080'] } }] }] },
      },
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'PeerAuthentication',
        metadata: { name: 'strict', namespace: 'istio-system' },
        spec: { mtls: { mode: 'STRICT' } },
      },
    ],
  },
];

type Mutation = { path: number[]; kind: 'delete' | 'replace' | 'rename' | 'duplicate' | 'wrap'; value: unknown; typo: number };

const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    -1,
    0,
    1.5,
    65536,
    2 ** 53,
    -0,
    null,
    true,
    false,
    '10.0.0.1',
    '999.1.1.1',
    '::1',
    'HBONE',
    'sidecar',
    'x'.repeat(5000),
    '__proto__',
    'constructor',
    {},
    [],
    [[]],
    { __proto__: { polluted: true } },
  ),
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ maxLength: 30 }),
);

export const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  path: fc.array(fc.nat(), { minLength: 0, maxLength: 6 }),
  kind: fc.constantFrom('delete', 'replace', 'replace', 'rename', 'duplicate', 'wrap'),
  value: oddValue,
  typo: fc.nat(),
});

function typo(key: string, n: number): string {
  const i = n % Math.max(1, key.length);
  switch (n % 4) {
    case 0:
      return key.slice(0, i) + key.slice(i + 1); // a letter dropped: polices, selecter…
    case 1:
      return `${key}s`;
    case 2:
      return key.slice(0, i) + key.charAt(i).toUpperCase() + key.slice(i + 1);
    default:
      return key.length > 1 ? key.slice(0, i) + key.charAt(i + 1) + key.charAt(i) + key.slice(i + 2) : `${key}x`;
  }
}

/** Applies one mutation at the container the path walks to (indices taken modulo what is there). */
export function mutate(doc: unknown, m: Mutation): unknown {
  const root = { v: doc } as Record<string, unknown>;
  let parent: Record<string, unknown> | unknown[] = root;
  let key: string | number = 'v';
  for (const step of m.path) {
    const here = (parent as Record<string | number, unknown>)[key];
    if (typeof here !== 'object' || here === null) break;
    const keys: (string | number)[] = Array.isArray(here) ? here.map((_, i) => i) : Object.keys(here);
    if (keys.length === 0) break;
    parent = here as Record<string, unknown>;
    key = keys[step % keys.length] ?? key;
  }
  const p = parent as Record<string | number, unknown>;
  switch (m.kind) {
    case 'delete':
      if (Array.isArray(p)) p.splice(key as number, 1);
      else delete p[key];
      break;
    case 'replace':
      p[key] = m.value;
      break;
    case 'rename':
      if (!Array.isArray(p) && typeof key === 'string') {
        const v = p[key];
        delete p[key];
        p[typo(key, m.typo)] = v;
      }
      break;
    case 'duplicate':
      if (Array.isArray(p)) p.push(structuredClone(p[key as number]));
      else p[key] = [p[key], p[key]];
      break;
    case 'wrap':
      p[key] = m.typo % 2 ? [p[key]] : { [String(key)]: p[key] };
      break;
  }
  return root.v;
}

/** YAML syntax a hand edit or an attacker might bring in. */
const SNIPPETS = [
  '&a ',
  '*a',
  '<<: *a\n',
  '&a [*a]',
  '&a {k: *a}',
  '!!binary aGVsbG8=',
  '!!str ',
  '!!int ',
  '!!float ',
  '!!set ',
  '!!omap ',
  '!!timestamp ',
  '!!js/function ',
  '!local ',
  '? ',
  '- ',
  ': ',
  '\t',
  '---\n',
  '...\n',
  '%YAML 1.2\n',
  '%TAG ! tag:x,2000:\n',
  '{',
  '}',
  '[',
  ']',
  '"',
  "'",
  '#',
  '|\n',
  '>-\n',
  '\\u0000',
  '\0',
  'null',
  '~',
  '0x1F',
  '0o17',
  '1e400',
  '.nan',
  '-.inf',
  '2001-12-14',
  'yes',
  'on',
  '\uFEFF',
  '\u2028',
  'é',
  '😀',
  '\r\n',
  ' '.repeat(200),
  '['.repeat(200),
  '- '.repeat(100),
  'a: 1\na: 2\n',
  '__proto__: {x: 1}\n',
  'policies: polices\n',
  'polices: []\n',
  'dataplan: sidecar\n',
];

const textEdit = fc.record({
  at: fc.nat(),
  len: fc.nat(20),
  kind: fc.constantFrom('insert', 'delete', 'replace', 'dupline'),
  snippet: fc.oneof(fc.constantFrom(...SNIPPETS), fc.string({ maxLength: 8 })),
});

function editText(text: string, e: { at: number; len: number; kind: string; snippet: string }): string {
  const at = e.at % (text.length + 1);
  switch (e.kind) {
    case 'insert':
      return text.slice(0, at) + e.snippet + text.slice(at);
    case 'delete':
      return text.slice(0, at) + text.slice(at + e.len);
    case 'replace':
      return text.slice(0, at) + e.snippet + text.slice(at + e.snippet.length);
    default: {
      const lines = text.split('\n');
      const i = e.at % lines.length;
      lines.splice(i, 0, lines[i] ?? '');
      return lines.join('\n');
    }
  }
}

export const configInputArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.nat(SEED_CONFIGS.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 5 }))
      .map(([i, ms]) => String(YAML.stringify(ms.reduce(mutate, structuredClone(SEED_CONFIGS[i]))) ?? '')),
  },
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.nat(SEED_CONFIGS.length - 1), fc.array(textEdit, { minLength: 1, maxLength: 6 }))
      .map(([i, es]) => es.reduce(editText, YAML.stringify(SEED_CONFIGS[i]))),
  },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.oneof(fc.constantFrom(...SNIPPETS), fc.string({ maxLength: 10 })), { maxLength: 30 })
      .map((parts) => parts.join('')),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 200, unit: 'binary' }) },
);

/** Throws unless the input gives a config or AMBIT_E_CONFIG, within SLOW_MS. */
export function checkConfig(text: string): 'accepted' | 'rejected' {
  const started = Date.now();
  let outcome: 'accepted' | 'rejected';
  try {
    parseConfig(text, 'fuzz.yaml');
    outcome = 'accepted';
  } catch (err) {
    if (!(err instanceof AmbitError) || err.code !== 'AMBIT_E_CONFIG') throw err;
    outcome = 'rejected';
  }
  const ms = Date.now() - started;
  if (ms > SLOW_MS) throw new Error(`parseConfig took ${ms} ms (more than ${SLOW_MS})`);
  return outcome;
}
