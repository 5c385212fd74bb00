// L7 authorization at the waypoint: Istio's AuthorizationPolicy attached by
// targetRefs to the waypoint (its Gateway) or to a service, decided per
// request with what only an HTTP proxy sees (method, path, host, headers)
// as well as the peer's verified identity. The order is the L4 engine's
// (src/policy/engine.ts), and so are its verdict reasons:
// dry-run policies are only reported; a matching DENY denies; with ALLOW
// policies in scope one must match; without any, the request is allowed.
// A denial is answered 403 with Istio's body (flags.ts RBAC_DENIED_BODY).
import net from 'node:net';
import { parseSpiffe } from '../identity/spiffe';
import type { DryRunResult } from '../policy/authorize';
import type { Verdict } from '../policy/engine';
import type { IpBlock, StringMatch } from '../policy/types';
import type { L7Match, L7Policy, L7Rule } from './types';

/** What an L7 policy can see of a request. */
export interface RequestAuthzFacts {
  /** The peer's SPIFFE identity from mutual TLS (spiffe://…); undefined without one. */
  srcIdentity?: string;
  srcIp: string;
  /** Host header or :authority, as sent. */
  host: string;
  /** The destination (service) port. */
  port: number;
  method: string;
  /** The request target; the query string is not part of what `paths` match. */
  target: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The waypoint deciding ("<namespace>/<name>"), for policies that target its Gateway. */
  waypoint: string;
  /** The service addressed ("<namespace>/<hostname>"), if any. */
  service?: string;
}

interface Seen {
  principal: string;
  namespace: string;
  src: { text: string; family: 'ipv4' | 'ipv6' } | undefined;
  host: string;
  port: number;
  method: string;
  path: string;
  headers: RequestAuthzFacts['headers'];
}

function address(ip: string): Seen['src'] {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const text = mapped?.[1] ?? ip;
  const v = net.isIP(text);
  return v === 4 ? { text, family: 'ipv4' } : v === 6 ? { text, family: 'ipv6' } : undefined;
}

/** The host without its port, in lower case: "Echo.Default:8080" and "echo.default" are one host. */
export function hostOnly(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1 || h.length);
  const colon = h.lastIndexOf(':');
  return colon > 0 && h.indexOf(':') === colon && /^\d+$/.test(h.slice(colon + 1)) ? h.slice(0, colon) : h;
}

function seen(f: RequestAuthzFacts): Seen {
  const id = f.srcIdentity;
  const q = f.target.indexOf('?');
  return {
    principal: id === undefined ? '' : id.startsWith('spiffe://') ? id.slice('spiffe://'.length) : id,
    namespace: id === undefined ? '' : (parseSpiffe(id)?.namespace ?? ''),
    src: address(f.srcIp),
    host: hostOnly(f.host),
    port: f.port,
    method: f.method,
    path: q < 0 ? f.target : f.target.slice(0, q),
    headers: f.headers,
  };
}

function stringMatches(m: StringMatch, v: string): boolean {
  if ('exact' in m) return v === m.exact;
  if ('prefix' in m) return v.startsWith(m.prefix);
  if ('suffix' in m) return v.endsWith(m.suffix);
  return v !== '';
}

function strings(yes: readonly StringMatch[], no: readonly StringMatch[], v: string): boolean {
  if (yes.length > 0 && !yes.some((m) => stringMatches(m, v))) return false;
  return !no.some((m) => stringMatches(m, v));
}

const lists = new WeakMap<readonly IpBlock[], net.BlockList>();
function inBlocks(blocks: readonly IpBlock[], a: Seen['src']): boolean {
  if (!a) return false;
  let list = lists.get(blocks);
  if (!list) {
    list = new net.BlockList();
    for (const b of blocks) {
      const family = net.isIPv4(b.address) ? 'ipv4' : 'ipv6';
      if (net.isIP(b.address)) list.addSubnet(b.address, b.length, family);
    }
    lists.set(blocks, list);
  }
  return list.check(a.text, a.family);
}

function header(h: Seen['headers'], name: string): string {
  const v = h[name];
  return v === undefined ? '' : typeof v === 'string' ? v : v.join(',');
}

function entryMatches(m: L7Match, s: Seen): boolean {
  return (
    strings(m.principals, m.notPrincipals, s.principal) &&
    strings(m.namespaces, m.notNamespaces, s.namespace) &&
    (m.sourceIps.length === 0 || inBlocks(m.sourceIps, s.src)) &&
    (m.notSourceIps.length === 0 || !inBlocks(m.notSourceIps, s.src)) &&
    strings(m.hosts, m.notHosts, s.host) &&
    (m.ports.length === 0 || m.ports.includes(s.port)) &&
    !m.notPorts.includes(s.port) &&
    strings(m.methods, m.notMethods, s.method) &&
    strings(m.paths, m.notPaths, s.path) &&
    m.headers.every((h) => strings(h.values, h.notValues, header(s.headers, h.name)))
  );
}

const ruleMatches = (r: L7Rule, s: Seen): boolean => r.clauses.every((c) => c.some((m) => entryMatches(m, s)));
const policyMatches = (p: L7Policy, s: Seen): boolean => p.rules.some((r) => ruleMatches(r, s));
const key = (p: L7Policy): string => `${p.namespace}/${p.name}`;

/** Whether a policy is attached to this waypoint or to the service addressed. */
function targets(p: L7Policy, f: Pick<RequestAuthzFacts, 'waypoint' | 'service'>): boolean {
  return p.targets.some((t) => (t.kind === 'Gateway' ? `${t.namespace}/${t.name}` === f.waypoint : t.service === f.service));
}

/** The decision over the policies given (already those in scope). */
export function evaluateL7(policies: readonly L7Policy[], f: RequestAuthzFacts): Verdict {
  const s = seen(f);
  const dryRun: DryRunResult[] = [];
  let enforced = 0;
  for (const p of policies) {
    if (p.dryRun) dryRun.push({ policy: key(p), action: p.action, matched: policyMatches(p, s) });
    else enforced++;
  }
  if (enforced === 0) return { allow: true, reason: 'no_policies', dryRun };
  for (const p of policies)
    if (!p.dryRun && p.action === 'DENY' && policyMatches(p, s))
      return { allow: false, policy: key(p), reason: 'denied_by_policy', dryRun };
  let allows = 0;
  for (const p of policies) {
    if (p.dryRun || p.action !== 'ALLOW') continue;
    allows++;
    if (policyMatches(p, s)) return { allow: true, policy: key(p), reason: 'allowed_by_policy', dryRun };
  }
  return allows === 0 ? { allow: true, reason: 'no_allow_policies', dryRun } : { allow: false, reason: 'no_allow_policy_matched', dryRun };
}

/** The L7 authorizer of one configuration: picks the policies attached to the request's waypoint or service. */
export class L7Authorizer {
  constructor(private readonly policies: readonly L7Policy[]) {}

  inScope(f: Pick<RequestAuthzFacts, 'waypoint' | 'service'>): L7Policy[] {
    return this.policies.filter((p) => targets(p, f));
  }

  check(f: RequestAuthzFacts): Verdict {
    return evaluateL7(this.inScope(f), f);
  }
}
