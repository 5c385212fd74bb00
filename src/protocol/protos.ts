// The one place that loads ambit's .proto files (proto/ at the repository
// root): gRPC service definitions through @grpc/proto-loader, and the
// payloads carried inside google.protobuf.Any (xDS resources) through
// protobufjs, which proto-loader itself builds on. Field names keep the
// .proto spelling (snake_case) so code and wire definitions read alike.

import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { AmbitError } from '../errors';
import type { Any } from './messages';

/** The repository's proto/ directory: from dist/src/protocol when built, from src/protocol otherwise. */
function protoDir(): string {
  const candidates = [path.resolve(__dirname, '../../../proto'), path.resolve(__dirname, '../../proto')];
  const found = candidates.find((d) => fs.existsSync(d));
  if (found === undefined)
    throw new AmbitError(
      'AMBIT_E_INTERNAL',
      `the .proto files are missing (looked in ${candidates.join(' and ')})`,
      'reinstall ambit: proto/ ships with it',
    );
  return found;
}
export const PROTO_DIR = protoDir();

export const PROTO_FILES = [
  'istio/workload/workload.proto',
  'istio/security/authorization.proto',
  'istio/ca/ca.proto',
  'envoy/service/discovery/v3/discovery.proto',
  'ambit/waypoint/v1/waypoint.proto',
];

export const TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const TYPE_AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization';
/** One waypoint's routes and L7 policies, named "<namespace>/<name>"; served only to that waypoint's stream. */
export const TYPE_WAYPOINT = 'type.googleapis.com/ambit.waypoint.v1.WaypointConfig';

/**
 * system_version_info of a delta response that is one part of a larger
 * update: the server sends the next part of the same type after this one's
 * ACK. A response without it completes the update, so a server that never
 * splits (istiod) needs no change: its every response is complete. A node
 * counts a type as synced, and applies a change to its data plane, only at
 * a complete response (docs/wire.md, "parts of one update").
 */
export const MORE_FOLLOWS = 'ambit.dev/more-follows';

const CONVERSION = { longs: Number, enums: String, bytes: Buffer, defaults: true, oneofs: true, arrays: true } as const;

let services: { ads: grpc.ServiceClientConstructor; ca: grpc.ServiceClientConstructor } | undefined;

/** The gRPC services: AggregatedDiscoveryService (delta) and IstioCertificateService. */
export function grpcServices(): { ads: grpc.ServiceClientConstructor; ca: grpc.ServiceClientConstructor } {
  if (services) return services;
  const def = protoLoader.loadSync(PROTO_FILES, { keepCase: true, ...CONVERSION, includeDirs: [PROTO_DIR] });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    envoy: { service: { discovery: { v3: { AggregatedDiscoveryService: grpc.ServiceClientConstructor } } } };
    istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } };
  };
  services = { ads: pkg.envoy.service.discovery.v3.AggregatedDiscoveryService, ca: pkg.istio.v1.auth.IstioCertificateService };
  return services;
}

let root: protobuf.Root | undefined;

function types(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  // Our imports resolve under proto/; google/protobuf/* are protobufjs's bundled well-known types.
  r.resolvePath = (_origin, target) => {
    const local = path.join(PROTO_DIR, target);
    return fs.existsSync(local) ? local : target;
  };
  root = r.loadSync(PROTO_FILES, { keepCase: true });
  return root;
}

function typeOf(typeUrl: string): protobuf.Type {
  const name = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  return types().lookupType(name);
}

/** Packs a message (plain object, .proto field names) into an Any of typeUrl. */
export function pack(typeUrl: string, message: object): Any {
  const t = typeOf(typeUrl);
  return { type_url: typeUrl, value: Buffer.from(t.encode(t.fromObject(message)).finish()) };
}

/** Bytes a message of the named type (e.g. envoy.service.discovery.v3.DeltaDiscoveryResponse) takes encoded. */
export function encodedLength(typeName: string, message: object): number {
  const t = types().lookupType(typeName);
  return t.encode(t.fromObject(message)).finish().length;
}

/** Unpacks an Any; throws (with protobufjs's reason) when the bytes are not a valid message of its type. */
export function unpack<T>(any: Any): T {
  const t = typeOf(any.type_url);
  return t.toObject(t.decode(any.value), CONVERSION) as T;
}
