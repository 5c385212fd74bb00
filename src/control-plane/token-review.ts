// Node agents in Kubernetes present their projected service-account token
// (audience istio-ca); the API server says whose it is (TokenReview). The
// token must belong to the node agents' service account, and the node it
// speaks for is the one its pod runs on: from the token's node claim
// (Kubernetes ≥ 1.30 puts it in the review's extra), else from its pod.
// Answers are cached for a minute per token, so a busy CA does not review
// the same token for every certificate.
//
// A waypoint's token is its pod's, of the service account Istio names after
// the Gateway: `system:serviceaccount:<ns>:<name>` speaks for waypoint
// <ns>/<name> when that is a declared waypoint Gateway, and for nothing else.

import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { KubeClient } from '../kube/client';
import type { TokenReview } from '../kube/types';
import type { Logger } from '../observability/log';
import type { AuthResult } from './xds-server';

export const TOKEN_AUDIENCE = 'istio-ca';
export const NODE_AGENT_ACCOUNT = 'system:serviceaccount:ambit-system:ambit-node';
export const REVIEW_CACHE_MS = 60_000;
const RETRY_MS = 5_000;

export interface TokenReviewOptions {
  /** Usernames allowed to act as node agents (default: the DaemonSet's service account). */
  accounts?: string[];
  /** The node a pod runs on, for tokens without a node claim. */
  nodeOfPod: (namespace: string, name: string) => string | undefined;
  /** Whether <namespace>/<name> is a declared waypoint Gateway (read per review: Gateways come and go). */
  isWaypoint?: (namespace: string, name: string) => boolean;
  /** How long an answer is reused (REVIEW_CACHE_MS): also how late a revoked token is noticed. */
  cacheMs?: number;
  log: Logger;
}

export class TokenReviewer {
  private readonly cache = new Map<string, { result: AuthResult; until: number }>();
  private readonly accounts: Set<string>;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: TokenReviewOptions,
  ) {
    this.accounts = new Set(opts.accounts ?? [NODE_AGENT_ACCOUNT]);
  }

  /** The token's node, or why not; undefined when there is no bearer token (another authenticator may apply). */
  async authenticate(md: grpc.Metadata): Promise<AuthResult> {
    const header = String(md.get('authorization')[0] ?? '');
    const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    if (!token) return { error: 'no bearer token: send the projected service-account token (audience istio-ca) as authorization: Bearer' };
    const key = createHash('sha256').update(token).digest('hex');
    const hit = this.cache.get(key);
    if (hit && hit.until > Date.now()) return hit.result;
    const result = await this.review(token);
    // A failed review is not an answer: asked again soon, but not by every caller during an outage.
    const transient = 'error' in result && result.transient;
    this.cache.set(key, {
      result,
      until: Date.now() + (transient ? Math.min(RETRY_MS, this.opts.cacheMs ?? RETRY_MS) : (this.opts.cacheMs ?? REVIEW_CACHE_MS)),
    });
    if (this.cache.size > 10_000) {
      const first = this.cache.keys().next();
      if (!first.done) this.cache.delete(first.value);
    }
    return result;
  }

  private async review(token: string): Promise<AuthResult> {
    let r: TokenReview;
    try {
      r = await this.client.create<TokenReview>('/apis/authentication.k8s.io/v1/tokenreviews', {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [TOKEN_AUDIENCE] },
      });
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, 'TokenReview failed');
      return { error: `the token could not be reviewed: ${(err as Error).message}`, transient: true };
    }
    const s = r.status ?? {};
    if (!s.authenticated)
      return { error: `the API server did not accept the token${s.error ? `: ${s.error}` : ''} (audience must be ${TOKEN_AUDIENCE})` };
    const user = s.user?.username ?? '';
    if (!this.accounts.has(user)) {
      const [, ns = '', account = ''] = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(user) ?? [];
      if (ns && account && this.opts.isWaypoint?.(ns, account)) return { waypoint: `${ns}/${account}` };
      return {
        error:
          `${user} is not a node agent's service account (expected ${[...this.accounts].join(' or ')}) ` +
          "nor a declared waypoint Gateway's (system:serviceaccount:<namespace>:<gateway name>)",
      };
    }
    const extra = s.user?.extra ?? {};
    const node = extra['authentication.kubernetes.io/node-name']?.[0];
    if (node) return { node };
    const pod = extra['authentication.kubernetes.io/pod-name']?.[0];
    // system:serviceaccount:<namespace>:<name>, one of this.accounts.
    const namespace = user.split(':')[2] ?? '';
    const viaPod = pod ? this.opts.nodeOfPod(namespace, pod) : undefined;
    return viaPod
      ? { node: viaPod }
      : {
          error:
            `the token of ${user} names no node${pod ? ` and its pod ${namespace}/${pod} is not known` : ''}: ` +
            "use a projected token (bound to the agent's pod)",
        };
  }
}
