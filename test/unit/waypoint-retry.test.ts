// Retries with Istio's defaults and Envoy's backoff and retry budget, under
// an injected clock and random source.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RESPONSE_FLAGS } from '../../src/waypoint/flags';
import {
  type AttemptOutcome,
  backoffMs,
  GRPC_CANCELLED,
  GRPC_UNAVAILABLE,
  ISTIO_DEFAULT_RETRY,
  RetryBudget,
  RetryState,
  retriable,
} from '../../src/waypoint/retry';
import type { RetryPolicy } from '../../src/waypoint/types';

const resp = (status: number, grpcStatus?: number): AttemptOutcome => ({
  kind: 'response',
  status,
  ...(grpcStatus === undefined ? {} : { grpcStatus }),
});

test("Istio's default retries connect failures, refused streams, gRPC UNAVAILABLE and CANCELLED, not 503 nor a reset", () => {
  const rows: [AttemptOutcome, boolean][] = [
    [{ kind: 'connect-failure' }, true],
    [{ kind: 'refused-stream' }, true],
    [resp(200, GRPC_UNAVAILABLE), true],
    [resp(200, GRPC_CANCELLED), true],
    [resp(503), false],
    [resp(500), false],
    [resp(200), false],
    [resp(200, 0), false],
    [{ kind: 'reset' }, false],
    [{ kind: 'backend-timeout' }, true],
  ];
  for (const [o, want] of rows) assert.equal(retriable(ISTIO_DEFAULT_RETRY, o), want, JSON.stringify(o));
  assert.equal(ISTIO_DEFAULT_RETRY.attempts, 2);
  assert.equal(ISTIO_DEFAULT_RETRY.backoffBaseMs, 25);
});

test('a route with retry codes retries those statuses', () => {
  const p: RetryPolicy = { ...ISTIO_DEFAULT_RETRY, on: [...ISTIO_DEFAULT_RETRY.on, 'retriable-status-codes'], codes: [503] };
  assert.equal(retriable(p, resp(503)), true);
  assert.equal(retriable(p, resp(502)), false);
});

test("backoff is Envoy's fully jittered exponential: [0, base × (2ⁿ − 1)), capped at 10 × base", () => {
  const top = () => 0.999999;
  assert.deepEqual(
    [1, 2, 3, 4, 10].map((n) => backoffMs(ISTIO_DEFAULT_RETRY, n, top)),
    [24, 74, 174, 249, 249],
  );
  assert.equal(
    backoffMs(ISTIO_DEFAULT_RETRY, 3, () => 0),
    0,
  );
  assert.equal(
    backoffMs(ISTIO_DEFAULT_RETRY, 2, () => 0.5),
    37,
  );
});

/** A clock the test moves. */
function clock(start = 0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

test('two retries, then URX: the request fails with the last failure after three attempts', () => {
  const c = clock();
  const s = new RetryState(ISTIO_DEFAULT_RETRY, new RetryBudget(), c.now, () => 0.5);
  assert.deepEqual(s.next({ kind: 'connect-failure' }), { retry: true, delayMs: 12 });
  assert.deepEqual(s.next({ kind: 'connect-failure' }), { retry: true, delayMs: 37 });
  assert.deepEqual(s.next({ kind: 'connect-failure' }), { retry: false, reason: 'attempts', flag: RESPONSE_FLAGS.URX });
  assert.equal(s.count, 2);
});

test('a final outcome ends retrying at once; attempts 0 never retries', () => {
  const s = new RetryState(
    ISTIO_DEFAULT_RETRY,
    new RetryBudget(),
    () => 0,
    () => 0.5,
  );
  assert.deepEqual(s.next(resp(200)), { retry: false, reason: 'final' });
  const none = new RetryState(
    { ...ISTIO_DEFAULT_RETRY, attempts: 0 },
    new RetryBudget(),
    () => 0,
    () => 0.5,
  );
  assert.deepEqual(none.next({ kind: 'connect-failure' }), { retry: false, reason: 'final' });
});

test('no retry whose wait would pass the request deadline (timeouts.request)', () => {
  const c = clock(1_000);
  const s = new RetryState(ISTIO_DEFAULT_RETRY, new RetryBudget(), c.now, () => 0.999, 1_030);
  assert.equal(s.next({ kind: 'refused-stream' }).retry, true, 'now 1000 + 24 ms wait < 1030');
  c.advance(20);
  assert.deepEqual(s.next({ kind: 'refused-stream' }), { retry: false, reason: 'deadline' });
});

test('the budget allows max(3, 20 % of requests in flight) retries in flight', () => {
  const b = new RetryBudget();
  const ends = Array.from({ length: 10 }, () => b.request());
  assert.equal(b.limit, 3, '20 % of 10 is 2: the minimum of 3 holds');
  const slots = [b.retry(), b.retry(), b.retry()];
  assert.ok(slots.every((s) => s !== undefined));
  assert.equal(b.retry(), undefined);
  slots[0]?.();
  slots[0]?.(); // idempotent
  assert.equal(b.activeRetries, 2);
  assert.ok(b.retry());
  for (let i = 0; i < 90; i++) ends.push(b.request());
  assert.equal(b.limit, 20);
  for (const end of ends) end();
  assert.equal(b.activeRequests, 0);
});

test('in an outage the budget stops retries from multiplying the load: 100 failing requests send at most 125 attempts, not 300', () => {
  const budget = new RetryBudget();
  const c = clock();
  const requests = Array.from({ length: 100 }, () => ({
    end: budget.request(),
    state: new RetryState(ISTIO_DEFAULT_RETRY, budget, c.now, () => 0.5),
    attempts: 1,
    live: true,
  }));
  // Every attempt fails with a connect failure; a retry keeps its budget slot until its own outcome is known.
  for (let round = 0; round < 3; round++) {
    for (const r of requests) {
      if (!r.live) continue;
      const d = r.state.next({ kind: 'connect-failure' });
      if (d.retry) r.attempts++;
      else {
        r.live = false;
        r.state.finish();
        r.end();
      }
    }
  }
  const attempts = requests.reduce((n, r) => n + r.attempts, 0);
  // Without a budget: 300 attempts (3 each). With it: 100 first attempts, 20 retries (20 % of 100 in flight), then
  // at most 5 (20 % of the 20 requests left, and only as earlier retries leave), then the attempts are spent.
  assert.ok(attempts > 120 && attempts <= 125, `attempts ${attempts}`);
  for (const r of requests) if (r.live) r.state.finish();
  assert.equal(budget.activeRetries, 0, 'every slot released');
});
