// Why an outbound connection could not be carried. These are expected
// per-connection outcomes, not bugs: the pool rejects with one, outbound
// turns it into an access-log `error`, a metric reason
// (ambit_connection_failures_total{direction="outbound",reason=code}) and a
// rate-limited warning. The codes are stable and listed with the others in
// src/errors.ts (OutboundFailureCode).
import type { OutboundFailureCode } from '../errors';

export class ClientFailure extends Error {
  /** Never processed by the peer: safe to send again on another session. */
  refused?: boolean;
  status?: number;

  constructor(
    readonly code: OutboundFailureCode,
    message: string,
    opts: { cause?: unknown; refused?: boolean; status?: number } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ClientFailure';
    if (opts.refused) this.refused = true;
    if (opts.status !== undefined) this.status = opts.status;
  }
}

/** The code of an error from the outbound path, for metrics and logs: ours, Node's, or a generic one. */
export function failureCode(err: unknown, fallback: string): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : fallback;
}
