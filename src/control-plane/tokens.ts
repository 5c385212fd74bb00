// Node agents and waypoints authenticate to the control plane with a bearer token; the
// configuration holds only each token's SHA-256, so a leaked config file
// does not leak credentials. Every configured hash is compared, in constant
// time, so neither timing nor order reveals how close a guess came.

import { createHash, timingSafeEqual } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { AmbitError } from '../errors';
import type { NodeToken } from '../state/types';
import { type Principal, principalName } from './xds-server';

const SHA256_HEX = /^[0-9a-f]{64}$/;

export class NodeTokens {
  private readonly entries: { who: Principal; digest: Buffer }[];

  constructor(tokens: NodeToken[]) {
    const seen = new Map<string, Principal>();
    this.entries = tokens.map((t, i) => {
      const who: Principal = t.waypoint !== undefined ? { waypoint: t.waypoint } : { node: t.node };
      const hex = t.sha256.toLowerCase();
      if (!SHA256_HEX.test(hex)) {
        throw new AmbitError(
          'AMBIT_E_CONFIG',
          `controlPlane.tokens[${i}].sha256 (${principalName(who)}) is not 64 hex digits`,
          'put the output of `printf %s "$TOKEN" | sha256sum` there, not the token',
        );
      }
      // Two parties sharing a token could each act as the other.
      const other = seen.get(hex);
      if (other !== undefined)
        throw new AmbitError(
          'AMBIT_E_CONFIG',
          `controlPlane.tokens[${i}]: ${'node' in other && 'node' in who ? `nodes ${other.node} and ${who.node}` : `${principalName(other)} and ${principalName(who)}`} have the same token`,
          'give every node and every waypoint its own token',
        );
      seen.set(hex, who);
      return { who, digest: Buffer.from(hex, 'hex') };
    });
  }

  /** The SHA-256 hex of a token, as the configuration stores it. */
  static hash(token: string): string {
    return createHash('sha256').update(token, 'utf8').digest('hex');
  }

  /** The node or waypoint whose token the call carries; the error never contains the token. */
  authenticate(md: grpc.Metadata): Principal | { error: string } {
    const [first, ...more] = md.get('authorization');
    if (first === undefined) return { error: 'no authorization header; node agents and waypoints send "authorization: Bearer <token>"' };
    if (more.length > 0) return { error: `${more.length + 1} authorization headers; send exactly one` };
    const value = typeof first === 'string' ? first : first.toString('utf8');
    const token = /^Bearer +(\S+)\s*$/i.exec(value)?.[1];
    // Not echoed: a header sent without its scheme would be the bare token.
    if (!token) return { error: 'authorization header is not "Bearer <token>"' };
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let found: Principal | undefined;
    for (const e of this.entries) {
      // No early exit: the time taken does not depend on which entry matched.
      if (timingSafeEqual(digest, e.digest) && found === undefined) found = e.who;
    }
    return found ?? { error: 'unknown bearer token (no configured node or waypoint has it)' };
  }
}
