// Fuzz target: xDS resources as a node receives them. An input is one
// resource of a DeltaDiscoveryResponse (name, google.protobuf.Any): valid
// encodings of a real mesh (toResources) with their bytes mutated, messages
// built from odd field values, random bytes, wrong or missing type URLs and
// names. It goes through the node's path, in the order xds-client.ts takes
// it (empty → wrong type → protobuf decode → *FromMessage). The property:
// either a decoded resource whose facts are sound (IPv4 addresses, ports in
// range, policies the engine can evaluate) or a ResourceError that names the
// resource; never another exception.

import net from 'node:net';
import fc from 'fast-check';
import YAML from 'yaml';
import { PolicyAuthorizer } from '../../src/policy/engine';
import type { AddressMessage, Any, AuthorizationMessage } from '../../src/protocol/messages';
import { pack, TYPE_ADDRESS, TYPE_AUTHORIZATION, unpack } from '../../src/protocol/protos';
import { parseConfig } from '../../src/sources/config';
import { addressFromMessage, authorizationFromMessage, ResourceError, toResources } from '../../src/sources/xds-resources';
import { MeshStore } from '../../src/state/store';
import { at } from '../helpers/must';
import { SEED_CONFIGS } from './config-target';

export interface XdsInput {
  typeUrl: string;
  name: string;
  resource: Any | null;
}

type ValidInput = XdsInput & { resource: Any };
let valid: ValidInput[] | undefined;
/** Every resource of the seed meshes, encoded by the control plane's own code. */
function validResources(): ValidInput[] {
  if (valid) return valid;
  valid = SEED_CONFIGS.flatMap((doc) => {
    const cfg = parseConfig(YAML.stringify(doc));
    const store = new MeshStore(cfg);
    return [...toResources(cfg, (s) => store.endpoints(s))].flatMap(([typeUrl, m]) =>
      [...m.values()].map((r) => ({ typeUrl, name: r.name, resource: r.resource })),
    );
  });
  return valid;
}

/** Valid resource i, counted round the seed meshes' resources. */
function validResource(i: number): ValidInput {
  const all = validResources();
  return at(all, i % all.length, 'valid resources');
}

const byteEdit = fc.record({
  kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate', 'append'),
  at: fc.nat(),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }),
});

function editBytes(b: Buffer, e: { kind: string; at: number; bytes: Uint8Array }): Buffer {
  const at = e.at % (b.length + 1);
  switch (e.kind) {
    case 'flip': {
      const c = Buffer.from(b);
      if (c.length) c.writeUInt8(c.readUInt8(at % c.length) ^ (e.bytes[0] || 1), at % c.length);
      return c;
    }
    case 'set': {
      const c = Buffer.from(b);
      Buffer.from(e.bytes).copy(c, Math.min(at, Math.max(0, c.length - 1)));
      return c;
    }
    case 'insert':
      return Buffer.concat([b.subarray(0, at), Buffer.from(e.bytes), b.subarray(at)]);
    case 'delete':
      return Buffer.concat([b.subarray(0, at), b.subarray(at + e.bytes.length)]);
    case 'truncate':
      return b.subarray(0, at);
    default:
      return Buffer.concat([b, Buffer.from(e.bytes)]);
  }
}

const oddString = fc.oneof(
  fc.constantFrom('', 'default', 'cluster.local', 'a/b', '../x', 'spiffe://x', 'x'.repeat(300), '\0', 'ns/sa'),
  fc.string({ maxLength: 20 }),
);
const oddBytes = fc.oneof(
  fc.constantFrom(...[0, 1, 3, 4, 5, 15, 16, 17].map((n) => Buffer.alloc(n, 0xff))),
  fc.uint8Array({ maxLength: 20 }).map((u) => Buffer.from(u)),
);
const oddNumber = fc.oneof(fc.constantFrom(0, 1, 65535, 65536, 0xffffffff), fc.nat());

const stringMatch = fc.oneof(
  fc.record({ exact: oddString }),
  fc.record({ prefix: oddString }),
  fc.record({ suffix: oddString }),
  fc.constant({ presence: {} }),
  fc.constant({}),
);
const ipBlock = fc.record({ address: oddBytes, length: oddNumber });
const match = fc.record(
  {
    namespaces: fc.array(stringMatch, { maxLength: 2 }),
    not_namespaces: fc.array(stringMatch, { maxLength: 2 }),
    principals: fc.array(stringMatch, { maxLength: 2 }),
    not_principals: fc.array(stringMatch, { maxLength: 2 }),
    source_ips: fc.array(ipBlock, { maxLength: 2 }),
    not_source_ips: fc.array(ipBlock, { maxLength: 2 }),
    destination_ips: fc.array(ipBlock, { maxLength: 2 }),
    not_destination_ips: fc.array(ipBlock, { maxLength: 2 }),
    destination_ports: fc.array(oddNumber, { maxLength: 3 }),
    not_destination_ports: fc.array(oddNumber, { maxLength: 3 }),
  },
  { requiredKeys: [] },
);

/** Messages with fields drawn from edge values, encoded by protobufjs (names made to match half the time). */
const builtArb: fc.Arbitrary<XdsInput> = fc.oneof(
  fc
    .record(
      {
        uid: oddString,
        name: oddString,
        namespace: oddString,
        service_account: oddString,
        trust_domain: oddString,
        node: oddString,
        addresses: fc.array(oddBytes, { maxLength: 3 }),
        tunnel_protocol: fc.constantFrom(0, 1, 7),
        capacity: fc.option(fc.record({ value: oddNumber })),
        authorization_policies: fc.array(oddString, { maxLength: 2 }),
        services: fc.dictionary(
          oddString,
          fc.record({ ports: fc.array(fc.record({ service_port: oddNumber, target_port: oddNumber }), { maxLength: 2 }) }),
          { maxKeys: 2 },
        ),
      },
      { requiredKeys: [] },
    )
    .chain((w) => fc.tuple(fc.constant(w), fc.boolean(), oddString))
    .map(([w, same, other]) => ({
      typeUrl: TYPE_ADDRESS,
      name: same ? String(w.uid ?? '') : other,
      resource: packOrEmpty(TYPE_ADDRESS, { workload: w }),
    })),
  fc
    .record(
      {
        name: oddString,
        namespace: oddString,
        hostname: oddString,
        addresses: fc.array(fc.record({ network: oddString, address: oddBytes }), { maxLength: 2 }),
        ports: fc.array(fc.record({ service_port: oddNumber, target_port: oddNumber }), { maxLength: 3 }),
      },
      { requiredKeys: [] },
    )
    .chain((s) => fc.tuple(fc.constant(s), fc.boolean(), oddString))
    .map(([s, same, other]) => ({
      typeUrl: TYPE_ADDRESS,
      name: same ? `${s.namespace ?? ''}/${s.hostname ?? ''}` : other,
      resource: packOrEmpty(TYPE_ADDRESS, { service: s }),
    })),
  fc
    .record(
      {
        name: oddString,
        namespace: oddString,
        scope: fc.constantFrom(0, 1, 2, 9),
        action: fc.constantFrom(0, 1, 5),
        dry_run: fc.boolean(),
        rules: fc.array(fc.record({ clauses: fc.array(fc.record({ matches: fc.array(match, { maxLength: 3 }) }), { maxLength: 3 }) }), {
          maxLength: 3,
        }),
      },
      { requiredKeys: [] },
    )
    .chain((p) => fc.tuple(fc.constant(p), fc.boolean(), oddString))
    .map(([p, same, other]) => ({
      typeUrl: TYPE_AUTHORIZATION,
      name: same ? `${p.namespace ?? ''}/${p.name ?? ''}` : other,
      resource: packOrEmpty(TYPE_AUTHORIZATION, p),
    })),
);

function packOrEmpty(typeUrl: string, m: object): Any {
  try {
    return pack(typeUrl, m);
  } catch {
    return { type_url: typeUrl, value: Buffer.alloc(0) };
  }
}

export const xdsInputArb: fc.Arbitrary<XdsInput> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.tuple(fc.nat(), fc.array(byteEdit, { minLength: 1, maxLength: 4 })).map(([i, es]) => {
      const v = validResource(i);
      return { ...v, resource: { ...v.resource, value: es.reduce(editBytes, v.resource.value) } };
    }),
  },
  { weight: 3, arbitrary: builtArb },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(TYPE_ADDRESS, TYPE_AUTHORIZATION), oddString, fc.uint8Array({ maxLength: 200 }))
      .map(([typeUrl, name, bytes]) => ({ typeUrl, name, resource: { type_url: typeUrl, value: Buffer.from(bytes) } })),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.nat(), fc.constantFrom(null, 'type.googleapis.com/istio.workload.Workload', '', 'x', TYPE_ADDRESS, TYPE_AUTHORIZATION))
      .map(([i, url]) => {
        const v = validResource(i);
        return { ...v, resource: url === null ? null : { type_url: url, value: v.resource.value } };
      }),
  },
);

const authorizer = (p: ReturnType<typeof authorizationFromMessage>): PolicyAuthorizer => PolicyAuthorizer.of([p]);

/** Throws unless the resource decodes to sound facts or is refused with a ResourceError naming it. */
export function checkXds(input: XdsInput, trustDomain = 'cluster.local'): 'accepted' | 'rejected' {
  try {
    const any = input.resource;
    if (!any) throw new ResourceError(`${input.name}: resource is empty`);
    if (any.type_url !== input.typeUrl) throw new ResourceError(`${input.name}: resource has type ${JSON.stringify(any.type_url)}`);
    let m: unknown;
    try {
      m = unpack(any);
    } catch (err) {
      throw new ResourceError(`${input.name}: cannot be decoded: ${(err as Error).message}`);
    }
    if (input.typeUrl === TYPE_ADDRESS) {
      const e = addressFromMessage(input.name, m as AddressMessage, trustDomain);
      const addrs = 'workload' in e ? e.workload.addresses : e.service.addresses;
      const bad = addrs.find((a) => !net.isIPv4(a));
      if (bad !== undefined) throw new Error(`accepted ${input.name} with address ${JSON.stringify(bad)}, not IPv4`);
      if ('service' in e) {
        const p = e.service.ports.find((x) => !(x.port >= 1 && x.port <= 65535 && x.targetPort >= 1 && x.targetPort <= 65535));
        if (p) throw new Error(`accepted ${input.name} with port ${JSON.stringify(p)}`);
      }
    } else {
      const p = authorizationFromMessage(input.name, m as AuthorizationMessage);
      // Whatever was accepted must be usable per connection without throwing.
      const dst = {
        uid: 'u',
        name: 'w',
        namespace: p.namespace,
        serviceAccount: 'sa',
        node: 'n',
        addresses: ['10.0.0.1'],
        protocol: 'HBONE' as const,
        dataplane: 'ambient' as const,
        labels: {},
        capacity: 1,
        authorizationPolicies: [`${p.namespace}/${p.name}`],
      };
      authorizer(p).check({ srcIdentity: 'spiffe://cluster.local/ns/a/sa/b', srcIp: '10.0.0.2', dst, dstIp: '10.0.0.1', dstPort: 8080 });
      authorizer(p).check({ srcIp: '::ffff:10.0.0.2', dst, dstIp: '10.0.0.1', dstPort: 1 });
    }
    return 'accepted';
  } catch (err) {
    if (err instanceof ResourceError && err.message.startsWith(`${input.name}:`)) return 'rejected';
    throw err;
  }
}
