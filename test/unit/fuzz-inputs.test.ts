// A seeded slice of `make fuzz`'s in-process targets (the mesh YAML, xDS
// resources, Istio policy conversion, the policy engine's properties) plus
// the inputs earlier campaigns found, kept as regressions. fast-check prints
// the seed and the shrunk input of a failure; FUZZ_SEED and FUZZ_RUNS change
// the slice.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkConfig } from '../fuzz/config-target';
import { TARGETS } from '../fuzz/targets';

const SEED = Number(process.env.FUZZ_SEED ?? 0x11f00d);
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);

describe('fuzz slice (in-process targets)', () => {
  for (const t of TARGETS) {
    test(`${t.name}: ${t.what} (${RUNS} inputs, seed ${SEED})`, () => {
      fc.assert(
        fc.property(t.arb, (input) => {
          t.check(input);
        }),
        { seed: SEED, numRuns: RUNS },
      );
    });
  }

  // Found by the config target: a recursive YAML alias gave a TypeError
  // (circular structure) instead of AMBIT_E_CONFIG.
  for (const text of ['&a {k: *a}', 'trustDomain: &a [*a]', 'workloads:\n  - &w {uid: u, labels: *w}']) {
    test(`config: a self-referencing alias is a config error (${JSON.stringify(text)})`, () => {
      assert.equal(checkConfig(text), 'rejected');
    });
  }
});
