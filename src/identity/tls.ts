// TLS settings of HBONE (docs/wire.md): TLS 1.3 only, two AES-GCM suites,
// ALPN exactly h2, no session resumption, no SNI (peers are dialed by IP),
// SPIFFE identities checked on both sides.
import crypto from 'node:crypto';
import type tls from 'node:tls';
import type { ErrorCode } from '../errors';
import type { WorkloadCert } from './cert-manager';
import { parseSpiffe, spiffeIdsOf } from './spiffe';

const CIPHERS = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

const common = (c: WorkloadCert) => ({
  key: c.keyPem,
  cert: c.chainPem,
  ca: c.rootsPem,
  minVersion: 'TLSv1.3' as const,
  maxVersion: 'TLSv1.3' as const,
  ciphers: CIPHERS,
  ALPNProtocols: ['h2'],
});

/** Client side: chain to our roots, and at least one peer SPIFFE id among `expected`. */
export function clientTlsOptions(c: WorkloadCert, expected: readonly string[]): tls.ConnectionOptions {
  return {
    ...common(c),
    rejectUnauthorized: true,
    checkServerIdentity: (_host, peer) => {
      const ids = spiffeIdsOf(peer.subjectaltname);
      if (ids.some((id) => expected.includes(id))) return undefined;
      return Object.assign(new Error(`peer identity ${JSON.stringify(ids)} is not the expected ${JSON.stringify(expected)}`), {
        code: 'AMBIT_E_PEER_IDENTITY' satisfies ErrorCode,
      });
    },
  };
}

/** Server side: client certificate mandatory and chained to our roots; the trust domain is checked per connection (peerIdentity). */
export function serverTlsOptions(c: WorkloadCert): tls.TlsOptions {
  return {
    ...common(c),
    requestCert: true,
    rejectUnauthorized: true,
    // Resumption off: every connection proves its identity with a certificate.
    secureOptions: crypto.constants.SSL_OP_NO_TICKET,
  };
}

/**
 * The single SPIFFE identity of a verified peer in trustDomain, or a reason
 * it has none. Certificates with several or malformed identities are refused.
 */
export function peerIdentity(socket: tls.TLSSocket, trustDomain: string): { identity: string } | { error: string } {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return { error: 'no client certificate' };
  const ids = spiffeIdsOf(cert.subjectAltName);
  const [id] = ids;
  const parsed = id === undefined ? undefined : parseSpiffe(id);
  if (!id || !parsed || ids.length !== 1)
    return { error: `client certificate carries ${ids.length} SPIFFE identities; exactly one is required` };
  if (parsed.trustDomain !== trustDomain)
    return { error: `client identity ${id} is from trust domain ${parsed.trustDomain}, not ${trustDomain}` };
  return { identity: id };
}
