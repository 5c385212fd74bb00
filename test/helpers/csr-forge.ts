// Certificate requests a careless or hostile client could send: any key
// type, any SANs, a broken signature. For the CA's input checks.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** A WebCrypto key-generation algorithm, loosely: tests pass RSA, EC and Ed25519 ones. */
type Alg = { name: string; [param: string]: unknown };

const P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

export async function csrWith(opts: { alg?: Alg; sans: string[]; dns?: string[] }): Promise<string> {
  const alg = opts.alg ?? P256;
  const keys = (await webcrypto.subtle.generateKey(alg as Parameters<typeof webcrypto.subtle.generateKey>[0], true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...opts.sans.map((value) => ({ type: 'url' as const, value })),
    ...(opts.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: alg as x509.Pkcs10CertificateRequestCreateParams['signingAlgorithm'],
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return csr.toString('pem');
}

/** The same request with one bit of its signature flipped (the signature is the DER's tail). */
export function flipSignature(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  der.writeUInt8(der.readUInt8(der.length - 3) ^ 0x01, der.length - 3);
  const b64 = der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}
