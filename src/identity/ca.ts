// The seam between the certificate manager and whoever signs: the built-in
// CA today, Istio's CA service (CreateCertificate) later. Same contract as
// Istio's: a PEM CSR and the identity it must carry in, a PEM chain out,
// leaf first and trust roots last.
export interface CertificateAuthority {
  sign(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]>;
}
