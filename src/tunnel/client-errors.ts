// Why an outbound connection could not be carried. These are expected
// per-connection outcomes, not bugs: the pool rejects with one, outbound
// turns it into an access-log `error`, a metric reason
// (ambit_connection_failures_total{direction="outbound",reason=code}) and a
// rate-limited warning. The codes are stable: operators grep and alert on them.
export type ClientFailureCode =
  /** No certificate for the source identity: the CA refused, failed or is unreachable, or the agent did not answer a worker. */
  | 'AMBIT_E_CA'
  /** TCP + TLS + the peer's HTTP/2 SETTINGS not done within clientHandshakeMs. */
  | 'AMBIT_E_HBONE_HANDSHAKE_TIMEOUT'
  /** The peer did not answer CONNECT within connectResponseMs. */
  | 'AMBIT_E_HBONE_CONNECT_TIMEOUT'
  /** The HBONE session failed before carrying the stream (TCP refused, TLS or identity check failed, reset). */
  | 'AMBIT_E_HBONE_SESSION'
  /** The stream ended before an answer (its session went away). */
  | 'AMBIT_E_HBONE_CLOSED'
  /** The peer answered CONNECT with a status other than 200. */
  | 'AMBIT_E_HBONE_STATUS'
  /** No socket could be made inside the source pod (its netns went away with the pod). */
  | 'AMBIT_E_DIAL'
  /** A plain (non-HBONE) upstream did not accept the TCP connection within upstreamDialMs. */
  | 'AMBIT_E_UPSTREAM_DIAL_TIMEOUT';

export class ClientFailure extends Error {
  /** Never processed by the peer: safe to send again on another session. */
  refused?: boolean;
  status?: number;

  constructor(
    readonly code: ClientFailureCode,
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
