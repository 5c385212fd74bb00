// Seeded property tests over the standalone YAML: whatever the file holds,
// parseConfig returns a configuration or throws AMBIT_E_CONFIG; no other
// exception (a TypeError in a validator, a stack overflow) may leave it, since
// on a reload that would be a crash. AMBIT_FUZZ_RUNS widens the campaign.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import { AmbitError } from '../../src/errors';
import { parseConfig } from '../../src/sources/config';
import { BASE } from '../helpers/mesh-yaml';

const RUNS = Math.max(1, Number(process.env.AMBIT_FUZZ_RUNS) || 300);
const SEED = Number(process.env.AMBIT_FUZZ_SEED) || 0x0a4b17;

/** True when text parses or is refused as AMBIT_E_CONFIG; anything else fails the property with the error. */
function survives(text: string): boolean {
  try {
    parseConfig(text, 'fuzz.yaml');
  } catch (err) {
    if (err instanceof AmbitError && err.code === 'AMBIT_E_CONFIG') return true;
    throw err;
  }
  return true;
}

const base = YAML.parse(BASE) as Record<string, unknown>;

/** Every path (as keys) to a value in the document. */
function paths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) for (const [i, x] of v.entries()) paths(x, [...at, i], out);
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}
const ALL = paths(base).filter((p) => p.length > 0);

function setAt(doc: unknown, at: (string | number)[], value: unknown): unknown {
  const copy = structuredClone(doc) as Record<string | number, unknown>;
  let o = copy;
  const keys = [...at];
  const last = keys.pop();
  for (const k of keys) o = o[k] as Record<string | number, unknown>;
  if (last !== undefined) o[last] = value;
  return copy;
}

// Values of every shape, with keys the schema knows so that some land where they are read.
const KEY = fc.constantFrom(
  'name',
  'namespace',
  'uid',
  'node',
  'addresses',
  'ports',
  'port',
  'targetPort',
  'spec',
  'rules',
  'from',
  'source',
  'principals',
  'selector',
  'matchLabels',
  'mtls',
  'mode',
  'portLevelMtls',
  'metadata',
  'tokens',
  'sha256',
  '__proto__',
  'constructor',
  'toString',
);
const VALUE = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.string(),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.constantFrom('10.200.0.10', '*', '', 'STRICT', '8080', '-1'),
  ),
  node: fc.oneof(
    { depthSize: 'small' },
    tie('leaf'),
    fc.array(tie('node'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(KEY, fc.string()), tie('node'), { maxKeys: 4 }),
  ),
})).node;

test('a value of any shape at any place: a configuration or AMBIT_E_CONFIG', () => {
  fc.assert(
    fc.property(fc.constantFrom(...ALL), VALUE, (at, value) => survives(YAML.stringify(setAt(base, at, value)))),
    { numRuns: RUNS, seed: SEED },
  );
});

test('text damaged anywhere: a configuration or AMBIT_E_CONFIG', () => {
  const edit = fc.tuple(
    fc.nat({ max: BASE.length }),
    fc.nat({ max: 8 }),
    fc.oneof(
      fc.string({ maxLength: 8 }),
      fc.constantFrom('&a ', '*a', '<<: ', '[', '{', '- ', ': ', '!!', '\t', '\n  ', '%YAML 1.1\n---\n', '---\n'),
    ),
  );
  fc.assert(
    fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
      let text = BASE;
      for (const [pos, del, ins] of edits) text = text.slice(0, pos) + ins + text.slice(Math.min(text.length, pos + del));
      return survives(text);
    }),
    { numRuns: RUNS, seed: SEED + 1 },
  );
});

test('the unchanged base survives (the properties are not vacuous)', () => {
  assert.equal(parseConfig(BASE).workloads.length, 2);
});
