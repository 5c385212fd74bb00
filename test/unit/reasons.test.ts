// The counter reasons exist twice — the BPF header and the TypeScript mirror.
// This keeps them identical in names, values and order.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REASONS } from '../../src/datapath/reasons';

const HEADER = path.resolve(__dirname, '../../../bpf/lib/reasons.h');

test('bpf/lib/reasons.h and src/datapath/reasons.ts list the same reasons in the same order', () => {
  const text = fs.readFileSync(HEADER, 'utf8');
  const entries = [...text.matchAll(/^\s*REASON_([A-Z0-9_]+)\s*=\s*(\d+)\s*,/gm)].map((m) => ({ name: m[1], value: Number(m[2]) }));
  const max = entries.find((e) => e.name === 'MAX');
  const reasons = entries.filter((e) => e.name !== 'MAX');
  assert.ok(reasons.length > 0, 'no REASON_ entries parsed from the header');
  for (const [i, e] of reasons.entries()) assert.equal(e.value, i, `REASON_${e.name} must be ${i}: values are counter slots, dense from 0`);
  assert.deepEqual(
    reasons.map((e) => e.name),
    [...REASONS],
  );
  assert.equal(max?.value, REASONS.length, 'REASON_MAX sizes the counters map');
});
