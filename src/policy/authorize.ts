// The authorization seam, consulted at the destination for every inbound
// connection (HBONE and plaintext). Outcomes are values with a reason, not
// exceptions. Until policies exist everything is allowed (PERMISSIVE, no
// AuthorizationPolicy), which is what a mesh without policies does.
import type { Workload } from '../state/types';

export interface ConnectionFacts {
  /** Peer SPIFFE identity from mutual TLS; undefined for plaintext. */
  srcIdentity?: string;
  srcIp: string;
  dst: Workload;
  dstIp: string;
  dstPort: number;
}

export type Decision = { allow: true } | { allow: false; reason: string; policy?: string };

export interface Authorizer {
  check(c: ConnectionFacts): Decision;
}

export const allowAll: Authorizer = { check: () => ({ allow: true }) };
