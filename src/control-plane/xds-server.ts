// The server half of delta ADS: every node stream subscribes (wildcard) to
// each type it asks for; the first response of a type carries what the node
// lacks (its initial_resource_versions say what it already holds), later
// ones only what changed. What a node holds is tracked per stream from the
// responses it ACKed: a NACKed response is rolled back, so the resources
// in it are offered again with the next change.
import type * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../observability/log';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceMessage } from '../protocol/messages';
import type { XdsResource } from '../state/xds-resources';

type Resources = Map<string, Map<string, XdsResource>>;
type Call = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
/** Who a node agent is, from its call metadata (a bearer token); may ask the API server (TokenReview). */
export type Authenticate = (md: grpc.Metadata) => AuthResult | Promise<AuthResult>;
export type AuthResult = { node: string } | { error: string };

interface TypeState {
  /** name → version the node holds, as far as this server knows. */
  held: Map<string, string>;
  /** Responses not yet answered: nonce → what `held` was before it. */
  pending: Map<string, Map<string, string>>;
}

class NodeStream {
  readonly types = new Map<string, TypeState>();
  constructor(readonly call: Call, readonly node: string, readonly peer: string) {}
}

export class XdsServer {
  private resources: Resources = new Map();
  private readonly streams = new Set<NodeStream>();
  /** Counters for tests and logs. */
  readonly stats = { pushes: 0, resourcesSent: 0, acks: 0, nacks: 0 };

  constructor(private readonly authenticate: Authenticate, private readonly log: Logger) {}

  /** Replaces the resource set and pushes the difference to every subscribed node. */
  update(resources: Resources): void {
    this.resources = resources;
    for (const s of this.streams) for (const typeUrl of s.types.keys()) this.push(s, typeUrl);
  }

  handlers(): grpc.UntypedServiceImplementation {
    return { DeltaAggregatedResources: (call: Call) => this.serve(call) };
  }

  close(): void {
    for (const s of this.streams) s.call.end();
    this.streams.clear();
  }

  private serve(call: Call): void {
    // Requests that arrive while the token is checked wait in the stream's buffer.
    call.pause();
    void Promise.resolve(this.authenticate(call.metadata)).then((auth) => this.authenticated(call, auth), (err: Error) => this.authenticated(call, { error: `cannot check the token: ${err.message}` }));
  }

  private authenticated(call: Call, auth: AuthResult): void {
    if ('error' in auth) {
      this.log.warn({ peer: call.getPeer(), err: auth.error }, 'xDS stream refused');
      refuse(call, 16 /* UNAUTHENTICATED */, auth.error);
      return;
    }
    let stream: NodeStream | undefined;
    call.on('data', (req: DeltaDiscoveryRequest) => {
      if (!stream) {
        const claimed = nodeNameOf(req);
        if (claimed !== auth.node) {
          const why = `the token is node ${auth.node}'s but the stream says NODE_NAME ${JSON.stringify(claimed ?? '')}`;
          this.log.warn({ peer: call.getPeer(), err: why }, 'xDS stream refused');
          refuse(call, 7 /* PERMISSION_DENIED */, why);
          return;
        }
        stream = new NodeStream(call, auth.node, call.getPeer());
        this.streams.add(stream);
        this.log.info({ node: stream.node, peer: stream.peer, id: req.node?.id }, 'xDS stream opened');
      }
      this.onRequest(stream, req);
    });
    const gone = (why: string): void => {
      if (stream && this.streams.delete(stream)) this.log.info({ node: stream.node, why }, 'xDS stream closed');
    };
    call.on('end', () => { gone('client ended'); call.end(); });
    call.on('error', (err) => gone(err.message));
    call.on('cancelled', () => gone('cancelled'));
    call.resume();
  }

  private onRequest(s: NodeStream, req: DeltaDiscoveryRequest): void {
    const typeUrl = req.type_url;
    let t = s.types.get(typeUrl);
    if (req.response_nonce && t) {
      const before = t.pending.get(req.response_nonce);
      t.pending.delete(req.response_nonce);
      if (req.error_detail) {
        this.stats.nacks++;
        if (before) t.held = before;
        this.log.warn({ node: s.node, typeUrl, nonce: req.response_nonce, err: req.error_detail.message }, 'xDS response rejected by the node (NACK)');
      } else {
        this.stats.acks++;
        this.log.debug({ node: s.node, typeUrl, nonce: req.response_nonce }, 'xDS ACK');
      }
      return;
    }
    if (!t) {
      // A new subscription (the first request of a type, or after a reconnect): wildcard.
      t = { held: new Map(Object.entries(req.initial_resource_versions ?? {})), pending: new Map() };
      s.types.set(typeUrl, t);
      this.push(s, typeUrl, true);
    }
  }

  /** Sends what the node lacks of typeUrl; always on a new subscription, so the node knows it is in sync. */
  private push(s: NodeStream, typeUrl: string, always = false): void {
    const t = s.types.get(typeUrl)!;
    const want = this.resources.get(typeUrl) ?? new Map<string, XdsResource>();
    const changed: ResourceMessage[] = [];
    for (const r of want.values()) if (t.held.get(r.name) !== r.version) changed.push({ name: r.name, version: r.version, resource: r.resource });
    const removed = [...t.held.keys()].filter((n) => !want.has(n));
    if (!changed.length && !removed.length && !always) return;
    const nonce = randomBytes(8).toString('hex');
    t.pending.set(nonce, new Map(t.held));
    for (const r of changed) t.held.set(r.name, r.version);
    for (const n of removed) t.held.delete(n);
    this.stats.pushes++;
    this.stats.resourcesSent += changed.length;
    s.call.write({ system_version_info: '', type_url: typeUrl, nonce, resources: changed, removed_resources: removed });
    this.log.debug({ node: s.node, typeUrl, nonce, changed: changed.length, removed: removed.length }, 'xDS push');
  }
}

/** Ends the stream with a status the client sees at once (destroy() would drop it, leaving the client to time out). */
function refuse(call: Call, code: number, details: string): void {
  call.emit('error', Object.assign(new Error(details), { code, details }));
}

function nodeNameOf(req: DeltaDiscoveryRequest): string | undefined {
  const v = req.node?.metadata?.fields?.NODE_NAME as { stringValue?: string } | undefined;
  return v?.stringValue;
}
