// What a certificate signing request must be before anything signs it: a
// PEM PKCS#10 request of bounded size, for an ECDSA P-256 key (what the
// built-in CA and every ambit peer speak), signed by that key, naming
// exactly one SPIFFE identity: the one asked for. Each refusal says what
// was found and what is expected, because the asker is a program whose
// operator will read it in a log.
import 'reflect-metadata'; // tsyringe, under @peculiar/x509, needs it loaded first
import { createPublicKey, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { parseSpiffe } from './spiffe';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/**
 * A P-256 CSR with one URI SAN is about 500 bytes of PEM. 16 KiB leaves room
 * for any honest encoding and keeps a hostile one from costing parse time.
 */
export const MAX_CSR_BYTES = 16 * 1024;

const EXPECTED_KEY = 'an ECDSA P-256 key (prime256v1)';
const P256 = 'an EC prime256v1 key';

export type CsrCheck = { ok: true; csr: x509.Pkcs10CertificateRequest } | { ok: false; reason: string };

/**
 * Checks pem as a request for identity; never throws for bad input. Without
 * identity the SAN is not checked: a signer told the identity by a trusted
 * caller (the built-in CA) puts that one in the certificate whatever the
 * request names.
 */
export async function checkCsr(pem: unknown, identity?: string): Promise<CsrCheck> {
  const no = (reason: string): CsrCheck => ({ ok: false, reason });
  if (typeof pem !== 'string' || pem.length === 0) return no('is empty; expected a PEM "CERTIFICATE REQUEST"');
  const size = Buffer.byteLength(pem);
  if (size > MAX_CSR_BYTES) return no(`is ${size} bytes; at most ${MAX_CSR_BYTES} are accepted (a P-256 request is about 500)`);
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(pem))
    return no('is not PEM with a "-----BEGIN CERTIFICATE REQUEST-----" block; expected a PKCS#10 request');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    return no(
      `is not a PEM PKCS#10 request (${firstLine(err)}); expected the DER of a CertificationRequest in a "CERTIFICATE REQUEST" block`,
    );
  }
  const key = keyKind(csr);
  if (key !== P256) return no(`has ${key}; expected ${EXPECTED_KEY}`);
  try {
    if (!(await csr.verify()))
      return no('has a signature that does not match its public key; expected the request signed by the key it carries');
  } catch (err) {
    return no(`has a signature that cannot be checked (${firstLine(err)}); expected ECDSA with SHA-256 by the key it carries`);
  }
  return (identity !== undefined && checkSan(csr, identity)) || { ok: true, csr };
}

/** "an RSA 2048-bit key", "an EC secp384r1 key", "an ed25519 key", or why the key could not be read. */
function keyKind(csr: x509.Pkcs10CertificateRequest): string {
  try {
    const k = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
    const d = k.asymmetricKeyDetails ?? {};
    if (k.asymmetricKeyType === 'ec') return `an EC ${d.namedCurve} key`;
    if (d.modulusLength) return `an ${k.asymmetricKeyType?.toUpperCase()} ${d.modulusLength}-bit key`;
    return `an ${k.asymmetricKeyType} key`;
  } catch (err) {
    return `a public key that cannot be read (${firstLine(err)})`;
  }
}

function checkSan(csr: x509.Pkcs10CertificateRequest, identity: string): CsrCheck | undefined {
  const no = (reason: string): CsrCheck => ({ ok: false, reason });
  const want = `expected exactly one URI SAN, ${identity}`;
  let names: x509.JsonGeneralName[];
  try {
    const ext = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
    if (!ext) return no(`has no subjectAltName extension; ${want}`);
    names = ext.names.toJSON();
  } catch (err) {
    return no(`has a subjectAltName that cannot be read (${firstLine(err)}); ${want}`);
  }
  const [only] = names;
  if (!only) return no(`has an empty subjectAltName; ${want}`);
  if (names.length > 1) return no(`names ${names.length} SANs (${names.map((n) => `${n.type}:${n.value}`).join(', ')}); ${want}`);
  if (only.type !== 'url') return no(`names ${only.type}:${only.value}; ${want}`);
  if (!parseSpiffe(only.value))
    return no(`names ${JSON.stringify(only.value)}, not spiffe://<trust domain>/ns/<namespace>/sa/<service account>; ${want}`);
  if (only.value !== identity) return no(`names ${only.value}, not the identity asked for; ${want}`);
  return undefined;
}

const firstLine = (err: unknown): string =>
  String((err as Error)?.message ?? err)
    .replace(/\n.*/s, '')
    .slice(0, 200);
