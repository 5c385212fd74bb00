// SPIFFE identities as Istio uses them: spiffe://<trust domain>/ns/<ns>/sa/<sa>,
// exactly these path segments; anything else is not an identity.
export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;
const isSegment = (p: string | undefined): p is string => p !== undefined && SEGMENT.test(p);

export function parseSpiffe(uri: string): SpiffeId | undefined {
  if (!uri.startsWith('spiffe://')) return undefined;
  const [trustDomain, ns, namespace, sa, serviceAccount, ...rest] = uri.slice('spiffe://'.length).split('/');
  if (rest.length > 0 || ns !== 'ns' || sa !== 'sa') return undefined;
  if (!isSegment(trustDomain) || !isSegment(namespace) || !isSegment(serviceAccount)) return undefined;
  return { trustDomain, namespace, serviceAccount };
}

export const formatSpiffe = (id: SpiffeId): string => `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;

export const workloadIdentity = (trustDomain: string, w: { namespace: string; serviceAccount: string }): string =>
  formatSpiffe({ trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });

/**
 * The SPIFFE identities of a peer certificate, from Node's subjectAltName
 * string ("URI:spiffe://…, DNS:…"). DNS names are ignored.
 */
export function spiffeIdsOf(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4))
    .filter((u) => parseSpiffe(u) !== undefined);
}
