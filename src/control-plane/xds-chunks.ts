// What one delta response of a type carries: the difference between what
// the node holds and what is served, cut so that no response exceeds a byte
// budget. gRPC clients refuse messages above their receive limit (4 MiB by
// default in grpc-js, grpc-go, grpcio and tonic), and a refused message
// ends the stream, so a whole type in one response is a node that can never
// sync once the mesh is large. Sizes are computed exactly as protobuf
// encodes the fields, not estimated from the decoded objects.
import type { ResourceMessage } from '../protocol/messages';
import type { XdsResource } from '../sources/xds-resources';

/** The default budget: a quarter of gRPC's common 4 MiB receive default, so any client with defaults syncs. */
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/** Room for the fields every response has (type_url, nonce, system_version_info) besides its resources. */
const FRAME_BYTES = 512;

export interface Chunk {
  changed: ResourceMessage[];
  removed: string[];
  /** Encoded size of the response's resources and removals (without FRAME_BYTES). */
  bytes: number;
  /** More of the difference remains after this chunk. */
  more: boolean;
  /** Resources bigger than the budget on their own: sent alone, over budget (nothing else can be done). */
  oversized: string[];
}

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** A length-delimited field (tag, length, bytes) holding n bytes; field numbers here all fit one tag byte. */
const field = (n: number): number => 1 + varintLength(n) + n;

/** Bytes a Resource adds to a DeltaDiscoveryResponse (its `resources` entry). */
export function resourceBytes(r: XdsResource): number {
  const any = field(Buffer.byteLength(r.resource.type_url)) + field(r.resource.value.length);
  return field(field(Buffer.byteLength(r.name)) + field(Buffer.byteLength(r.version)) + field(any));
}

/** Bytes a name adds to a DeltaDiscoveryResponse's removed_resources. */
export const removalBytes = (name: string): number => field(Buffer.byteLength(name));

/**
 * The next response of a type for a node holding `held`: changed resources
 * first, then removals, in the order of `want`, until the budget is spent.
 * Names in `skip` (versions the node refused, or removals it refused) are
 * left out, so a NACK does not loop.
 */
export function nextChunk(want: Map<string, XdsResource>, held: Map<string, string>, skip: Map<string, string>, maxBytes: number): Chunk {
  const budget = Math.max(1, maxBytes - FRAME_BYTES);
  const chunk: Chunk = { changed: [], removed: [], bytes: 0, more: false, oversized: [] };
  const fits = (n: number): boolean => chunk.bytes + n <= budget || (chunk.changed.length === 0 && chunk.removed.length === 0);
  for (const r of want.values()) {
    if (held.get(r.name) === r.version || skip.get(r.name) === r.version) continue;
    const n = resourceBytes(r);
    if (!fits(n)) {
      chunk.more = true;
      return chunk;
    }
    if (n > budget) chunk.oversized.push(r.name);
    chunk.changed.push({ name: r.name, version: r.version, resource: r.resource });
    chunk.bytes += n;
  }
  for (const name of held.keys()) {
    if (want.has(name) || skip.get(name) === REMOVAL) continue;
    const n = removalBytes(name);
    if (!fits(n)) {
      chunk.more = true;
      return chunk;
    }
    chunk.removed.push(name);
    chunk.bytes += n;
  }
  return chunk;
}

/** The `skip` value of a name whose removal the node refused. */
export const REMOVAL = '';
