// The control-plane server's own TLS identity: a P-256 server certificate
// from the built-in CA's root, issued fresh at every start so its private
// key never touches disk. Node agents verify it with the mesh root they
// already hold (rootPem), by DNS name or by the IP they dial.
import { webcrypto } from 'node:crypto';
import { type BuiltinCa, EC_ALG, toPem } from '../identity/builtin-ca';

/** The in-cluster Service name; agents dialing by IP can set it as the TLS name to verify. */
export const CONTROL_PLANE_DNS = 'ambit-control-plane.ambit-system.svc';
export const DEFAULT_SERVER_DNS = [CONTROL_PLANE_DNS, 'localhost'];
/**
 * gRPC's server credentials are fixed when the server starts, so the
 * certificate must outlive the process; a restart issues a new one.
 */
const SERVER_TTL_SECONDS = 365 * 86400;

export interface ServerCredentialsPem {
  certPem: string;
  keyPem: string;
  rootPem: string;
}

/** A server certificate for the default names plus names.dns and names.ips; certPem is leaf only. */
export async function serverCredentials(
  ca: BuiltinCa,
  names: { dns?: string[]; ips?: string[] } = {},
  opts: { ttlSeconds?: number } = {},
): Promise<ServerCredentialsPem> {
  const dns = [...new Set([...DEFAULT_SERVER_DNS, ...(names.dns ?? [])])];
  const ips = [...new Set(names.ips ?? [])];
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const certPem = await ca.issueServer(keys.publicKey, { dns, ips, ttlSeconds: opts.ttlSeconds ?? SERVER_TTL_SECONDS });
  const keyPem = toPem(Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY');
  return { certPem, keyPem, rootPem: ca.rootPem };
}
