// L4 authorization at the destination, as docs/wire.md ("Authorization")
// and ztunnel define it. Choices beyond the protocol text:
// - A clause without matches matches nothing (ztunnel does the same), so a
//   malformed policy never widens an ALLOW by accident.
// - A deny because no ALLOW matched names no policy: none decided it alone.
// - Dry-run policies are all reported, with whether they matched: an ALLOW
//   that would not match is as telling as a DENY that would.
// - An IPv4-mapped IPv6 peer (::ffff:a.b.c.d, as a dual-stack socket reports
//   it) is compared as IPv4; IPv4 never matches an IPv6 block nor the reverse
//   (node's BlockList alone would let ::/0 match every IPv4 address).
// - IP blocks are compiled once per policy object: a config is immutable and
//   a new one brings new objects. Unparsable blocks never match; the sources
//   (istio-crd.ts, xDS) reject them before they get here.
import net from 'node:net';
import { parseSpiffe } from '../identity/spiffe';
import type { Workload } from '../state/types';
import type { Authorizer, ConnectionFacts, Decision, DryRunResult } from './authorize';
import { type Authorization, type IpBlock, type Match, policyKey, type StringMatch } from './types';

export type VerdictReason =
  | 'denied_by_policy'
  | 'allowed_by_policy'
  | 'no_allow_policy_matched'
  /** Only DENY policies are enforced here and none matched. */
  | 'no_allow_policies'
  | 'no_policies';

export interface Verdict {
  allow: boolean;
  /** Key of the deciding policy (a matching DENY or ALLOW). */
  policy?: string;
  reason: VerdictReason;
  dryRun: DryRunResult[];
}

/** A Match with every field given, the rest empty. */
export const matchOf = (m: Partial<Match> = {}): Match => ({
  namespaces: [],
  notNamespaces: [],
  principals: [],
  notPrincipals: [],
  sourceIps: [],
  notSourceIps: [],
  destinationIps: [],
  notDestinationIps: [],
  destinationPorts: [],
  notDestinationPorts: [],
  ...m,
});

function indexPolicies(policies: readonly Authorization[]): Map<string, Authorization> {
  const byKey = new Map<string, Authorization>();
  for (const p of policies) if (!byKey.has(policyKey(p))) byKey.set(policyKey(p), p);
  return byKey;
}

function addSelected(out: Authorization[], byKey: ReadonlyMap<string, Authorization>, dst: Workload): Authorization[] {
  for (const name of dst.authorizationPolicies) {
    const p = byKey.get(name);
    // Only WORKLOAD_SELECTOR by name: a global or namespace policy is already in.
    if (p && p.scope === 'WORKLOAD_SELECTOR' && !out.includes(p)) out.push(p);
  }
  return out;
}

/**
 * Policies in scope of a destination: global ∪ its namespace's ∪ the
 * workload-selected ones it names. Built once per config; inScope runs per
 * connection and reuses per-namespace lists.
 */
export class PolicyIndex {
  readonly byKey: ReadonlyMap<string, Authorization>;
  private readonly global: Authorization[];
  private readonly perNamespace = new Map<string, readonly Authorization[]>();

  constructor(policies: readonly Authorization[]) {
    this.byKey = indexPolicies(policies);
    this.global = [...this.byKey.values()].filter((p) => p.scope === 'GLOBAL');
  }

  inScope(dst: Workload): readonly Authorization[] {
    let base = this.perNamespace.get(dst.namespace);
    if (!base) {
      const local = [...this.byKey.values()].filter((p) => p.scope === 'NAMESPACE' && p.namespace === dst.namespace);
      base = [...this.global, ...local];
      this.perNamespace.set(dst.namespace, base);
    }
    return dst.authorizationPolicies.length === 0 ? base : addSelected([...base], this.byKey, dst);
  }
}

interface Addr {
  text: string;
  family: 'ipv4' | 'ipv6';
}

/** What policies can see of a connection. */
interface Peer {
  principal: string;
  namespace: string;
  src: Addr | undefined;
  dst: Addr | undefined;
  port: number;
}

function addr(ip: string): Addr | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  if (mapped && net.isIPv4(mapped)) return { text: mapped, family: 'ipv4' };
  const v = net.isIP(ip);
  return v === 4 ? { text: ip, family: 'ipv4' } : v === 6 ? { text: ip, family: 'ipv6' } : undefined;
}

function peerOf(c: ConnectionFacts): Peer {
  const id = c.srcIdentity;
  return {
    principal: id === undefined ? '' : id.startsWith('spiffe://') ? id.slice('spiffe://'.length) : id,
    namespace: id === undefined ? '' : (parseSpiffe(id)?.namespace ?? ''),
    src: addr(c.srcIp),
    dst: addr(c.dstIp),
    port: c.dstPort,
  };
}

class Blocks {
  private readonly lists = { ipv4: new net.BlockList(), ipv6: new net.BlockList() };

  constructor(blocks: readonly IpBlock[]) {
    for (const b of blocks) {
      const a = addr(b.address);
      if (!a || !Number.isInteger(b.length) || b.length < 0 || b.length > (a.family === 'ipv4' ? 32 : 128)) continue;
      this.lists[a.family].addSubnet(a.text, b.length, a.family);
    }
  }

  has(a: Addr | undefined): boolean {
    return a !== undefined && this.lists[a.family].check(a.text, a.family);
  }
}

const compiled = new WeakMap<readonly IpBlock[], Blocks>();
function blocks(list: readonly IpBlock[]): Blocks {
  const known = compiled.get(list);
  if (known) return known;
  const b = new Blocks(list);
  compiled.set(list, b);
  return b;
}

function stringMatches(m: StringMatch, v: string): boolean {
  if ('exact' in m) return v === m.exact;
  if ('prefix' in m) return v.startsWith(m.prefix);
  if ('suffix' in m) return v.endsWith(m.suffix);
  return v !== '';
}

function strings(yes: StringMatch[], no: StringMatch[], v: string): boolean {
  if (yes.length > 0 && !yes.some((m) => stringMatches(m, v))) return false;
  return !no.some((m) => stringMatches(m, v));
}

function ips(yes: IpBlock[], no: IpBlock[], a: Addr | undefined): boolean {
  if (yes.length > 0 && !blocks(yes).has(a)) return false;
  return no.length === 0 || !blocks(no).has(a);
}

function matchMatches(m: Match, p: Peer): boolean {
  return (
    strings(m.principals, m.notPrincipals, p.principal) &&
    strings(m.namespaces, m.notNamespaces, p.namespace) &&
    ips(m.sourceIps, m.notSourceIps, p.src) &&
    ips(m.destinationIps, m.notDestinationIps, p.dst) &&
    (m.destinationPorts.length === 0 || m.destinationPorts.includes(p.port)) &&
    !m.notDestinationPorts.includes(p.port)
  );
}

function policyMatches(a: Authorization, p: Peer): boolean {
  return a.rules.some((r) => r.clauses.every((c) => c.matches.some((m) => matchMatches(m, p))));
}

export function evaluate(policies: readonly Authorization[], c: ConnectionFacts): Verdict {
  const peer = peerOf(c);
  const dryRun: DryRunResult[] = [];
  let enforced = 0;
  for (const a of policies) {
    if (a.dryRun) dryRun.push({ policy: policyKey(a), action: a.action, matched: policyMatches(a, peer) });
    else enforced++;
  }
  if (enforced === 0) return { allow: true, reason: 'no_policies', dryRun };
  for (const a of policies) {
    if (!a.dryRun && a.action === 'DENY' && policyMatches(a, peer))
      return { allow: false, policy: policyKey(a), reason: 'denied_by_policy', dryRun };
  }
  let allows = 0;
  for (const a of policies) {
    if (a.dryRun || a.action !== 'ALLOW') continue;
    allows++;
    if (policyMatches(a, peer)) return { allow: true, policy: policyKey(a), reason: 'allowed_by_policy', dryRun };
  }
  return allows === 0 ? { allow: true, reason: 'no_allow_policies', dryRun } : { allow: false, reason: 'no_allow_policy_matched', dryRun };
}

export class PolicyAuthorizer implements Authorizer {
  constructor(private readonly index: PolicyIndex) {}

  static of(policies: readonly Authorization[]): PolicyAuthorizer {
    return new PolicyAuthorizer(new PolicyIndex(policies));
  }

  /**
   * The authorizer of whatever state config() returns now, compiled once
   * per state (the source replaces the state as a whole, so identity is
   * enough to notice a change).
   */
  static following(config: () => { readonly policies: readonly Authorization[] }): () => Authorizer {
    let seen: readonly Authorization[] | undefined;
    let current: Authorizer | undefined;
    return () => {
      const { policies } = config();
      if (policies !== seen || !current) {
        seen = policies;
        current = PolicyAuthorizer.of(policies);
      }
      return current;
    };
  }

  check(c: ConnectionFacts): Decision {
    const v = evaluate(this.index.inScope(c.dst), c);
    const named = v.policy === undefined ? {} : { policy: v.policy };
    const logged = v.dryRun.length === 0 ? {} : { dryRun: v.dryRun };
    return v.allow ? { allow: true, reason: v.reason, ...named, ...logged } : { allow: false, reason: v.reason, ...named, ...logged };
  }
}
