// The node's control-plane source: one delta ADS stream (gRPC over TLS,
// bearer token re-read per connection) with wildcard subscriptions to
// workloads/services and authorization policies. Each response is checked
// resource by resource before anything is applied: one bad resource NACKs
// the whole response (with the resource and field in error_detail) and the
// last good state keeps serving. A broken stream is re-opened with backoff,
// announcing what the node holds (initial_resource_versions) so the server
// sends only the difference. While the control plane is away the node keeps
// serving with what it has.
//
// A large update may come in parts (system_version_info MORE_FOLLOWS on all
// but the last, see protos.ts): each part is checked, applied to what the
// node holds and ACKed on its own, as delta xDS asks; the data plane sees
// the change, and the type counts as synced, only at the part that
// completes it. Responses from istiod are always complete.
//
// A waypoint uses the same client with other types: the addresses and its
// own WaypointConfig (xds-waypoint.ts), introducing itself with
// waypointNodeMessage instead of a node's.

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { AmbitError } from '../errors';
import type { Logger } from '../observability/log';
import type { Authorization } from '../policy/types';
import type {
  AddressMessage,
  AuthorizationMessage,
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  NodeMessage,
  WaypointConfigMessage,
} from '../protocol/messages';
import { grpcServices, MORE_FOLLOWS, TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_WAYPOINT, unpack } from '../protocol/protos';
import type { Service, Workload } from '../state/types';
import { type AddressEntry, addressFromMessage, authorizationFromMessage, ResourceError } from './xds-resources';
import { type WaypointL7, waypointFromMessage } from './xds-waypoint';

/** What a node agent subscribes to. */
export const SUBSCRIBED_TYPES = [TYPE_ADDRESS, TYPE_AUTHORIZATION];
/** What a waypoint subscribes to: the services and endpoints it routes to, and its own L7 configuration. */
export const WAYPOINT_TYPES = [TYPE_ADDRESS, TYPE_WAYPOINT];
const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;
/**
 * Largest response the node accepts. istiod sends a whole type in one
 * response, about 200 bytes per workload: 64 MiB is a mesh of some 300,000
 * workloads, far past gRPC's 4 MiB default (which a mesh of 25,000 already
 * exceeds), and still a bound on what one message can make the node buffer.
 */
export const DEFAULT_XDS_MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

export interface XdsClientOptions {
  /** host:port of the control plane (istiod or `ambit control-plane`), e.g. 10.0.0.2:15012. */
  address: string;
  /** PEM roots that the control plane's TLS certificate must chain to. */
  rootsPem: string;
  /** The name its certificate carries, when dialing by IP. */
  serverName?: string;
  /** File holding the bearer token (a projected service-account token in Kubernetes). */
  tokenFile?: string;
  node: NodeMessage;
  /** Types subscribed to; SUBSCRIBED_TYPES (a node's) when not set, WAYPOINT_TYPES for a waypoint. */
  types?: readonly string[];
  /** Trust domain of workloads that do not say theirs. */
  trustDomain: string;
  /** Largest response accepted (bytes); DEFAULT_XDS_MAX_RECEIVE_BYTES when not set. */
  maxReceiveBytes?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  log: Logger;
}

/** Everything the node holds from the control plane, decoded. */
export interface XdsState {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
}

type AdsStream = grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
type AdsClient = grpc.Client & { DeltaAggregatedResources(md: grpc.Metadata): AdsStream };

interface Held<T> {
  version: string;
  value: T;
}

export class XdsClient extends EventEmitter {
  private readonly addresses = new Map<string, Held<AddressEntry>>();
  private readonly policies = new Map<string, Held<Authorization>>();
  private readonly waypoints = new Map<string, Held<WaypointL7>>();
  private readonly types: readonly string[];
  private readonly synced = new Set<string>();
  /** Types whose update is arriving in parts: the data plane waits for the last. */
  private readonly partial = new Set<string>();
  /** Something was applied that the data plane has not been told about. */
  private unannounced = false;
  private readonly client: AdsClient;
  private call?: AdsStream;
  private failures = 0;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly log: Logger;
  /** Responses accepted / rejected, connections made: for metrics and tests. */
  readonly stats = { acks: 0, nacks: 0, connects: 0 };
  connected = false;
  readonly maxReceiveBytes: number;

  constructor(private readonly opts: XdsClientOptions) {
    super();
    this.log = opts.log.child({ component: 'xds', controlPlane: opts.address });
    this.types = opts.types ?? SUBSCRIBED_TYPES;
    const creds = grpc.credentials.createSsl(Buffer.from(opts.rootsPem));
    this.maxReceiveBytes = opts.maxReceiveBytes ?? DEFAULT_XDS_MAX_RECEIVE_BYTES;
    const channelOpts: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.max_receive_message_length': this.maxReceiveBytes,
      // What the node announces on reconnect (a version per resource held) grows with the mesh too.
      'grpc.max_send_message_length': -1,
    };
    if (opts.serverName) channelOpts['grpc.ssl_target_name_override'] = opts.serverName;
    const Ads = grpcServices().ads;
    this.client = new Ads(opts.address, creds, channelOpts) as unknown as AdsClient;
  }

  /** True once a complete update of every subscribed type was applied (and no update was half-way in parts). */
  get isSynced(): boolean {
    return this.firstSync;
  }
  private firstSync = false;

  start(): void {
    this.connect();
  }

  /** Resolves at the first full sync; rejects after timeoutMs. */
  whenSynced(timeoutMs: number): Promise<void> {
    if (this.isSynced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('synced', done);
        reject(
          new AmbitError(
            'AMBIT_E_XDS',
            `no full xDS sync from ${this.opts.address} within ${timeoutMs / 1000} s`,
            'check --xds, the token and that the control plane is reachable on its port (15012)',
          ),
        );
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      this.once('synced', done);
    });
  }

  state(): XdsState {
    const entries = [...this.addresses.values()].map((h) => h.value);
    return {
      workloads: entries.flatMap((e) => ('workload' in e ? [e.workload] : [])),
      services: entries.flatMap((e) => ('service' in e ? [e.service] : [])),
      policies: [...this.policies.values()].map((h) => h.value),
    };
  }

  /** The WaypointConfig resources held (a waypoint holds its own only), by "<namespace>/<name>". */
  waypointConfigs(): Map<string, WaypointL7> {
    return new Map([...this.waypoints].map(([name, h]) => [name, h.value]));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.call?.cancel();
    this.client.close();
  }

  private connect(): void {
    if (this.stopped) return;
    const md = new grpc.Metadata();
    if (this.opts.tokenFile) {
      try {
        md.set('authorization', `Bearer ${fs.readFileSync(this.opts.tokenFile, 'utf8').trim()}`);
      } catch (err) {
        this.log.error({ tokenFile: this.opts.tokenFile, err: (err as Error).message }, 'cannot read the xDS token; retrying');
        this.retry();
        return;
      }
    }
    const call = this.client.DeltaAggregatedResources(md);
    this.call = call;
    this.stats.connects++;
    let first = true;
    for (const typeUrl of this.types) {
      call.write({
        node: first ? this.opts.node : undefined,
        type_url: typeUrl,
        resource_names_subscribe: [],
        resource_names_unsubscribe: [],
        initial_resource_versions: this.versions(typeUrl),
        response_nonce: '',
      });
      first = false;
    }
    call.on('data', (res: DeltaDiscoveryResponse) => {
      if (!this.connected) {
        this.connected = true;
        this.failures = 0;
        this.log.info('xDS stream up');
        this.emit('connected');
      }
      this.onResponse(call, res);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code === RESOURCE_EXHAUSTED) {
        this.log.error(
          { err: err.details, maxReceiveBytes: this.maxReceiveBytes, code: 'AMBIT_E_XDS' },
          'xDS response larger than the node accepts; raise --xds-max-message-bytes',
        );
      }
      this.lost(call, `${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`);
    });
    call.on('end', () => this.lost(call, 'the control plane ended the stream'));
  }

  private lost(call: unknown, why: string): void {
    if (call !== this.call) return;
    this.call = undefined;
    // Parts of an update cut short are sent again (as a difference) on the next stream.
    this.partial.clear();
    const was = this.connected;
    this.connected = false;
    if (this.stopped) return;
    this.log.warn(
      { err: why, keeping: { addresses: this.addresses.size, policies: this.policies.size, waypoints: this.waypoints.size } },
      'xDS stream lost; serving the state held',
    );
    if (was) this.emit('disconnected', why);
    this.retry();
  }

  private retry(): void {
    if (this.stopped) return;
    this.failures++;
    const base = this.opts.backoffInitialMs ?? 500;
    const delay = Math.min(this.opts.backoffMaxMs ?? 15_000, base * 2 ** (this.failures - 1)) * (0.8 + 0.4 * Math.random());
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private versions(typeUrl: string): Record<string, string> {
    const held: Map<string, { version: string }> =
      typeUrl === TYPE_ADDRESS ? this.addresses : typeUrl === TYPE_WAYPOINT ? this.waypoints : this.policies;
    return Object.fromEntries([...held].map(([name, h]) => [name, h.version]));
  }

  private onResponse(call: AdsStream, res: DeltaDiscoveryResponse): void {
    const ack = (error?: string): void => {
      call.write({
        type_url: res.type_url,
        response_nonce: res.nonce,
        resource_names_subscribe: [],
        resource_names_unsubscribe: [],
        initial_resource_versions: {},
        error_detail: error ? { code: INVALID_ARGUMENT, message: error } : undefined,
      });
    };
    const more = res.system_version_info === MORE_FOLLOWS;
    let apply: (() => void) | undefined;
    let refused: string | undefined;
    try {
      apply = this.check(res);
    } catch (err) {
      refused = err instanceof ResourceError ? err.message : `${res.type_url}: ${(err as Error).message}`;
    }
    if (more && this.types.includes(res.type_url)) this.partial.add(res.type_url);
    else this.partial.delete(res.type_url);
    if (apply) {
      apply();
      this.stats.acks++;
      this.unannounced = true;
      if (!more) this.synced.add(res.type_url);
      this.log.debug(
        { typeUrl: res.type_url, changed: res.resources.length, removed: res.removed_resources.length, more },
        'xDS response applied',
      );
    } else {
      this.stats.nacks++;
      this.log.error(
        { typeUrl: res.type_url, nonce: res.nonce, err: refused, code: 'AMBIT_E_XDS' },
        'xDS response rejected (NACK); the last good state keeps serving',
      );
      this.emit('rejected', refused);
    }
    ack(refused);
    if (this.partial.size > 0) return;
    const first = !this.firstSync && this.types.every((t) => this.synced.has(t));
    if (first) this.firstSync = true;
    // Earlier parts of an update that ends in a NACK were applied (and ACKed): they are announced too.
    if (this.unannounced && this.firstSync) {
      this.unannounced = false;
      this.emit('changed', this.state());
    }
    if (first) this.emit('synced');
  }

  /** Decodes every resource of a response; returns how to apply it, or throws naming the bad resource. */
  private check(res: DeltaDiscoveryResponse): () => void {
    const td = this.opts.trustDomain;
    if (!this.types.includes(res.type_url)) throw new ResourceError(`type ${JSON.stringify(res.type_url)} was not subscribed to`);
    if (res.type_url === TYPE_ADDRESS) {
      const decoded = res.resources.map((r) => {
        const m = decode<AddressMessage>(r.name, r.resource, TYPE_ADDRESS);
        return [r.name, { version: r.version, value: addressFromMessage(r.name, m, td) }] as const;
      });
      return () => applyDelta(this.addresses, decoded, res.removed_resources);
    }
    if (res.type_url === TYPE_AUTHORIZATION) {
      const decoded = res.resources.map((r) => {
        const m = decode<AuthorizationMessage>(r.name, r.resource, TYPE_AUTHORIZATION);
        return [r.name, { version: r.version, value: authorizationFromMessage(r.name, m) }] as const;
      });
      return () => applyDelta(this.policies, decoded, res.removed_resources);
    }
    if (res.type_url === TYPE_WAYPOINT) {
      const decoded = res.resources.map((r) => {
        const m = decode<WaypointConfigMessage>(r.name, r.resource, TYPE_WAYPOINT);
        return [r.name, { version: r.version, value: waypointFromMessage(r.name, m) }] as const;
      });
      return () => applyDelta(this.waypoints, decoded, res.removed_resources);
    }
    throw new ResourceError(`type ${JSON.stringify(res.type_url)} was not subscribed to`);
  }
}

function applyDelta<T>(into: Map<string, Held<T>>, changed: readonly (readonly [string, Held<T>])[], removed: string[]): void {
  for (const [name, h] of changed) into.set(name, h);
  for (const name of removed) into.delete(name);
}

function decode<T>(name: string, any: DeltaDiscoveryResponse['resources'][number]['resource'], typeUrl: string): T {
  if (!any) throw new ResourceError(`${name}: resource is empty`);
  if (any.type_url !== typeUrl)
    throw new ResourceError(`${name}: resource has type ${JSON.stringify(any.type_url)} in a ${typeUrl} response`);
  try {
    return unpack<T>(any);
  } catch (err) {
    throw new ResourceError(`${name}: cannot be decoded as ${typeUrl}: ${(err as Error).message}`);
  }
}

/**
 * How a waypoint introduces itself: Istio's proxy id for a router, and
 * WAYPOINT metadata ("<namespace>/<name>") where a node has NODE_NAME; the
 * control plane checks it against the waypoint's token.
 */
export function waypointNodeMessage(f: { namespace: string; name: string; podName: string; ip: string }): NodeMessage {
  const str = (v: string): { stringValue: string } => ({ stringValue: v });
  return {
    id: `router~${f.ip}~${f.podName}.${f.namespace}~${f.namespace}.svc.cluster.local`,
    metadata: {
      fields: { NAME: str(f.podName), NAMESPACE: str(f.namespace), INSTANCE_IPS: str(f.ip), WAYPOINT: str(`${f.namespace}/${f.name}`) },
    },
  };
}

/** How a node tunnel introduces itself on the stream (the form istiod expects of ztunnel). */
export function nodeMessage(f: { nodeName: string; podName: string; podNamespace: string; ip: string }): NodeMessage {
  const str = (v: string): { stringValue: string } => ({ stringValue: v });
  return {
    id: `ztunnel~${f.ip}~${f.podName}.${f.podNamespace}~${f.podNamespace}.svc.cluster.local`,
    metadata: { fields: { NAME: str(f.podName), NAMESPACE: str(f.podNamespace), INSTANCE_IPS: str(f.ip), NODE_NAME: str(f.nodeName) } },
  };
}
