// Weighted backend choice (the canary split) and per-request least-request
// balancing, with a seeded random source so every run is the same.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type Endpoint, LeastRequestBalancer, pickWeighted, type Random } from '../../src/waypoint/balance';

/** mulberry32: a small seeded PRNG, uniform enough for split statistics. */
function seeded(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns the given values in turn. */
const sequence = (...values: number[]): Random => {
  let i = 0;
  return () => values[i++ % values.length] ?? 0;
};

test('pickWeighted maps the random number onto the cumulative weights, skipping weight 0', () => {
  const items = [
    { id: 'a', weight: 1 },
    { id: 'zero', weight: 0 },
    { id: 'b', weight: 3 },
  ];
  const pick = (r: number) => pickWeighted(items, () => r)?.id;
  assert.equal(pick(0), 'a');
  assert.equal(pick(0.2499), 'a');
  assert.equal(pick(0.25), 'b');
  assert.equal(pick(0.9999999), 'b');
  assert.equal(
    pickWeighted([{ weight: 0 }, { weight: 0 }], () => 0.5),
    undefined,
  );
  assert.equal(
    pickWeighted([], () => 0.5),
    undefined,
  );
});

test('property: a 90/10 split sends 90 ± 3 % of 10,000 picks to the first backend', () => {
  fc.assert(
    fc.property(fc.integer(), (seed) => {
      const random = seeded(seed);
      const backends = [
        { name: 'stable', weight: 90 },
        { name: 'canary', weight: 10 },
      ];
      let stable = 0;
      for (let i = 0; i < 10_000; i++) if (pickWeighted(backends, random)?.name === 'stable') stable++;
      return stable >= 8_700 && stable <= 9_300;
    }),
    { numRuns: 50, seed: 0x5eed },
  );
});

test('property: backends of weight 0 are never picked, and some backend is whenever one has weight', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 16 }), fc.integer(), (weights, seed) => {
      const random = seeded(seed);
      const items = weights.map((weight, i) => ({ i, weight }));
      for (let n = 0; n < 200; n++) {
        const got = pickWeighted(items, random);
        if (weights.every((w) => w === 0)) return got === undefined;
        if (!got || got.weight === 0) return false;
      }
      return true;
    }),
    { numRuns: 300, seed: 0x5eed },
  );
});

const eps = (...ids: string[]): Endpoint[] => ids.map((id) => ({ id, weight: 1 }));

test('least request takes the less loaded of the two sampled endpoints; ties go to the first sampled', () => {
  const lb = new LeastRequestBalancer(sequence(0, 0.99));
  const [a, b] = eps('a', 'b');
  assert.ok(a && b);
  // Samples a then b (the second sample is drawn from the endpoints other than the first).
  assert.equal(lb.pick([a, b])?.id, 'a');
  const doneA = lb.start('a');
  assert.equal(lb.pick([a, b])?.id, 'b', 'a has a request in flight, b none');
  doneA();
  doneA(); // idempotent
  assert.equal(lb.inFlight('a'), 0);
  assert.equal(lb.pick([a, b])?.id, 'a');
});

test('one long-lived connection is spread: 3,000 concurrent requests over 3 endpoints land within 1 % of 1,000 each', () => {
  const lb = new LeastRequestBalancer(seeded(42));
  const endpoints = eps('10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80');
  const count = new Map<string, number>();
  for (let i = 0; i < 3_000; i++) {
    const e = lb.pick(endpoints);
    assert.ok(e);
    lb.start(e.id); // never finished: all in flight at once, as streams of one HTTP/2 connection
    count.set(e.id, (count.get(e.id) ?? 0) + 1);
  }
  for (const e of endpoints) assert.ok(Math.abs((count.get(e.id) ?? 0) - 1_000) <= 10, `${e.id}: ${count.get(e.id)}`);
});

test('an endpoint that is slow to answer gets fewer requests', () => {
  const lb = new LeastRequestBalancer(seeded(7));
  const endpoints = eps('fast', 'slow');
  const inFlight: { id: string; done: () => void; left: number }[] = [];
  const got = new Map<string, number>();
  for (let tick = 0; tick < 2_000; tick++) {
    const e = lb.pick(endpoints);
    assert.ok(e);
    got.set(e.id, (got.get(e.id) ?? 0) + 1);
    inFlight.push({ id: e.id, done: lb.start(e.id), left: e.id === 'slow' ? 20 : 1 });
    for (const r of inFlight) if (--r.left === 0) r.done();
  }
  assert.ok((got.get('fast') ?? 0) > 3 * (got.get('slow') ?? 0), JSON.stringify([...got]));
});

test('capacity 0 takes an endpoint out; endpoints already tried are skipped while others remain', () => {
  const lb = new LeastRequestBalancer(seeded(1));
  const endpoints: Endpoint[] = [
    { id: 'a', weight: 1 },
    { id: 'drained', weight: 0 },
    { id: 'b', weight: 1 },
  ];
  for (let i = 0; i < 500; i++) assert.notEqual(lb.pick(endpoints)?.id, 'drained');
  for (let i = 0; i < 100; i++) assert.equal(lb.pick(endpoints, new Set(['a']))?.id, 'b');
  assert.ok(['a', 'b'].includes(lb.pick(endpoints, new Set(['a', 'b']))?.id ?? ''), 'all tried: any may be retried');
  assert.equal(lb.pick([{ id: 'x', weight: 0 }]), undefined);
});
