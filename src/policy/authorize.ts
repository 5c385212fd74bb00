// The authorization seam, consulted at the destination for every inbound
// connection (HBONE and plaintext). Outcomes are values with a reason, not
// exceptions. Until policies exist everything is allowed (PERMISSIVE, no
// AuthorizationPolicy), which is what a mesh without policies does.
import type { Workload } from '../state/types';
import type { PolicyAction } from './types';

export interface ConnectionFacts {
  /** Peer SPIFFE identity from mutual TLS; undefined for plaintext. */
  srcIdentity?: string;
  srcIp: string;
  dst: Workload;
  dstIp: string;
  dstPort: number;
}

/** A dry-run policy's outcome: logged so an operator can see what enforcing it would do. */
export interface DryRunResult {
  policy: string;
  action: PolicyAction;
  matched: boolean;
}

/**
 * `policy` names the deciding policy ("<namespace>/<name>") when one did;
 * `dryRun` lists the dry-run policies in scope, for the log only.
 */
export type Decision =
  | { allow: true; reason?: string; policy?: string; dryRun?: DryRunResult[] }
  | { allow: false; reason: string; policy?: string; dryRun?: DryRunResult[] };

export interface Authorizer {
  check(c: ConnectionFacts): Decision;
}

export const allowAll: Authorizer = { check: () => ({ allow: true }) };
