// Mirror of bpf/lib/reasons.h (test/unit/reasons.test.ts keeps them equal).
// Index = value of the enum = slot in the per-CPU `counters` map.
export const REASONS = [
  'CONNECT_REDIRECTED',
  'CONNECT_SKIP_NOT_TCP',
  'CONNECT_SKIP_LOOPBACK',
  'CONNECT_SKIP_NOT_ENROLLED',
  'CONNECT_ERR_MAP_FULL',
  'SOCKOPS_PUBLISHED',
  'SOCKOPS_ERR_MAP_FULL',
  'GETPEERNAME_RESTORED',
  'LOOKUP_TO_PLAIN',
  'LOOKUP_TO_HBONE',
  'LOOKUP_SKIP_NOT_POD',
  'LOOKUP_SKIP_LOCAL',
  'LOOKUP_DROP_NO_SOCKET',
  'LOOKUP_DROP_ASSIGN',
  'CONNECT_SKIP_TUNNEL',
  'CONNECT_REDIRECTED_V4MAPPED',
  'CONNECT_REFUSED_IPV6',
  'LOOKUP_DROP_IPV6',
] as const;

export type Reason = (typeof REASONS)[number];
export type Counters = Record<Reason, bigint>;
