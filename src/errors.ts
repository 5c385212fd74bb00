// Errors that leave the process carry a stable code (grep-able in logs and
// docs) and a hint that names the likely fix. Expected per-connection
// outcomes (no original destination, refused upstream) are values, not
// exceptions: see src/tunnel. This file is the one list of codes, so a
// misspelt code anywhere is a compile error.

/**
 * Why an outbound connection could not be carried: expected per-connection
 * outcomes, not bugs (src/tunnel/client-errors.ts). They become an access-log
 * `error` and a metric reason, so operators grep and alert on them.
 */
export type OutboundFailureCode =
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

export type ErrorCode =
  | OutboundFailureCode
  | 'AMBIT_E_KERNEL' // kernel lacks a feature
  | 'AMBIT_E_PRIVILEGE' // missing capability
  | 'AMBIT_E_MOUNT' // bpffs or cgroup2 not mounted
  | 'AMBIT_E_BPF_LOAD' // object open/load/verifier
  | 'AMBIT_E_BPF_ATTACH' // link create/pin/update
  | 'AMBIT_E_BPF_MAP' // map update/lookup
  | 'AMBIT_E_PIN_INCOMPATIBLE'
  | 'AMBIT_E_NETNS' // setns/socket inside a pod netns
  | 'AMBIT_E_ENROL' // pod facts invalid or conflicting
  | 'AMBIT_E_CNI' // a CNI request malformed, too large, too slow or one too many at once
  | 'AMBIT_E_CONFIG' // configuration file invalid
  | 'AMBIT_E_XDS' // the control plane's stream failed or sent something invalid
  | 'AMBIT_E_AUTH' // a node's bearer token or requested identity was refused
  | 'AMBIT_E_PEER_IDENTITY' // an HBONE peer's certificate names none of the expected SPIFFE identities (TLS handshake error)
  | 'AMBIT_E_ADMIN' // a node's admin endpoint could not be reached or did not answer as ambit does (`ambit config`)
  | 'AMBIT_E_INTERNAL'; // a fault of ambit's own (a bug): an error that carried no code

export class AmbitError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
  ) {
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = 'AmbitError';
  }
}
