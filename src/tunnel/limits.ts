// Every network wait of the tunnel has a deadline and every resource a peer
// can make it hold has a cap. Defaults follow what a ztunnel operator
// expects; `ambit node|sidecar` flags override them (src/cli).
export interface TunnelLimits {
  /** Server side (:15008): a TLS handshake not finished in this time is closed. */
  serverHandshakeMs: number;
  /** Client side: TLS handshake with the destination's :15008. */
  clientHandshakeMs: number;
  /** Client side: from sending CONNECT to the peer's response headers. */
  connectResponseMs: number;
  /** Dialing the app inside the destination pod, or a plain upstream. */
  upstreamDialMs: number;
  /** An HBONE session (either side) with no open stream for this long is closed. */
  sessionIdleMs: number;
  /** TLS handshakes in progress at once on one pod's :15008; past it new connections are closed at once. */
  maxPendingHandshakes: number;
  /** TLS handshakes in progress at once on one pod's :15008 from one source address: one peer cannot take all the pod's slots. */
  maxPendingHandshakesPerSource: number;
  /** Open TCP connections to one pod's :15008 from one source address. */
  maxConnectionsPerSource: number;
  /** Streams per client session unless the peer allows fewer (its SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreamsPerSession: number;
  /** Streams a server session accepts at once (advertised as SETTINGS_MAX_CONCURRENT_STREAMS). */
  serverMaxStreams: number;
  /** Both sides PING every HBONE session this often… */
  keepaliveIntervalMs: number;
  /** …and destroy it, with its streams, when the answer does not come in this time (the peer is gone). */
  keepaliveTimeoutMs: number;
  /** How long a worker waits for a certificate from the agent before the connection fails with AMBIT_E_CA. */
  certificateWaitMs: number;
}

export const DEFAULT_LIMITS: TunnelLimits = {
  serverHandshakeMs: 10_000,
  clientHandshakeMs: 10_000,
  connectResponseMs: 10_000,
  upstreamDialMs: 10_000,
  sessionIdleMs: 5 * 60_000,
  maxPendingHandshakes: 128,
  maxPendingHandshakesPerSource: 32,
  maxConnectionsPerSource: 256,
  maxStreamsPerSession: 100,
  serverMaxStreams: 200,
  certificateWaitMs: 10_000,
  keepaliveIntervalMs: 10_000,
  keepaliveTimeoutMs: 20_000,
};

/** Defaults with the given overrides. */
export function tunnelLimits(overrides: Partial<TunnelLimits> = {}): TunnelLimits {
  return { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) };
}
