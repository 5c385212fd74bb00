// A refusal asserted for what it is and for when it comes. A peer the
// tunnel must turn away is turned away in one stated way (an HTTP status, a
// TLS alert, a stream reset, a TCP reset or close) within a stated time.
// "Not 200" would pass as well for a listener that hangs or a process that
// crashed; these assertions do not.
import assert from 'node:assert/strict';
import { TIME_SCALE } from './proc';

/**
 * What became of an attempt, in one vocabulary for every layer:
 *   `status N`       the CONNECT was answered with HTTP status N
 *   `alert CODE`     the TLS handshake ended with an alert (Node's ERR_SSL_…_ALERT_… code)
 *   `rst N`          the stream was reset with HTTP/2 error code N
 *   `goaway`         the session takes no new streams
 *   `reset`          TCP RST (ECONNRESET)
 *   `refused`        nothing listens (ECONNREFUSED)
 *   `closed`         closed (FIN) before any answer
 *   `timeout`        no answer within the attempt's own time
 *   `connected`      it got through
 *   `error CODE`     anything else
 */
export type Outcome = string;

export type Refusal =
  | { status: number }
  | { alert: string }
  | { rst: number }
  | { goaway: true }
  | { reset: true }
  | { refused: true }
  | { closed: true }
  /** No answer at all, as a drop gives: the attempt's own timeout is what is expected. */
  | { dropped: true };

/** The outcome a refusal is seen as. */
export function outcomeOf(r: Refusal): Outcome {
  if ('status' in r) return `status ${r.status}`;
  if ('alert' in r) return `alert ${r.alert}`;
  if ('rst' in r) return `rst ${r.rst}`;
  if ('goaway' in r) return 'goaway';
  if ('reset' in r) return 'reset';
  if ('refused' in r) return 'refused';
  if ('closed' in r) return 'closed';
  return 'timeout';
}

/** An error from a socket, TLS or HTTP/2 session, in the outcome vocabulary. */
export function outcomeOfError(err: Error): Outcome {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNRESET') return 'reset';
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ERR_HTTP2_GOAWAY_SESSION') return 'goaway';
  if (code && /^ERR_SSL_.*_ALERT_/.test(code)) return `alert ${code}`;
  return `error ${code ?? err.message}`;
}

/**
 * Waits for attempt and asserts it is refusal (or one of refusals, where the
 * peer may legitimately see either) within withinMs (× TIME_SCALE). An
 * attempt still pending at the deadline fails the test. Resolves with the
 * time it took.
 */
export async function expectRefusal(
  attempt: Promise<Outcome>,
  refusal: Refusal | Refusal[],
  withinMs: number,
  what = 'the refusal',
): Promise<number> {
  const deadline = withinMs * TIME_SCALE;
  const want = (Array.isArray(refusal) ? refusal : [refusal]).map(outcomeOf);
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), deadline);
  });
  const got = await Promise.race([attempt, late]).finally(() => clearTimeout(timer));
  const tookMs = Date.now() - started;
  const expected = want.join(' or ');
  if (got === undefined) assert.fail(`${what}: expected ${expected} within ${deadline} ms; nothing by then`);
  assert.ok(want.includes(got), `${what}: expected ${expected} within ${deadline} ms, got ${got} after ${tookMs} ms`);
  return tookMs;
}
