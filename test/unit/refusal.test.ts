// expectRefusal, the assertion the root tests' refusals go through: it
// passes only for the stated refusal, and only in time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TIME_SCALE } from '../helpers/proc';
import { expectRefusal, outcomeOf, outcomeOfError } from '../helpers/refusal';

const after = <T>(ms: number, v: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(v), ms));

test('the stated refusal in time passes and says how long it took', async () => {
  const ms = await expectRefusal(after(20, 'status 401'), { status: 401 }, 1000);
  assert.ok(ms >= 15 && ms < 1000 * TIME_SCALE, `${ms} ms`);
  await expectRefusal(Promise.resolve('rst 7'), [{ status: 503 }, { rst: 7 }], 1000);
});

test('another outcome fails, naming both', async () => {
  await assert.rejects(
    expectRefusal(Promise.resolve('status 200'), { status: 401 }, 1000, 'a forged peer'),
    /^AssertionError.*a forged peer: expected status 401 within \d+ ms, got status 200 after \d+ ms/,
  );
  await assert.rejects(expectRefusal(Promise.resolve('reset'), { closed: true }, 1000), /expected closed .* got reset/);
});

test('an attempt still pending at the deadline fails: a listener that hangs is no refusal', async () => {
  const started = Date.now();
  await assert.rejects(
    expectRefusal(new Promise<string>(() => undefined), { closed: true }, 100, 'a hanging listener'),
    /a hanging listener: expected closed within \d+ ms; nothing by then/,
  );
  assert.ok(Date.now() - started < 1000 * TIME_SCALE);
});

test('errors and refusals map onto one vocabulary', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  assert.equal(outcomeOfError(err('ECONNRESET')), outcomeOf({ reset: true }));
  assert.equal(outcomeOfError(err('ECONNREFUSED')), outcomeOf({ refused: true }));
  assert.equal(outcomeOfError(err('ERR_HTTP2_GOAWAY_SESSION')), outcomeOf({ goaway: true }));
  assert.equal(
    outcomeOfError(err('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED')),
    outcomeOf({ alert: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }),
  );
  assert.equal(outcomeOfError(err('EPIPE')), 'error EPIPE');
  assert.equal(outcomeOf({ dropped: true }), 'timeout');
});
