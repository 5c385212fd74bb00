// The control plane's side of Istio's IstioCertificateService: node agents
// ask, on behalf of the workloads placed on them, for one certificate per
// identity. A node is trusted only for its own workloads, so a stolen node
// token cannot mint identities running elsewhere.
import 'reflect-metadata'; // tsyringe, under @peculiar/x509, needs it loaded first
import * as grpc from '@grpc/grpc-js';
import type { Authenticate } from './xds-server';
import * as x509 from '@peculiar/x509';
import type { CertificateAuthority } from '../identity/ca';
import { parseSpiffe } from '../identity/spiffe';
import type { Logger } from '../observability/log';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../protocol/messages';

export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';
const DEFAULT_TTL_SECONDS = 86400;

export interface CaServiceDeps {
  ca: CertificateAuthority;
  /** Who is asking: node tokens from the YAML, or a TokenReview; swappable on reload. */
  tokens: { authenticate: Authenticate };
  /** SPIFFE ids of the workloads placed on node (read per call: placements change). */
  identitiesOn: (node: string) => Set<string>;
  /** Longer asks are capped to this; default 24 h. */
  maxTtlSeconds?: number;
  log: Logger;
}

type Refusal = { code: grpc.status; details: string };

/** Handlers for grpcServices().ca.service. */
export function caServiceHandlers(deps: CaServiceDeps): grpc.UntypedServiceImplementation {
  const log = deps.log.child({ component: 'ca-service' });
  const maxTtl = deps.maxTtlSeconds ?? DEFAULT_TTL_SECONDS;

  const createCertificate = async (
    call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    callback: grpc.sendUnaryData<IstioCertificateResponse>,
  ): Promise<void> => {
    const peer = call.getPeer();
    const refuse = (r: Refusal, fields: object = {}): void => {
      log.warn({ peer, ...fields, status: grpc.status[r.code], reason: r.details }, 'certificate refused');
      callback({ code: r.code, details: r.details });
    };

    const auth = await deps.tokens.authenticate(call.metadata);
    if ('error' in auth) return refuse({ code: grpc.status.UNAUTHENTICATED, details: auth.error });
    const node = auth.node;

    const checked = checkRequest(call.request, node, deps.identitiesOn, maxTtl);
    if ('code' in checked) return refuse(checked, { node });
    const { identity, ttl } = checked;

    const csrError = await verifyCsr(call.request.csr);
    if (csrError) return refuse({ code: grpc.status.INVALID_ARGUMENT, details: `csr for ${identity}: ${csrError}` }, { node, identity });
    let chain: string[];
    try {
      chain = await deps.ca.sign(call.request.csr, identity, ttl);
    } catch (err) {
      log.error({ peer, node, identity, err: (err as Error).message }, 'CA failed to sign');
      return callback({ code: grpc.status.INTERNAL, details: `signing ${identity} failed: ${(err as Error).message}` });
    }
    log.info({ node, identity, ttl }, 'certificate issued');
    callback(null, { cert_chain: chain });
  };

  const handler = (call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>, callback: grpc.sendUnaryData<IstioCertificateResponse>): void => {
    createCertificate(call, callback).catch((err: Error) => callback({ code: grpc.status.INTERNAL, details: err.message }));
  };

  return { CreateCertificate: handler as grpc.handleUnaryCall<unknown, unknown> };
}

/** Everything that can be decided without crypto: who may ask for what, for how long. */
function checkRequest(
  req: IstioCertificateRequest,
  node: string,
  identitiesOn: (node: string) => Set<string>,
  maxTtl: number,
): { identity: string; ttl: number } | Refusal {
  const value = req.metadata?.fields?.[IMPERSONATED_IDENTITY] as { stringValue?: unknown } | undefined;
  if (value === undefined) {
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details: `metadata.${IMPERSONATED_IDENTITY} is missing: without it the request asks for node ${node}'s own identity, which ambit's control plane does not issue; ask on behalf of a workload on the node`,
    };
  }
  if (typeof value.stringValue !== 'string') return { code: grpc.status.INVALID_ARGUMENT, details: `metadata.${IMPERSONATED_IDENTITY} must be a string value` };
  const identity = value.stringValue;
  if (!parseSpiffe(identity)) {
    return { code: grpc.status.INVALID_ARGUMENT, details: `metadata.${IMPERSONATED_IDENTITY} ${JSON.stringify(identity)} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>` };
  }
  if (!identitiesOn(node).has(identity)) {
    return { code: grpc.status.PERMISSION_DENIED, details: `node ${node} asked for ${identity}, which no workload on ${node} runs as` };
  }
  const asked = Number(req.validity_duration ?? 0);
  if (!Number.isFinite(asked) || asked < 0) return { code: grpc.status.INVALID_ARGUMENT, details: `validity_duration ${req.validity_duration} must be >= 0 seconds` };
  return { identity, ttl: Math.min(asked === 0 ? DEFAULT_TTL_SECONDS : asked, maxTtl) };
}

/**
 * Checked here rather than left to the CA, so a malformed CSR is the
 * caller's INVALID_ARGUMENT whichever CA implementation signs.
 */
async function verifyCsr(pem: string): Promise<string | undefined> {
  if (!pem) return 'empty';
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    return `not a PEM PKCS#10 request (${(err as Error).message})`;
  }
  try {
    if (!(await csr.verify())) return 'its signature does not match its public key';
  } catch (err) {
    return `cannot verify its signature (${(err as Error).message})`;
  }
  return undefined;
}
