// The server half of delta ADS: every node stream subscribes (wildcard) to
// each type it asks for; the first response of a type carries what the node
// lacks (its initial_resource_versions say what it already holds), later
// ones only what changed.
//
// Memory per stream is bounded whatever the node does: what it holds (one
// version per resource name, needed to send only differences), and at most
// one response per type awaiting its ACK, remembered as the previous
// versions of just the names in it. Changes while a response is out are
// not queued: at the ACK the difference is computed afresh, so any number
// of changes coalesce into the next response, and a node that never ACKs
// gets nothing more and costs nothing more. A response never exceeds
// maxResponseBytes: a large difference goes out in parts, each marked
// MORE_FOLLOWS but the last. A NACKed part is rolled back and its
// resources are not offered again until the next change of configuration.
//
// A stream speaks for a node agent or for a waypoint, as its token says, and
// sees what that one may: a node every type but waypoint configurations; a
// waypoint the Address resources (the services and endpoints it routes to)
// and its own WaypointConfig, nothing else. The first request must name the
// same party (a node's NODE_NAME, a waypoint's WAYPOINT metadata) and no
// other, so neither can pass for the other.

import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../observability/log';
import { RateLimitedLog } from '../observability/rate-limited';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse } from '../protocol/messages';
import { MORE_FOLLOWS, TYPE_ADDRESS, TYPE_WAYPOINT } from '../protocol/protos';
import type { XdsResource } from '../sources/xds-resources';
import { DEFAULT_MAX_RESPONSE_BYTES, nextChunk, REMOVAL } from './xds-chunks';

type Resources = Map<string, Map<string, XdsResource>>;
type Call = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
/** Who a node agent or waypoint is, from its call metadata (a bearer token); may ask the API server (TokenReview). */
export type Authenticate = (md: grpc.Metadata) => AuthResult | Promise<AuthResult>;
/** A node agent (by node name) or a waypoint (by "<namespace>/<name>"). */
export type Principal = { node: string } | { waypoint: string };
/** transient: the check itself failed (API server away); not a verdict on the token. */
export type AuthResult = Principal | { error: string; transient?: boolean };

/** "node a" or "waypoint ns/name", for messages and for comparing two principals. */
export const principalName = (p: Principal): string => ('node' in p ? `node ${p.node}` : `waypoint ${p.waypoint}`);

/** How logs name a principal: { node } or { waypoint }, so a node's lines read as they always have. */
const logged = (p: Principal): { node: string } | { waypoint: string } => ('node' in p ? { node: p.node } : { waypoint: p.waypoint });

/** Metadata key naming the waypoint ("<namespace>/<name>") on a waypoint's first request, as NODE_NAME names a node. */
export const WAYPOINT_METADATA = 'WAYPOINT';

const UNAUTHENTICATED = 16;
const PERMISSION_DENIED = 7;
const RESOURCE_EXHAUSTED = 8;
const INVALID_ARGUMENT = 3;

export interface XdsServerOptions {
  /** No response is larger than this (bytes); a bigger difference is sent in parts. */
  maxResponseBytes?: number;
  /** Open streams per node; a newer stream closes the node's oldest (a reconnect whose old stream lingers). */
  maxStreamsPerNode?: number;
  /** Types one stream may subscribe to (ambit serves two; any other gets an empty answer). */
  maxTypesPerStream?: number;
}

export const DEFAULT_MAX_STREAMS_PER_NODE = 4;
export const DEFAULT_MAX_TYPES_PER_STREAM = 8;

interface InFlight {
  nonce: string;
  /** Versions before this response of the names in it (undefined: the node did not hold it). */
  undo: Map<string, string | undefined>;
}

interface TypeState {
  /** name → version the node holds, as far as this server knows (including what is in flight). */
  held: Map<string, string>;
  /** The one response awaiting the node's ACK or NACK. */
  inFlight?: InFlight;
  /** Versions (or REMOVAL) the node refused: not offered again until the next update(). */
  refused: Map<string, string>;
}

class NodeStream {
  readonly types = new Map<string, TypeState>();
  closed = false;
  /** The node's name, or the waypoint's "<namespace>/<name>". */
  readonly node: string;
  readonly kind: 'node' | 'waypoint';
  readonly logged: { node: string } | { waypoint: string };
  constructor(
    readonly call: Call,
    readonly who: Principal,
    readonly peer: string,
  ) {
    [this.kind, this.node] = 'node' in who ? ['node', who.node] : ['waypoint', who.waypoint];
    this.logged = logged(who);
  }
}

/** What the server keeps for one stream: for tests, the config dump and sizing. */
export interface StreamState {
  /** The node's name, or the waypoint's "<namespace>/<name>". */
  node: string;
  kind: 'node' | 'waypoint';
  peer: string;
  types: { typeUrl: string; held: number; inFlight: number; undo: number; refused: number }[];
}

export class XdsServer {
  private resources: Resources = new Map();
  private readonly streams = new Set<NodeStream>();
  private readonly opts: Required<XdsServerOptions>;
  private readonly noisy: RateLimitedLog;
  /**
   * Counters for tests and logs. parts: responses that were one part of a
   * larger update; revoked: streams closed because their token no longer
   * passed; unverified: re-checks that could not be made (kept open).
   */
  readonly stats = {
    pushes: 0,
    resourcesSent: 0,
    acks: 0,
    nacks: 0,
    parts: 0,
    bytesSent: 0,
    maxResponseBytes: 0,
    revoked: 0,
    unverified: 0,
  };

  constructor(
    private readonly authenticate: Authenticate,
    private readonly log: Logger,
    opts: XdsServerOptions = {},
  ) {
    this.opts = {
      maxResponseBytes: opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      maxStreamsPerNode: opts.maxStreamsPerNode ?? DEFAULT_MAX_STREAMS_PER_NODE,
      maxTypesPerStream: opts.maxTypesPerStream ?? DEFAULT_MAX_TYPES_PER_STREAM,
    };
    this.noisy = new RateLimitedLog(log);
  }

  /** Replaces the resource set and pushes the difference to every subscribed node not awaiting an ACK. */
  update(resources: Resources): void {
    this.resources = resources;
    for (const s of this.streams) {
      try {
        for (const [typeUrl, t] of s.types) {
          t.refused.clear(); // a new configuration: what was refused may be offered again
          this.push(s, typeUrl, t);
        }
      } catch (err) {
        // One stream's failure (a write after the peer vanished) must not keep the others from the update.
        this.log.error({ ...s.logged, err: (err as Error).stack ?? String(err) }, 'xDS push failed; closing the stream');
        this.end(s, 13, 'internal error');
      }
    }
  }

  handlers(): grpc.UntypedServiceImplementation {
    return { DeltaAggregatedResources: (call: Call) => this.serve(call) };
  }

  close(): void {
    for (const s of this.streams) {
      s.closed = true;
      s.call.end();
    }
    this.streams.clear();
  }

  streamStates(): StreamState[] {
    return [...this.streams].map((s) => ({
      node: s.node,
      kind: s.kind,
      peer: s.peer,
      types: [...s.types].map(([typeUrl, t]) => ({
        typeUrl,
        held: t.held.size,
        inFlight: t.inFlight ? 1 : 0,
        undo: t.inFlight?.undo.size ?? 0,
        refused: t.refused.size,
      })),
    }));
  }

  /**
   * Checks every open stream's credentials again (the token list changed, or
   * a TokenReview may no longer pass): a stream whose token no longer names
   * its node is closed with UNAUTHENTICATED. A check that could not be made
   * (the API server away) closes nothing. Resolves to the number closed.
   */
  async recheck(): Promise<number> {
    let closed = 0;
    await Promise.all(
      [...this.streams].map(async (s) => {
        let auth: AuthResult;
        try {
          auth = await this.authenticate(s.call.metadata);
        } catch (err) {
          auth = { error: `cannot check the token: ${(err as Error).message}`, transient: true };
        }
        if ('error' in auth && auth.transient) this.stats.unverified++;
        if (s.closed || ('error' in auth && auth.transient)) return;
        const why =
          'error' in auth
            ? auth.error
            : principalName(auth) !== principalName(s.who)
              ? `the token is now ${principalName(auth)}'s, not ${principalName(s.who)}'s`
              : undefined;
        if (why === undefined) return;
        closed++;
        this.stats.revoked++;
        this.log.warn({ ...s.logged, peer: s.peer, err: why }, 'xDS stream closed: its token is no longer accepted');
        this.end(s, UNAUTHENTICATED, `credentials no longer accepted: ${why}`);
      }),
    );
    return closed;
  }

  private serve(call: Call): void {
    // Requests that arrive while the token is checked wait in the stream's buffer.
    call.pause();
    // Errors before authentication (the peer resets) must not reach the process.
    call.on('error', () => undefined);
    void Promise.resolve()
      .then(() => this.authenticate(call.metadata))
      .then(
        (auth) => this.authenticated(call, auth),
        (err: Error) => this.authenticated(call, { error: `cannot check the token: ${err.message}` }),
      )
      .catch((err: Error) => {
        this.log.error({ peer: call.getPeer(), err: err.stack ?? err.message }, 'xDS stream failed');
        refuse(call, 13, 'internal error');
      });
  }

  private authenticated(call: Call, auth: AuthResult): void {
    if (call.cancelled) return;
    if ('error' in auth) {
      this.noisy.warn('xds-refused', { peer: call.getPeer(), err: auth.error }, 'xDS stream refused');
      refuse(call, UNAUTHENTICATED, auth.error);
      return;
    }
    let stream: NodeStream | undefined;
    call.on('data', (req: DeltaDiscoveryRequest) => {
      try {
        if (!stream) {
          stream = this.open(call, auth, req);
          if (!stream) return;
        }
        if (!stream.closed) this.onRequest(stream, req);
      } catch (err) {
        // A bug serving one node must not take the others' control plane down.
        this.log.error({ ...logged(auth), err: (err as Error).stack ?? String(err) }, 'xDS request failed; closing the stream');
        if (stream) this.end(stream, 13, 'internal error');
        else refuse(call, 13, 'internal error');
      }
    });
    const gone = (why: string): void => {
      if (stream && this.streams.delete(stream)) {
        stream.closed = true;
        this.log.info({ ...stream.logged, why }, 'xDS stream closed');
      }
    };
    call.on('end', () => {
      gone('client ended');
      call.end();
    });
    call.on('error', (err) => gone(err.message));
    call.on('cancelled', () => gone('cancelled'));
    call.on('close', () => gone('closed'));
    call.resume();
  }

  /** The first request names the node (NODE_NAME) or the waypoint (WAYPOINT): it must be the token's, and only that. */
  private open(call: Call, who: Principal, req: DeltaDiscoveryRequest): NodeStream | undefined {
    const claim = { node: metadataString(req, 'NODE_NAME'), waypoint: metadataString(req, WAYPOINT_METADATA) };
    const [mine, other] = 'node' in who ? ([claim.node, claim.waypoint] as const) : ([claim.waypoint, claim.node] as const);
    const [key, otherKey] = 'node' in who ? ['NODE_NAME', WAYPOINT_METADATA] : [WAYPOINT_METADATA, 'NODE_NAME'];
    const expected = 'node' in who ? who.node : who.waypoint;
    const why =
      mine !== expected
        ? `the token is ${principalName(who)}'s but the stream says ${key} ${JSON.stringify(mine ?? '')}`
        : other !== undefined
          ? `the token is ${principalName(who)}'s but the stream also says ${otherKey} ${JSON.stringify(other)}`
          : undefined;
    if (why !== undefined) {
      this.noisy.warn('xds-wrong-node', { peer: call.getPeer(), err: why }, 'xDS stream refused');
      refuse(call, PERMISSION_DENIED, why);
      return undefined;
    }
    const name = principalName(who);
    const same = [...this.streams].filter((s) => principalName(s.who) === name);
    for (const old of same.slice(0, Math.max(0, same.length - this.opts.maxStreamsPerNode + 1))) {
      this.log.warn(
        { ...logged(who), peer: old.peer, max: this.opts.maxStreamsPerNode },
        'xDS stream superseded by a newer one of the same node',
      );
      this.end(old, RESOURCE_EXHAUSTED, `${name} opened more than ${this.opts.maxStreamsPerNode} streams; this, the oldest, is closed`);
    }
    const stream = new NodeStream(call, who, call.getPeer());
    this.streams.add(stream);
    this.log.info({ ...logged(who), peer: stream.peer, id: req.node?.id }, 'xDS stream opened');
    return stream;
  }

  /** What of typeUrl the stream may see: a waypoint its own configuration and the addresses; a node all but waypoints'. */
  private visible(s: NodeStream, typeUrl: string): Map<string, XdsResource> {
    const all = this.resources.get(typeUrl) ?? new Map<string, XdsResource>();
    if (s.kind === 'node') return typeUrl === TYPE_WAYPOINT ? new Map() : all;
    if (typeUrl === TYPE_ADDRESS) return all;
    const own = typeUrl === TYPE_WAYPOINT ? all.get(s.node) : undefined;
    return own ? new Map([[s.node, own]]) : new Map();
  }

  private end(s: NodeStream, code: number, details: string): void {
    s.closed = true;
    this.streams.delete(s);
    refuse(s.call, code, details);
  }

  private onRequest(s: NodeStream, req: DeltaDiscoveryRequest): void {
    const typeUrl = req.type_url;
    const t = s.types.get(typeUrl);
    if (req.response_nonce) {
      // An answer to anything but the response in flight (an earlier stream's, a guess) changes nothing.
      if (!t?.inFlight || t.inFlight.nonce !== req.response_nonce) return;
      const { undo } = t.inFlight;
      t.inFlight = undefined;
      if (req.error_detail) {
        this.stats.nacks++;
        for (const [name, before] of undo) {
          t.refused.set(name, t.held.get(name) ?? REMOVAL);
          if (before === undefined) t.held.delete(name);
          else t.held.set(name, before);
        }
        this.log.warn(
          { ...s.logged, typeUrl, nonce: req.response_nonce, err: req.error_detail.message },
          'xDS response rejected by the node (NACK)',
        );
      } else {
        this.stats.acks++;
        this.log.debug({ ...s.logged, typeUrl, nonce: req.response_nonce }, 'xDS ACK');
      }
      // What changed meanwhile, or the next part, goes now.
      this.push(s, typeUrl, t);
      return;
    }
    if (t) return; // a repeated subscription: the stream is wildcard already
    if (s.types.size >= this.opts.maxTypesPerStream) {
      this.end(
        s,
        INVALID_ARGUMENT,
        `a stream may subscribe to at most ${this.opts.maxTypesPerStream} types; ${JSON.stringify(typeUrl)} is one too many`,
      );
      return;
    }
    // A new subscription (the first request of a type, or after a reconnect): wildcard.
    const fresh: TypeState = { held: new Map(Object.entries(req.initial_resource_versions ?? {})), refused: new Map() };
    s.types.set(typeUrl, fresh);
    this.push(s, typeUrl, fresh, true);
  }

  /** Sends the next part of what the node lacks of typeUrl, unless a response is in flight; always on a new subscription, so the node knows it is in sync. */
  private push(s: NodeStream, typeUrl: string, t: TypeState, always = false): void {
    if (t.inFlight || s.closed) return;
    const want = this.visible(s, typeUrl);
    const chunk = nextChunk(want, t.held, t.refused, this.opts.maxResponseBytes);
    if (!chunk.changed.length && !chunk.removed.length && !always) return;
    const nonce = randomBytes(8).toString('hex');
    const undo = new Map<string, string | undefined>();
    for (const r of chunk.changed) {
      undo.set(r.name, t.held.get(r.name));
      t.held.set(r.name, r.version);
    }
    for (const n of chunk.removed) {
      undo.set(n, t.held.get(n));
      t.held.delete(n);
    }
    t.inFlight = { nonce, undo };
    if (chunk.oversized.length)
      this.noisy.warn(
        'xds-oversized',
        { ...s.logged, typeUrl, names: chunk.oversized.slice(0, 5), maxResponseBytes: this.opts.maxResponseBytes },
        'xDS resource larger than the response budget: sent alone',
      );
    this.stats.pushes++;
    if (chunk.more) this.stats.parts++;
    this.stats.resourcesSent += chunk.changed.length;
    this.stats.bytesSent += chunk.bytes;
    this.stats.maxResponseBytes = Math.max(this.stats.maxResponseBytes, chunk.bytes);
    s.call.write({
      system_version_info: chunk.more ? MORE_FOLLOWS : '',
      type_url: typeUrl,
      nonce,
      resources: chunk.changed,
      removed_resources: chunk.removed,
    });
    this.log.debug(
      { ...s.logged, typeUrl, nonce, changed: chunk.changed.length, removed: chunk.removed.length, bytes: chunk.bytes, more: chunk.more },
      'xDS push',
    );
  }
}

/** Ends the stream with a status the client sees at once (destroy() would drop it, leaving the client to time out). */
function refuse(call: Call, code: number, details: string): void {
  call.emit('error', Object.assign(new Error(details), { code, details }));
}

function metadataString(req: DeltaDiscoveryRequest, key: string): string | undefined {
  const v = req.node?.metadata?.fields?.[key] as { stringValue?: string } | undefined;
  return v?.stringValue;
}
