// Istio's certificate service as a CertificateAuthority: what a node agent
// uses against istiod or ambit's control plane. One gRPC channel per client;
// the bearer token is re-read for every call because projected
// service-account tokens are rotated in place by the kubelet.

import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { AmbitError } from '../errors';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../protocol/messages';
import { grpcServices } from '../protocol/protos';
import type { CertificateAuthority } from './ca';

export interface IstioCaClientOptions {
  /** host:port of the CA (istiod: 15012). */
  address: string;
  /** PEM roots that the CA server's TLS certificate must chain to. */
  rootsPem: string;
  /** TLS name to verify instead of the dialed host (needed when dialing by IP). */
  serverName?: string;
  /** Bearer token file, re-read per call; no authorization header without it. */
  tokenFile?: string;
  /** Sent as `clusterid`; default 'Kubernetes' (istiod's default cluster). */
  clusterId?: string;
  /** Node mode: ask for the workload's identity, not the caller's own; default true. */
  impersonate?: boolean;
  /** Per-call deadline; default 10 s. */
  timeoutMs?: number;
}

type CreateCertificate = (
  req: IstioCertificateRequest,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: IstioCertificateResponse) => void,
) => grpc.ClientUnaryCall;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

export class IstioCaClient implements CertificateAuthority {
  private readonly client: grpc.Client;
  private readonly address: string;
  private readonly tokenFile?: string;
  private readonly clusterId: string;
  private readonly impersonate: boolean;
  private readonly timeoutMs: number;

  constructor(opts: IstioCaClientOptions) {
    if (!/^.+:\d+$/.test(opts.address))
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `CA address ${JSON.stringify(opts.address)} is not host:port`,
        'e.g. istiod.istio-system.svc:15012 or 10.201.0.254:15012',
      );
    if (!opts.rootsPem.match(PEM_CERT))
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `CA roots for ${opts.address} hold no PEM certificate`,
        "give the root certificate(s) the CA server's TLS certificate chains to",
      );
    this.address = opts.address;
    this.tokenFile = opts.tokenFile;
    this.clusterId = opts.clusterId ?? 'Kubernetes';
    this.impersonate = opts.impersonate ?? true;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    const channelOpts: grpc.ChannelOptions = opts.serverName
      ? { 'grpc.ssl_target_name_override': opts.serverName, 'grpc.default_authority': opts.serverName }
      : {};
    const Ctor = grpcServices().ca;
    this.client = new Ctor(opts.address, grpc.credentials.createSsl(Buffer.from(opts.rootsPem)), channelOpts);
  }

  async sign(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]> {
    const md = new grpc.Metadata();
    if (this.tokenFile !== undefined) md.set('authorization', `Bearer ${await this.readToken(this.tokenFile)}`);
    md.set('clusterid', this.clusterId);
    const req: IstioCertificateRequest = {
      csr: csrPem,
      validity_duration: ttlSeconds,
      // google.protobuf.Struct as proto-loader encodes it: Value's oneof keeps
      // protobufjs's camelCase (stringValue) even with keepCase.
      metadata: this.impersonate ? { fields: { ImpersonatedIdentity: { stringValue: identity } } } : null,
    };
    const res = await new Promise<IstioCertificateResponse>((resolve, reject) => {
      const call = (this.client as unknown as { CreateCertificate: CreateCertificate }).CreateCertificate.bind(this.client);
      call(req, md, { deadline: Date.now() + this.timeoutMs }, (err, r) =>
        // An answer without a body reads as an empty chain, which checkAnswer refuses with AMBIT_E_CA.
        err ? reject(this.callError(err, identity)) : resolve(r ?? { cert_chain: [] }),
      );
    });
    return this.checkAnswer(res, identity);
  }

  close(): void {
    this.client.close();
  }

  private async readToken(file: string): Promise<string> {
    let token: string;
    try {
      token = (await fs.promises.readFile(file, 'utf8')).trim();
    } catch (err) {
      throw new AmbitError(
        'AMBIT_E_AUTH',
        `cannot read the CA token file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        "mount the node agent's token there (projected service-account token, audience istio-ca) or fix tokenFile",
      );
    }
    if (!token) throw new AmbitError('AMBIT_E_AUTH', `the CA token file ${file} is empty`, "write the node agent's token into it");
    return token;
  }

  private callError(err: grpc.ServiceError, identity: string): AmbitError {
    const name = grpc.status[err.code] ?? String(err.code);
    const unreachable = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED;
    const what = unreachable ? `CA at ${this.address} unreachable for ${identity}` : `CA at ${this.address} refused ${identity}`;
    return new AmbitError('AMBIT_E_CA', `${what}: ${name}: ${err.details}`, this.hint(err.code));
  }

  private hint(code: grpc.status): string | undefined {
    switch (code) {
      case grpc.status.UNAVAILABLE:
      case grpc.status.DEADLINE_EXCEEDED:
        return (
          `is the control plane running and reachable at ${this.address}, ` +
          'and does its TLS certificate chain to the configured roots and name the dialed host (or serverName)?'
        );
      case grpc.status.UNAUTHENTICATED:
        return this.tokenFile
          ? `the token in ${this.tokenFile} is not accepted: check it is this node's token (the control plane stores its sha256)`
          : 'the CA wants a bearer token: set tokenFile';
      case grpc.status.PERMISSION_DENIED:
        return (
          "the identity belongs to no workload on this node in the control plane's view: " +
          "check the workload's node, or wait for the placement to reach the control plane"
        );
      case grpc.status.INVALID_ARGUMENT:
        return "the CA rejected the request's form (CSR, identity, lifetime); the message says which field";
      default:
        return undefined;
    }
  }

  /** A cheap check before the certificate manager's: every entry parses, the leaf names exactly identity. */
  private checkAnswer(res: IstioCertificateResponse, identity: string): string[] {
    // Some CAs concatenate several certificates in one entry; split them so
    // the leaf is first and the roots last, one certificate per element.
    const chain = (res.cert_chain ?? []).flatMap((entry) => {
      const pems = typeof entry === 'string' ? entry.match(PEM_CERT) : null;
      if (!pems)
        throw new AmbitError(
          'AMBIT_E_CA',
          `CA at ${this.address} answered a cert_chain entry for ${identity} that is not a PEM certificate`,
          'the CA must return PEM certificates, leaf first',
        );
      return pems.map((p) => `${p}\n`);
    });
    const certs = chain.map((pem, i) => {
      try {
        return new X509Certificate(pem);
      } catch (err) {
        throw new AmbitError(
          'AMBIT_E_CA',
          `CA at ${this.address} answered cert_chain[${i}] for ${identity} that does not parse: ${(err as Error).message}`,
        );
      }
    });
    const [leaf] = certs;
    if (!leaf)
      throw new AmbitError(
        'AMBIT_E_CA',
        `CA at ${this.address} answered an empty cert_chain for ${identity}`,
        'the CA must return the leaf and its roots',
      );
    const uris = (leaf.subjectAltName ?? '')
      .split(/,\s*/)
      .filter((s) => s.startsWith('URI:'))
      .map((s) => s.slice(4));
    if (uris.length !== 1 || uris[0] !== identity) {
      throw new AmbitError(
        'AMBIT_E_CA',
        `CA at ${this.address} issued a certificate for ${JSON.stringify(uris)} when ${identity} was asked`,
        'the CA must honour ImpersonatedIdentity (is node mode enabled on the CA?)',
      );
    }
    return chain;
  }
}
