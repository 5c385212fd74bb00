// The control plane's side of Istio's IstioCertificateService: node agents
// ask, on behalf of the workloads placed on them, for one certificate per
// identity. A node is trusted only for its own workloads, so a stolen node
// token cannot mint identities running elsewhere. A waypoint asks for its
// own identity only.
import 'reflect-metadata'; // tsyringe, under @peculiar/x509, needs it loaded first
import * as grpc from '@grpc/grpc-js';
import type { CertificateAuthority } from '../identity/ca';
import { checkCsr } from '../identity/csr';
import { parseSpiffe } from '../identity/spiffe';
import type { Logger } from '../observability/log';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../protocol/messages';
import { type Authenticate, type Principal, principalName } from './xds-server';

export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';
const DEFAULT_TTL_SECONDS = 86400;
/**
 * Asks up to this long are clamped to maxTtlSeconds, as clients (istio-agent,
 * ztunnel) ask for 24 h whatever the server's maximum and must still get a
 * certificate. Longer than a year is not a lifetime anyone means but a unit
 * mistake (24 h in milliseconds is 86,400,000): refused so it is noticed.
 */
const ABSURD_TTL_SECONDS = 365 * 86400;

export interface CaServiceDeps {
  ca: CertificateAuthority;
  /** Who is asking: node tokens from the YAML, or a TokenReview; swappable on reload. */
  tokens: { authenticate: Authenticate };
  /** SPIFFE ids the caller may hold: a node's workloads (read per call: placements change), a waypoint's own. */
  identitiesOn: (who: Principal) => Set<string>;
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
    // Logged as the caller's kind: { node } or { waypoint }.
    const caller = 'node' in auth ? { node: auth.node } : { waypoint: auth.waypoint };

    const checked = checkRequest(call.request, auth, deps.identitiesOn, maxTtl);
    if ('code' in checked) return refuse(checked, caller);
    const { identity, ttl } = checked;

    // Checked here rather than left to the CA, so a malformed CSR is the
    // caller's INVALID_ARGUMENT whichever CA implementation signs; what is
    // left to fail in sign() is the server's own fault.
    const csr = await checkCsr(call.request.csr, identity);
    if (!csr.ok)
      return refuse({ code: grpc.status.INVALID_ARGUMENT, details: `csr for ${identity} ${csr.reason}` }, { ...caller, identity });
    let chain: string[];
    try {
      chain = await deps.ca.sign(call.request.csr, identity, ttl);
    } catch (err) {
      log.error({ peer, ...caller, identity, err: (err as Error).message }, 'CA failed to sign');
      return callback({ code: grpc.status.INTERNAL, details: `signing ${identity} failed: ${(err as Error).message}` });
    }
    log.info({ ...caller, identity, ttl }, 'certificate issued');
    callback(null, { cert_chain: chain });
  };

  const handler = (
    call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    callback: grpc.sendUnaryData<IstioCertificateResponse>,
  ): void => {
    createCertificate(call, callback).catch((err: Error) => callback({ code: grpc.status.INTERNAL, details: err.message }));
  };

  return { CreateCertificate: handler as grpc.handleUnaryCall<unknown, unknown> };
}

/** Everything that can be decided without crypto: who may ask for what, for how long. */
function checkRequest(
  req: IstioCertificateRequest,
  who: Principal,
  identitiesOn: (who: Principal) => Set<string>,
  maxTtl: number,
): { identity: string; ttl: number } | Refusal {
  const value = req.metadata?.fields?.[IMPERSONATED_IDENTITY] as { stringValue?: unknown } | undefined;
  if (value === undefined) {
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details:
        `metadata.${IMPERSONATED_IDENTITY} is missing: without it the request asks for ${principalName(who)}'s own identity, ` +
        "which ambit's control plane does not issue; ask on behalf of a workload on the node (a waypoint: for its own identity)",
    };
  }
  if (typeof value.stringValue !== 'string')
    return { code: grpc.status.INVALID_ARGUMENT, details: `metadata.${IMPERSONATED_IDENTITY} must be a string value` };
  const identity = value.stringValue;
  if (!parseSpiffe(identity)) {
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details: `metadata.${IMPERSONATED_IDENTITY} ${JSON.stringify(identity)} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
    };
  }
  if (!identitiesOn(who).has(identity)) {
    const details =
      'node' in who
        ? `node ${who.node} asked for ${identity}, which no workload on ${who.node} runs as`
        : `waypoint ${who.waypoint} asked for ${identity}, which is not its own identity`;
    return { code: grpc.status.PERMISSION_DENIED, details };
  }
  const asked = Number(req.validity_duration ?? 0);
  if (!Number.isInteger(asked) || asked < 0 || asked > ABSURD_TTL_SECONDS) {
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details:
        `validity_duration ${req.validity_duration} must be whole seconds from 0 (the default, ${DEFAULT_TTL_SECONDS}) ` +
        `to ${ABSURD_TTL_SECONDS}; asks above ${maxTtl} are shortened to it`,
    };
  }
  return { identity, ttl: Math.min(asked === 0 ? DEFAULT_TTL_SECONDS : asked, maxTtl) };
}
