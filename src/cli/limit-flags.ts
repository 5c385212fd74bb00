// The tunnel's deadlines and caps as `ambit node|sidecar` flags. One entry
// per TunnelLimits field (the Record type makes a new field a compile error
// here until it has a flag), named as an Istio or ztunnel operator would
// look for them.
import { DEFAULT_LIMITS, type TunnelLimits } from '../tunnel/limits';
import { parseCount, parseDuration } from './args';

interface LimitFlag {
  flag: string;
  kind: 'duration' | 'count';
  help: string;
}

export const LIMIT_FLAGS: Record<keyof TunnelLimits, LimitFlag> = {
  serverHandshakeMs: {
    flag: 'handshake-timeout',
    kind: 'duration',
    help: 'TLS handshake of a connection to :15008; unfinished ones are closed',
  },
  clientHandshakeMs: { flag: 'outbound-handshake-timeout', kind: 'duration', help: "TLS handshake with a destination's :15008" },
  connectResponseMs: { flag: 'connect-timeout', kind: 'duration', help: "from sending HBONE CONNECT to the peer's response" },
  upstreamDialMs: { flag: 'dial-timeout', kind: 'duration', help: 'TCP connect to the app in the destination pod, or a plain upstream' },
  sessionIdleMs: {
    flag: 'idle-timeout',
    kind: 'duration',
    help: 'an HBONE connection (either side) with no stream for this long is closed',
  },
  maxPendingHandshakes: { flag: 'max-pending-handshakes', kind: 'count', help: "TLS handshakes in progress at once on one pod's :15008" },
  maxPendingHandshakesPerSource: { flag: 'max-pending-handshakes-per-source', kind: 'count', help: 'of those, from one source address' },
  maxConnectionsPerSource: {
    flag: 'max-connections-per-source',
    kind: 'count',
    help: "open connections to one pod's :15008 from one source address",
  },
  maxStreamsPerSession: {
    flag: 'max-streams-per-connection',
    kind: 'count',
    help: 'streams per outbound HBONE connection (fewer if the peer says so)',
  },
  serverMaxStreams: { flag: 'max-concurrent-streams', kind: 'count', help: 'streams an inbound HBONE connection accepts at once' },
  keepaliveIntervalMs: { flag: 'keepalive-interval', kind: 'duration', help: 'HTTP/2 PING on every HBONE connection, both sides' },
  keepaliveTimeoutMs: {
    flag: 'keepalive-timeout',
    kind: 'duration',
    help: 'an HBONE connection whose PING is not answered in this time is closed with its streams',
  },
  certificateWaitMs: {
    flag: 'certificate-timeout',
    kind: 'duration',
    help: "a worker's wait for a certificate; then the connection fails (AMBIT_E_CA)",
  },
};

const entries = Object.entries(LIMIT_FLAGS) as [keyof TunnelLimits, LimitFlag][];

/** parseArgs options for every limit flag. */
export const limitOptions = Object.fromEntries(entries.map(([, f]) => [f.flag, { type: 'string' as const }])) as Record<
  string,
  { type: 'string' }
>;

/** The overrides given on the command line; absent flags keep the defaults. */
export function limitsFromFlags(values: Record<string, unknown>, usage: string): Partial<TunnelLimits> {
  const out: Partial<TunnelLimits> = {};
  for (const [field, f] of entries) {
    const raw = values[f.flag];
    if (typeof raw !== 'string') continue;
    out[field] = f.kind === 'duration' ? parseDuration(`--${f.flag}`, raw, usage) : parseCount(`--${f.flag}`, raw, 0, usage, 1);
  }
  return out;
}

/** Usage lines: flag, default, meaning. */
export function limitUsage(indent: string): string {
  return entries
    .map(([field, f]) => {
      const d = DEFAULT_LIMITS[field];
      const shown = f.kind === 'duration' ? formatDuration(d) : String(d);
      return `${indent}--${`${f.flag} ${f.kind === 'duration' ? 'DURATION' : 'N'}`.padEnd(36)} ${f.help} (default ${shown})`;
    })
    .join('\n');
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
