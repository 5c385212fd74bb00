// One certificate per workload identity, held in memory only. Fetched on
// demand (the node fetches before it enrols a pod); one CA request in flight per identity;
// refreshed at half-life; on failure retried with exponential backoff while
// a still-valid certificate keeps serving; forgotten when the identity
// leaves the node. Without a valid certificate, a fetch during the backoff
// fails at once with the last error (AMBIT_E_CA) instead of asking the CA
// again: a CA outage must not turn every new connection into a CA call, nor
// leave connections waiting on one. Emits 'updated' (identity, cert) so TLS servers swap
// their context without dropping connections.
import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as x509 from '@peculiar/x509';
import { AmbitError } from '../errors';
import type { Logger } from '../observability/log';
import { EC_ALG, toPem } from './builtin-ca';
import type { CertificateAuthority } from './ca';
import { spiffeIdsOf } from './spiffe';

export interface WorkloadCert {
  identity: string;
  /** Leaf then intermediates (PEM), what a TLS peer is sent. */
  chainPem: string;
  keyPem: string;
  /** Trust roots: the last element(s) of the CA's answer. */
  rootsPem: string;
  notBefore: Date;
  notAfter: Date;
}

/** What the data path needs of certificates: the current one per identity, and news of renewals. */
export interface CertProvider {
  fetch(identity: string): Promise<WorkloadCert>;
  on(event: 'updated', listener: (identity: string, cert: WorkloadCert) => void): this;
  off(event: 'updated', listener: (identity: string, cert: WorkloadCert) => void): this;
}

export interface CertManagerOptions {
  ttlSeconds?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  now?: () => number;
  log: Logger;
}

interface Entry {
  cert?: WorkloadCert;
  inflight?: Promise<WorkloadCert>;
  timer?: NodeJS.Timeout;
  failures: number;
  /** The last CA failure and when the next attempt is due, while backing off. */
  lastError?: AmbitError;
  retryAt?: number;
}

export class CertificateManager extends EventEmitter implements CertProvider {
  private readonly entries = new Map<string, Entry>();
  private readonly ttl: number;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly now: () => number;
  private readonly log: Logger;
  /** CA calls made, for tests and metrics. */
  requests = 0;

  constructor(
    private readonly ca: CertificateAuthority,
    opts: CertManagerOptions,
  ) {
    super();
    this.ttl = opts.ttlSeconds ?? 86400;
    this.backoffInitial = opts.backoffInitialMs ?? 1000;
    this.backoffMax = opts.backoffMaxMs ?? 150_000;
    this.now = opts.now ?? Date.now;
    this.log = opts.log.child({ component: 'certs' });
  }

  /** A valid certificate for identity: the cached one, or one being fetched. */
  fetch(identity: string): Promise<WorkloadCert> {
    const e = this.entry(identity);
    const c = e.cert;
    if (c && this.valid(c)) return Promise.resolve(c);
    if (e.inflight) return e.inflight;
    if (e.lastError && e.retryAt !== undefined && this.now() < e.retryAt) {
      const inMs = Math.round(e.retryAt - this.now());
      return Promise.reject(
        new AmbitError(
          'AMBIT_E_CA',
          `no valid certificate for ${identity}: the CA failed ${e.failures} time(s), next attempt in ${inMs} ms; last error: ${e.lastError.message}`,
        ),
      );
    }
    return this.request(identity);
  }

  current(identity: string): WorkloadCert | undefined {
    const c = this.entries.get(identity)?.cert;
    return c && this.valid(c) ? c : undefined;
  }

  identities(): string[] {
    return [...this.entries.keys()];
  }

  /** The certificates held now (for metrics and config dumps; callers must not expose keyPem). */
  certificates(): WorkloadCert[] {
    return [...this.entries.values()].flatMap((e) => (e.cert ? [e.cert] : []));
  }

  /** Forgets every identity not in keep (workloads that left the node). */
  retain(keep: Set<string>): void {
    for (const [id, e] of this.entries) {
      if (keep.has(id)) continue;
      clearTimeout(e.timer);
      this.entries.delete(id);
      this.log.info({ identity: id }, 'certificate forgotten');
    }
  }

  close(): void {
    for (const e of this.entries.values()) clearTimeout(e.timer);
    this.entries.clear();
  }

  private entry(identity: string): Entry {
    let e = this.entries.get(identity);
    if (!e) {
      e = { failures: 0 };
      this.entries.set(identity, e);
    }
    return e;
  }

  private valid(c: WorkloadCert): boolean {
    const t = this.now();
    return c.notBefore.getTime() <= t && t < c.notAfter.getTime();
  }

  private request(identity: string): Promise<WorkloadCert> {
    const e = this.entry(identity);
    if (e.inflight) return e.inflight;
    clearTimeout(e.timer);
    const p = this.issue(identity).then(
      (cert) => {
        if (this.entries.get(identity) !== e) return cert; // forgotten meanwhile
        e.inflight = undefined;
        e.cert = cert;
        e.failures = 0;
        e.lastError = undefined;
        e.retryAt = undefined;
        // Half of what is left: notBefore is backdated for clock skew, so the
        // nominal half-life could already have passed.
        this.schedule(identity, e, (cert.notAfter.getTime() - this.now()) / 2);
        this.log.info({ identity, notAfter: cert.notAfter.toISOString() }, 'certificate issued');
        this.emit('updated', identity, cert);
        return cert;
      },
      (cause: Error) => {
        const err = asCaError(cause, identity);
        e.inflight = undefined;
        e.failures++;
        const delay = Math.min(this.backoffMax, this.backoffInitial * 2 ** (e.failures - 1)) * (0.8 + 0.4 * Math.random());
        e.lastError = err;
        e.retryAt = this.now() + delay;
        if (this.entries.get(identity) === e) this.schedule(identity, e, delay);
        this.log.warn(
          {
            identity,
            code: err.code,
            err: err.message,
            retryInMs: Math.round(delay),
            keeping: e.cert && this.valid(e.cert) ? e.cert.notAfter.toISOString() : null,
          },
          'certificate request failed',
        );
        throw err;
      },
    );
    e.inflight = p;
    return p;
  }

  private schedule(identity: string, e: Entry, delayMs: number): void {
    clearTimeout(e.timer);
    e.timer = setTimeout(
      () => {
        this.request(identity).catch(() => undefined);
      },
      Math.max(0, delayMs),
    );
    e.timer.unref();
  }

  private issue(identity: string): Promise<WorkloadCert> {
    this.requests++;
    return requestCertificate(this.ca, identity, this.ttl);
  }
}

/** A failed issuance as the data path reports it: AmbitError codes kept (AMBIT_E_AUTH says more), anything else is the CA's. */
function asCaError(err: Error, identity: string): AmbitError {
  if (err instanceof AmbitError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return new AmbitError(
    'AMBIT_E_CA',
    `certificate request for ${identity} failed: ${code && !err.message.includes(code) ? `${code}: ` : ''}${err.message}`,
  );
}

/** A fresh P-256 key and a CSR for identity, signed by ca, checked. The key never leaves memory. */
export async function requestCertificate(ca: CertificateAuthority, identity: string, ttlSeconds: number): Promise<WorkloadCert> {
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: EC_ALG,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }])],
  });
  const chain = await ca.sign(csr.toString('pem'), identity, ttlSeconds);
  const keyPem = toPem(Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY');
  return checkChain(identity, chain, keyPem);
}

/** The CA's answer must be for exactly this identity and this key. */
export function checkChain(identity: string, chain: string[], keyPem: string): WorkloadCert {
  const [leafPem] = chain;
  if (leafPem === undefined || chain.length < 2)
    throw new AmbitError('AMBIT_E_CA', `CA answered ${chain.length} certificate(s) for ${identity}; expected leaf … root`);
  const leaf = new X509Certificate(leafPem);
  const ids = spiffeIdsOf(leaf.subjectAltName);
  if (ids.length !== 1 || ids[0] !== identity) {
    throw new AmbitError(
      'AMBIT_E_CA',
      `CA issued a certificate for ${JSON.stringify(ids)} when ${identity} was asked`,
      'the CA must honour the requested identity',
    );
  }
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem)))
    throw new AmbitError('AMBIT_E_CA', `CA returned a certificate for another key (${identity})`);
  return {
    identity,
    chainPem: joinPem(chain.slice(0, -1)),
    keyPem,
    rootsPem: joinPem(chain.slice(-1)),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  };
}

const joinPem = (pems: string[]): string => pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('');
