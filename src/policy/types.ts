// L4 authorization as the destination enforces it: the shape of
// istio.security.Authorization (proto/istio/security/authorization.proto)
// in ambit's own terms. Whatever the source (xDS, or Istio CRDs in the
// standalone YAML converted by istio-crd.ts), policies arrive as these.
export type PolicyScope = 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR';
export type PolicyAction = 'ALLOW' | 'DENY';

/** exact, prefix, suffix, or any non-empty value (presence). */
export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: true };

/** An IPv4 or IPv6 block: address in text form and prefix length. */
export interface IpBlock {
  address: string;
  length: number;
}

/** Every populated field must match (its values OR-ed); no not_ value may match. */
export interface Match {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  /** SPIFFE identities without the spiffe:// prefix, e.g. cluster.local/ns/default/sa/sleep. */
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  sourceIps: IpBlock[];
  notSourceIps: IpBlock[];
  destinationIps: IpBlock[];
  notDestinationIps: IpBlock[];
  destinationPorts: number[];
  notDestinationPorts: number[];
}

/** A clause matches when any of its matches does. */
export interface Clause {
  matches: Match[];
}

/** A rule matches when all of its clauses do (a rule without clauses matches everything). */
export interface Rule {
  clauses: Clause[];
}

export interface Authorization {
  name: string;
  namespace: string;
  scope: PolicyScope;
  action: PolicyAction;
  /** The policy matches when any rule does (no rules: matches nothing). */
  rules: Rule[];
  /** Evaluated and logged, never enforced. */
  dryRun: boolean;
}

/** The resource name of a policy: "<namespace>/<name>". */
export const policyKey = (p: Pick<Authorization, 'namespace' | 'name'>): string => `${p.namespace}/${p.name}`;
