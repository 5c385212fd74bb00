// The built-in CA for standalone use: an ECDSA P-256 root kept in a state
// directory (created on first use, readable by root only), issuing one
// short-lived leaf per SPIFFE identity with a URI SAN only.
import 'reflect-metadata'; // tsyringe, under @peculiar/x509, needs it loaded first
import { randomBytes, webcrypto } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { AmbitError } from '../errors';
import type { CertificateAuthority } from './ca';
import { checkCsr } from './csr';
import { parseSpiffe } from './spiffe';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const ROOT_CERT = 'root-cert.pem';
const ROOT_KEY = 'root-key.pem';
const ROOT_YEARS = 10;
/** Issued leaves start this far in the past: tolerates clock skew between nodes. */
const BACKDATE_MS = 5 * 60_000;

export interface IssueOptions {
  notBefore?: Date;
  notAfter?: Date;
}

/** Names of a TLS server (the control plane's gRPC endpoint), not a workload identity. */
export interface ServerCertOptions {
  dns: string[];
  ips: string[];
  ttlSeconds: number;
}

const DNS_NAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export class BuiltinCa implements CertificateAuthority {
  private constructor(
    private readonly root: x509.X509Certificate,
    private readonly rootKey: CryptoKey,
    readonly dir: string,
  ) {}

  get rootPem(): string {
    return this.root.toString('pem');
  }

  /** Opens the CA in dir, creating the root on first use (safe against a concurrent creator). */
  static async open(dir: string): Promise<BuiltinCa> {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const certFile = path.join(dir, ROOT_CERT);
    if (!fs.existsSync(certFile)) await BuiltinCa.create(dir);
    for (let i = 0; !fs.existsSync(certFile); i++) {
      if (i > 250)
        throw new AmbitError(
          'AMBIT_E_CONFIG',
          `CA directory ${dir} has ${ROOT_KEY} but no ${ROOT_CERT}`,
          `remove ${dir} to create a new root, or restore the file`,
        );
      await new Promise((r) => setTimeout(r, 20)); // another process is finishing the root
    }
    try {
      const root = new x509.X509Certificate(fs.readFileSync(certFile, 'utf8'));
      const keyDer = pemBody(fs.readFileSync(path.join(dir, ROOT_KEY), 'utf8'));
      const key = await webcrypto.subtle.importKey('pkcs8', keyDer, EC_ALG, false, ['sign']);
      return new BuiltinCa(root, key, dir);
    } catch (err) {
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `cannot load the CA in ${dir}: ${(err as Error).message}`,
        'the directory must hold the root-cert.pem and root-key.pem that `ambit ca init` wrote',
      );
    }
  }

  private static async create(dir: string): Promise<void> {
    const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: 'O=ambit, CN=ambit root CA',
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + ROOT_YEARS * 365 * 86400_000),
      keys,
      signingAlgorithm: EC_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    const tag = randomBytes(4).toString('hex');
    const tmpKey = path.join(dir, `.${ROOT_KEY}.${tag}`);
    const tmpCert = path.join(dir, `.${ROOT_CERT}.${tag}`);
    fs.writeFileSync(tmpKey, toPem(Buffer.from(pkcs8), 'PRIVATE KEY'), { mode: 0o600 });
    fs.writeFileSync(tmpCert, cert.toString('pem'), { mode: 0o600 });
    try {
      // link() never replaces: the first creator wins, later ones use its root.
      fs.linkSync(tmpKey, path.join(dir, ROOT_KEY));
      fs.linkSync(tmpCert, path.join(dir, ROOT_CERT));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      fs.rmSync(tmpKey, { force: true });
      fs.rmSync(tmpCert, { force: true });
    }
  }

  async sign(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]> {
    // The CA service's checks but the SAN's (the caller decides the
    // identity), so a caller in this process gets the reason (wrong key
    // type, bad signature) instead of a failure deep in key export.
    const checked = await checkCsr(csrPem);
    if (!checked.ok) throw new AmbitError('AMBIT_E_CA', `CSR for ${identity} ${checked.reason}`);
    if (!(Number.isFinite(ttlSeconds) && ttlSeconds > 0))
      throw new AmbitError('AMBIT_E_CA', `certificate lifetime ${ttlSeconds} s for ${identity} must be > 0`);
    const csr = checked.csr;
    const now = Date.now();
    const leaf = await this.issue(csr.publicKey, identity, {
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + ttlSeconds * 1000),
    });
    return [leaf, this.rootPem];
  }

  /** Issues a leaf for identity; the validity window is open to tests (expired certificates). */
  async issue(publicKey: x509.PublicKey | CryptoKey, identity: string, opts: IssueOptions = {}): Promise<string> {
    if (!parseSpiffe(identity)) {
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `cannot issue for ${JSON.stringify(identity)}: not spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
      );
    }
    const now = Date.now();
    const key = publicKey instanceof x509.PublicKey ? await publicKey.export(EC_ALG, ['verify']) : publicKey;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      issuer: this.root.subject,
      subject: '',
      notBefore: opts.notBefore ?? new Date(now - BACKDATE_MS),
      notAfter: opts.notAfter ?? new Date(now + 86400_000),
      publicKey: key,
      signingKey: this.rootKey,
      signingAlgorithm: EC_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // Critical: the subject is empty, the SAN is the whole identity.
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], true),
        await x509.AuthorityKeyIdentifierExtension.create(this.root),
      ],
    });
    return cert.toString('pem');
  }

  /**
   * Issues a TLS server certificate (DNS and IP SANs, serverAuth only) from
   * the same root, so node agents that already trust the mesh root can
   * verify the control plane without a second trust anchor.
   */
  async issueServer(publicKey: x509.PublicKey | CryptoKey, opts: ServerCertOptions): Promise<string> {
    const badDns = opts.dns.find((d) => !DNS_NAME.test(d));
    if (badDns !== undefined)
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `server certificate DNS name ${JSON.stringify(badDns)} is not a host name`,
        'use names like ambit-control-plane.ambit-system.svc',
      );
    const badIp = opts.ips.find((ip) => net.isIP(ip) === 0);
    if (badIp !== undefined)
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `server certificate IP ${JSON.stringify(badIp)} is not an IPv4 or IPv6 address`,
        'give addresses like 10.201.0.254',
      );
    if (opts.dns.length + opts.ips.length === 0)
      throw new AmbitError('AMBIT_E_CONFIG', 'server certificate has no DNS name and no IP', 'give at least one name clients dial');
    if (!(opts.ttlSeconds > 0)) throw new AmbitError('AMBIT_E_CONFIG', `server certificate ttlSeconds ${opts.ttlSeconds} must be > 0`);
    const now = Date.now();
    const key = publicKey instanceof x509.PublicKey ? await publicKey.export(EC_ALG, ['verify']) : publicKey;
    const names: x509.JsonGeneralName[] = [
      ...opts.dns.map((value) => ({ type: 'dns' as const, value })),
      ...opts.ips.map((value) => ({ type: 'ip' as const, value })),
    ];
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      issuer: this.root.subject,
      // A CN for humans reading the certificate; clients match the SANs.
      subject: `O=ambit, CN=${opts.dns[0] ?? opts.ips[0]}`,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + opts.ttlSeconds * 1000),
      publicKey: key,
      signingKey: this.rootKey,
      signingAlgorithm: EC_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        // ECDSA keys only sign; keyEncipherment would be meaningless.
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        // serverAuth only: this certificate must not pass as a workload's client identity.
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(names, false),
        await x509.AuthorityKeyIdentifierExtension.create(this.root),
      ],
    });
    return cert.toString('pem');
  }
}

function serial(): string {
  const b = randomBytes(16);
  b.writeUInt8(b.readUInt8(0) & 0x7f, 0); // positive
  return b.toString('hex');
}

export function toPem(der: Buffer, label: string): string {
  return `-----BEGIN ${label}-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}
