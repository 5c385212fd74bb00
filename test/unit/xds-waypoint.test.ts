// Waypoints on the control plane's xDS, over real gRPC and TLS on 127.0.0.1
// (no root): a control plane started from a YAML with two waypoints, an
// HTTPRoute and a policy on each, and a token per waypoint and node. Each
// waypoint's stream gets exactly its own WaypointConfig and the addresses; a
// node's gets none; a token of one kind claiming to be the other is refused;
// a change of routes is pushed to the waypoint it concerns; an invalid
// WaypointConfig is NACKed with the field named and the last good one kept.
// The CA issues a waypoint its own identity only.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import YAML from 'yaml';
import { ControlPlane } from '../../src/control-plane/server';
import { TokenReviewer } from '../../src/control-plane/token-review';
import { NodeTokens } from '../../src/control-plane/tokens';
import { IstioCaClient } from '../../src/identity/ca-client';
import { requestCertificate } from '../../src/identity/cert-manager';
import { KubeClient } from '../../src/kube/client';
import type { DeltaDiscoveryResponse, NodeMessage, WaypointConfigMessage } from '../../src/protocol/messages';
import { grpcServices, pack, TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_WAYPOINT, unpack } from '../../src/protocol/protos';
import { parseConfig } from '../../src/sources/config';
import { nodeMessage, WAYPOINT_TYPES, waypointNodeMessage, XdsClient } from '../../src/sources/xds-client';
import { packResource, ResourceError, toResources } from '../../src/sources/xds-resources';
import { WAYPOINT_SCHEMA_VERSION, waypointFromMessage, waypointResources } from '../../src/sources/xds-waypoint';
import { MeshStore } from '../../src/state/store';
import { L7Authorizer } from '../../src/waypoint/authz';
import { DestinationState, DestinationTable } from '../../src/waypoint/destination';
import { RouteTable } from '../../src/waypoint/match';
import { FakeKube, fixture } from '../helpers/fake-kube';
import { problemsOf } from '../helpers/mesh-yaml';
import { must } from '../helpers/must';
import { TIME_SCALE, waitFor } from '../helpers/proc';

const log = pino({ level: 'silent' });
const hash = (t: string): string => createHash('sha256').update(t).digest('hex');
const host = (name: string): string => `${name}.default.svc.cluster.local`;
const GW = 'gateway.networking.k8s.io/gateway-name';
const WP_A = 'default/wp-a';
const WP_B = 'default/wp-b';
let dir: string;
const tokenFile = (who: string): string => path.join(dir, `${who}.token`);

const pod = (name: string, ip: string, labels: Record<string, string>, serviceAccount = name) => ({
  uid: `default/${name}`,
  name,
  namespace: 'default',
  serviceAccount,
  node: 'n1',
  addresses: [ip],
  labels,
});
const svc = (name: string, vip: string, waypoint: string) => ({
  name,
  namespace: 'default',
  hostname: host(name),
  addresses: [vip],
  ports: [{ port: 80, targetPort: 8080 }],
  selector: { app: name },
  labels: { 'istio.io/use-waypoint': waypoint },
});
const gateway = (name: string) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace: 'default' },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
});
const route = (name: string, path: string) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'default' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name, port: 80 }],
    rules: [
      { matches: [{ path: { type: 'RegularExpression', value: `${path}/[0-9]+` } }], backendRefs: [{ name, port: 80 }] },
      {
        matches: [{ headers: [{ name: 'x-canary', value: 'true' }] }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-via', value: name }] } }],
        backendRefs: [{ name, port: 80 }],
      },
    ],
  },
});
const denyPolicy = (name: string, service: string) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'default' },
  spec: {
    targetRefs: [{ group: '', kind: 'Service', name: service }],
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
  },
});

function doc(opts: { echoPath?: string } = {}): Record<string, unknown> {
  return {
    trustDomain: 'cluster.local',
    ca: { dir: path.join(dir, 'ca') },
    nodes: [{ name: 'n1', address: '10.0.0.1' }],
    workloads: [
      pod('sleep', '10.200.1.10', { app: 'sleep' }),
      pod('echo', '10.200.1.11', { app: 'echo' }),
      pod('api', '10.200.1.12', { app: 'api' }),
      // The waypoints' pods, without netns: no node captures them.
      pod('wp-a-0', '10.200.1.50', { [GW]: 'wp-a' }, 'wp-a'),
      pod('wp-b-0', '10.200.1.51', { [GW]: 'wp-b' }, 'wp-b'),
    ],
    services: [svc('echo', '10.96.0.11', 'wp-a'), svc('api', '10.96.0.12', 'wp-b')],
    // An L4 policy: the nodes' to enforce, never sent to a waypoint.
    policies: [
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'sleep-only', namespace: 'default' },
        spec: {
          selector: { matchLabels: { app: 'sleep' } },
          rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/echo'] } }] }],
        },
      },
    ],
    routes: [
      gateway('wp-a'),
      gateway('wp-b'),
      route('echo', opts.echoPath ?? '/echo'),
      route('api', '/api'),
      denyPolicy('deny-echo-admin', 'echo'),
      denyPolicy('deny-api-admin', 'api'),
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'DestinationRule',
        metadata: { name: 'echo', namespace: 'default' },
        spec: {
          host: 'echo',
          trafficPolicy: {
            loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } },
            connectionPool: { tcp: { maxConnections: 10 }, http: { http1MaxPendingRequests: 5 } },
            outlierDetection: { consecutive5xxErrors: 3 },
          },
          subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }],
        },
      },
    ],
    controlPlane: {
      tokens: [
        { node: 'n1', sha256: hash(read('n1')) },
        { waypoint: WP_A, sha256: hash(read('wp-a')) },
        { waypoint: WP_B, sha256: hash(read('wp-b')) },
      ],
    },
  };
}

const read = (who: string): string => fs.readFileSync(tokenFile(who), 'utf8').trim();
const write = (file: string, d: Record<string, unknown>): void => {
  fs.writeFileSync(`${file}.tmp`, YAML.stringify(d));
  fs.renameSync(`${file}.tmp`, file);
};
const rootsPem = (): string => fs.readFileSync(path.join(dir, 'ca', 'root-cert.pem'), 'utf8');

function client(port: number, token: string, node: NodeMessage, types?: readonly string[]): XdsClient {
  return new XdsClient({
    address: `127.0.0.1:${port}`,
    rootsPem: rootsPem(),
    serverName: 'localhost',
    tokenFile: tokenFile(token),
    trustDomain: 'cluster.local',
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    log,
    node,
    types,
  });
}
const waypointNode = (key: string): NodeMessage => {
  const [namespace = '', name = ''] = key.split('/');
  return waypointNodeMessage({ namespace, name, podName: `${name}-0`, ip: '127.0.0.1' });
};
const n1 = nodeMessage({ nodeName: 'n1', podName: 'ambit-n1', podNamespace: 'ambit-system', ip: '127.0.0.1' });

/** One raw stream's end: the status the server closed it with, or the first response. */
function rawStream(
  port: number,
  token: string,
  node: NodeMessage,
): Promise<{ code?: number; details?: string; res?: DeltaDiscoveryResponse }> {
  const Ads = grpcServices().ads;
  const c = new Ads(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(rootsPem())), {
    'grpc.ssl_target_name_override': 'localhost',
  }) as unknown as grpc.Client & { DeltaAggregatedResources(md: grpc.Metadata): grpc.ClientDuplexStream<object, DeltaDiscoveryResponse> };
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${read(token)}`);
  const call = c.DeltaAggregatedResources(md);
  return new Promise((resolve) => {
    const done = (r: { code?: number; details?: string; res?: DeltaDiscoveryResponse }): void => {
      call.cancel();
      c.close();
      resolve(r);
    };
    call.on('data', (res: DeltaDiscoveryResponse) => done({ res }));
    call.on('error', (err: grpc.ServiceError) => done({ code: err.code, details: err.details }));
    call.write({
      node,
      type_url: TYPE_ADDRESS,
      resource_names_subscribe: [],
      resource_names_unsubscribe: [],
      initial_resource_versions: {},
    });
  });
}

let file: string;
let cp: ControlPlane;
const clients: XdsClient[] = [];
const started = (c: XdsClient): XdsClient => {
  clients.push(c);
  c.start();
  return c;
};

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-xds-waypoint-'));
  for (const who of ['n1', 'wp-a', 'wp-b']) fs.writeFileSync(tokenFile(who), `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  file = path.join(dir, 'mesh.yaml');
  write(file, doc());
  cp = await ControlPlane.start({ configFile: file, listen: '127.0.0.1:0', names: { dns: ['localhost'], ips: [] }, log });
});
after(async () => {
  for (const c of clients) c.stop();
  await cp?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the typed wire form round-trips the compiled routes and policies, regular expressions recompiled', () => {
  const cfg = parseConfig(YAML.stringify(doc()));
  const res = waypointResources(cfg.routes);
  assert.deepEqual([...res.keys()], [WP_A, WP_B]);
  const a = waypointFromMessage(WP_A, unpack(must(res.get(WP_A), 'present').resource));
  assert.deepEqual(
    a.routes.map((r) => r.service),
    [`default/${host('echo')}`],
  );
  assert.deepEqual(
    a.policies.map((p) => p.name),
    ['deny-echo-admin'],
  );
  // The DestinationRule of the service it serves, field for field; wp-b's service has none.
  assert.deepEqual(a.destinations, cfg.routes.destinations);
  assert.deepEqual(waypointFromMessage(WP_B, unpack(must(res.get(WP_B), 'present').resource)).destinations, []);
  // Equal to the model the file compiles to, compiled RegExp included.
  assert.deepEqual(
    a.routes,
    cfg.routes.routes.filter((r) => r.service === `default/${host('echo')}`),
  );
  assert.deepEqual(
    a.policies,
    cfg.routes.policies.filter((p) => p.name === 'deny-echo-admin'),
  );
  const path0 = must(a.routes[0]?.rules[0]?.matches[0], 'present').path;
  assert.ok(path0.type === 'RegularExpression' && path0.regex.test('/echo/42') && !path0.regex.test('/echo/x'));
});

test('what the waypoint receives is checked field by field: each problem is a ResourceError naming the field', () => {
  const cfg = parseConfig(YAML.stringify(doc()));
  const good = unpack<WaypointConfigMessage>(must(waypointResources(cfg.routes).get(WP_A), 'present').resource);
  /** The good message changed in place, then through the wire again: what a control plane could send. */
  // biome-ignore lint/suspicious/noExplicitAny: the test breaks the message wherever it likes
  const changed = (mutate: (m: any) => void): WaypointConfigMessage => {
    const m = structuredClone(good);
    mutate(m);
    return unpack<WaypointConfigMessage>(pack(TYPE_WAYPOINT, m));
  };
  const cases: [string, WaypointConfigMessage, RegExp][] = [
    ['another schema', { ...good, schema_version: WAYPOINT_SCHEMA_VERSION + 1 }, /schema_version 2 is not 1/],
    ['another name', { ...good, name: 'wp-b' }, /namespace\/name "default\/wp-b" must equal the resource name/],
    [
      'a header name a response cannot carry',
      changed((m) => {
        m.routes[0].rules[1].filters[0].modifier.set[0].name = 'X Bad';
      }),
      /routes\[0\]\.rules\[1\]\.filters\[0\]\.modifier\.set\[0\]\.name "X Bad" is not a lower-case HTTP header name/,
    ],
    [
      'a regex that backtracks',
      changed((m) => {
        m.routes[0].rules[0].matches[0].path.value = '(a+)+';
      }),
      /routes\[0\]\.rules\[0\]\.matches\[0\]\.path\.value "\(a\+\)\+" a repeated group/,
    ],
    [
      "a field of another filter's",
      changed((m) => {
        m.routes[0].rules[1].filters[0].scheme = 'http';
      }),
      /routes\[0\]\.rules\[1\]\.filters\[0\]\.scheme "http" is not a field here/,
    ],
    [
      'a filter this version does not know',
      changed((m) => {
        m.routes[0].rules[1].filters[0].type = 'CORS';
      }),
      /filters\[0\]\.type "CORS" must be one of RequestHeaderModifier/,
    ],
    [
      'a port out of range',
      changed((m) => {
        m.routes[0].rules[0].backends[0].port = 70000;
      }),
      /backends\[0\]\.port 70000 must be a whole number 1\.\.65535/,
    ],
    [
      'no backend and no redirect',
      changed((m) => {
        m.routes[0].rules[0].backends = [];
      }),
      /rules\[0\]\.backends \[\] is empty/,
    ],
    [
      'a policy without action',
      changed((m) => {
        m.policies[0].action = '';
      }),
      /policies\[0\]\.action "" must be one of ALLOW, DENY/,
    ],
    [
      'a string match that matches nothing',
      changed((m) => {
        m.policies[0].rules[0].clauses[0].matches[0].paths[0] = { presence: false };
      }),
      /policies\[0\]\.rules\[0\]\.clauses\[0\]\.matches\[0\]\.paths\[0\]\.presence .* must be true/,
    ],
  ];
  for (const [what, m, re] of cases) {
    assert.throws(
      () => waypointFromMessage(WP_A, m),
      (err: Error) => err instanceof ResourceError && re.test(err.message) && err.message.startsWith(`${WP_A}: `),
      what,
    );
  }
});

test('mutated messages never throw anything but a ResourceError, and what is accepted builds and routes (seeded)', () => {
  const cfg = parseConfig(YAML.stringify(doc()));
  const good = unpack<WaypointConfigMessage>(must(waypointResources(cfg.routes).get(WP_A), 'present').resource);
  let seed = 20261202;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const odd = [
    '',
    'X Bad',
    '\r\n',
    '(a+)+',
    '/',
    'ALLOW',
    'Gateway',
    'RequestRedirect',
    '*',
    '0.0.0.0',
    'default/wp-a',
    'é',
    '[',
    70000,
    0,
    2 ** 32 - 1,
    true,
  ];
  /** Every path to a leaf (scalar) or list of the message. */
  const paths = (v: unknown, at: (string | number)[] = []): (string | number)[][] => {
    if (Array.isArray(v)) return [at, ...v.flatMap((x, i) => paths(x, [...at, i]))];
    if (typeof v === 'object' && v !== null && !Buffer.isBuffer(v)) return Object.entries(v).flatMap(([k, x]) => paths(x, [...at, k]));
    return [at];
  };
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < 400; i++) {
    const m = structuredClone(good) as unknown as Record<string | number, unknown>;
    for (let j = 0; j <= rand(3); j++) {
      const all = paths(m).filter((p) => p.length > 0);
      const at = must(all[rand(all.length)], 'a path');
      let parent = m as Record<string | number, unknown>;
      for (const k of at.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
      const last = must(at[at.length - 1], 'a key');
      parent[last] = Array.isArray(parent[last])
        ? rand(2)
          ? []
          : [...(parent[last] as unknown[]), ...(parent[last] as unknown[])]
        : odd[rand(odd.length)];
    }
    let wire: WaypointConfigMessage;
    try {
      wire = unpack<WaypointConfigMessage>(pack(TYPE_WAYPOINT, m));
    } catch {
      continue; // not even encodable: no control plane could send it
    }
    let l7: ReturnType<typeof waypointFromMessage>;
    try {
      l7 = waypointFromMessage(WP_A, wire);
    } catch (err) {
      assert.ok(err instanceof ResourceError, `mutation ${i}: ${(err as Error).stack}`);
      refused++;
      continue;
    }
    accepted++;
    const routes = new RouteTable(l7.routes);
    const authz = new L7Authorizer(l7.policies);
    const destinations = new DestinationTable(l7.destinations);
    for (const subset of [undefined, 'v1']) {
      const p = destinations.policyFor(`default/${host('echo')}`, subset);
      if (p)
        new DestinationState(Math.random, () => 0).pick(p, [{ id: 'a', weight: 1 }], new Set(), { headers: { 'x-user': 'u' }, srcIp: '' });
    }
    const headers = { 'x-canary': 'true', host: '10.96.0.11' };
    routes.route(`default/${host('echo')}`, 80, { method: 'GET', target: '/echo/1?x=1', headers });
    authz.check({
      srcIp: '10.200.1.10',
      host: '10.96.0.11',
      port: 80,
      method: 'GET',
      target: '/admin/x',
      headers,
      waypoint: WP_A,
      service: `default/${host('echo')}`,
    });
  }
  assert.ok(accepted > 20 && refused > 20, `accepted ${accepted}, refused ${refused}`);
});

test("each waypoint's stream gets exactly its own configuration and the addresses; a node's gets no waypoint's", async () => {
  // wp-a asks for the L4 policies too: that subscription is answered empty.
  const a = started(client(cp.port, 'wp-a', waypointNode(WP_A), [...WAYPOINT_TYPES, TYPE_AUTHORIZATION]));
  const b = started(client(cp.port, 'wp-b', waypointNode(WP_B), WAYPOINT_TYPES));
  // A node that asks for waypoint configurations too gets an empty answer to that subscription.
  const node = started(client(cp.port, 'n1', n1, [TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_WAYPOINT]));
  await Promise.all([a, b, node].map((c) => c.whenSynced(10_000 * TIME_SCALE)));
  assert.deepEqual([...a.waypointConfigs().keys()], [WP_A]);
  assert.deepEqual([...b.waypointConfigs().keys()], [WP_B]);
  assert.deepEqual(
    must(a.waypointConfigs().get(WP_A), 'present').routes.map((r) => r.service),
    [`default/${host('echo')}`],
  );
  assert.deepEqual(
    must(b.waypointConfigs().get(WP_B), 'present').policies.map((p) => p.name),
    ['deny-api-admin'],
  );
  assert.equal(node.waypointConfigs().size, 0);
  assert.deepEqual(
    node.state().policies.map((p) => p.name),
    ['sleep-only'],
  );
  assert.deepEqual(a.state().policies, []);
  // The addresses, as a node sees them (the waypoint routes to the endpoints itself).
  assert.equal(a.state().workloads.length, 5);
  assert.equal(a.state().services.length, 2);
  assert.deepEqual(
    cp.xds
      .streamStates()
      .filter((s) => s.kind === 'waypoint')
      .map((s) => s.node)
      .sort(),
    [WP_A, WP_B],
  );
  assert.equal(a.stats.nacks + b.stats.nacks + node.stats.nacks, 0);
});

test("a waypoint's token claiming a node, or a node's claiming a waypoint, is refused with PERMISSION_DENIED", async () => {
  const asNode = await rawStream(cp.port, 'wp-a', n1);
  assert.equal(asNode.code, grpc.status.PERMISSION_DENIED);
  assert.match(String(asNode.details), /the token is waypoint default\/wp-a's but the stream says WAYPOINT ""/);
  const bothNames = await rawStream(cp.port, 'wp-a', {
    ...waypointNode(WP_A),
    metadata: { fields: { ...waypointNode(WP_A).metadata?.fields, NODE_NAME: { stringValue: 'n1' } } },
  });
  assert.equal(bothNames.code, grpc.status.PERMISSION_DENIED);
  assert.match(String(bothNames.details), /also says NODE_NAME "n1"/);
  const otherWaypoint = await rawStream(cp.port, 'wp-a', waypointNode(WP_B));
  assert.equal(otherWaypoint.code, grpc.status.PERMISSION_DENIED);
  const nodeAsWaypoint = await rawStream(cp.port, 'n1', waypointNode(WP_A));
  assert.equal(nodeAsWaypoint.code, grpc.status.PERMISSION_DENIED);
  assert.match(String(nodeAsWaypoint.details), /the token is node n1's but the stream says NODE_NAME ""/);
  // The honest introduction passes (the first response arrives).
  const honest = await rawStream(cp.port, 'wp-a', waypointNode(WP_A));
  assert.equal(honest.code, undefined);
  assert.equal(honest.res?.type_url, TYPE_ADDRESS);
});

test('the CA issues a waypoint its own identity and nothing else', async () => {
  const ca = new IstioCaClient({
    address: `127.0.0.1:${cp.port}`,
    rootsPem: rootsPem(),
    serverName: 'localhost',
    tokenFile: tokenFile('wp-a'),
  });
  const own = await requestCertificate(ca, 'spiffe://cluster.local/ns/default/sa/wp-a', 3600);
  assert.equal(own.identity, 'spiffe://cluster.local/ns/default/sa/wp-a');
  await assert.rejects(
    requestCertificate(ca, 'spiffe://cluster.local/ns/default/sa/echo', 3600),
    /waypoint default\/wp-a asked for .*sa\/echo, which is not its own identity/,
  );
});

test('a change of routes is pushed to the waypoint it concerns; an invalid configuration is NACKed and the last good one kept', async () => {
  const a = started(client(cp.port, 'wp-a', waypointNode(WP_A), WAYPOINT_TYPES));
  const b = started(client(cp.port, 'wp-b', waypointNode(WP_B), WAYPOINT_TYPES));
  await Promise.all([a, b].map((c) => c.whenSynced(10_000 * TIME_SCALE)));
  const regexOf = (c: XdsClient, key: string): string => {
    const p = must(c.waypointConfigs().get(key)?.routes[0]?.rules[0]?.matches[0], 'present').path;
    return p.value;
  };
  const bAcks = b.stats.acks;
  write(file, doc({ echoPath: '/echo-v2' }));
  await waitFor('the changed route reaches wp-a', () => regexOf(a, WP_A) === '/echo-v2/[0-9]+');
  assert.equal(b.stats.acks, bAcks, 'wp-b, whose configuration did not change, got nothing');

  // A control plane that sends what the waypoint cannot accept (a newer schema): NACK, the last good one serves.
  const rejected: string[] = [];
  a.on('rejected', (why: string) => rejected.push(why));
  const store = new MeshStore(cp.config);
  const resources = toResources(cp.config, (s) => store.endpoints(s));
  const good = unpack<Record<string, unknown>>(
    must(waypointResources(parseConfig(YAML.stringify(doc({ echoPath: '/echo-v2' }))).routes).get(WP_A), 'present').resource,
  );
  resources.set(TYPE_WAYPOINT, new Map([[WP_A, packResource(WP_A, TYPE_WAYPOINT, { ...good, schema_version: 9 })]]));
  const nacks = cp.xds.stats.nacks;
  cp.xds.update(resources);
  await waitFor('the control plane sees the NACK', () => cp.xds.stats.nacks > nacks);
  assert.match(must(rejected[0], 'present'), /default\/wp-a: schema_version 9 is not 1/);
  assert.equal(regexOf(a, WP_A), '/echo-v2/[0-9]+', 'the last good configuration is kept');
  assert.ok(a.connected, 'the stream stays up');
});

test('controlPlane.tokens: a waypoint form beside node, exactly one of the two, naming a declared waypoint', () => {
  const withTokens = (tokens: unknown[]): string => YAML.stringify({ ...doc(), controlPlane: { tokens } });
  const sha = hash('x');
  const parsed = parseConfig(withTokens([{ waypoint: WP_A, sha256: sha }]));
  assert.deepEqual(parsed.controlPlane.tokens, [{ waypoint: WP_A, sha256: sha }]);
  const md = new grpc.Metadata();
  md.set('authorization', 'Bearer x');
  assert.deepEqual(new NodeTokens(parsed.controlPlane.tokens).authenticate(md), { waypoint: WP_A });
  const problems = (tokens: unknown[]): string => problemsOf(withTokens(tokens)).join('\n');
  assert.match(
    problems([{ node: 'n1', waypoint: WP_A, sha256: sha }]),
    /controlPlane\.tokens\[0\]\.waypoint: .*either a node's or a waypoint's/,
  );
  assert.match(problems([{ waypont: WP_A, sha256: sha }]), /controlPlane\.tokens\[0\]\.waypont: unknown field; did you mean `waypoint`\?/);
  assert.match(
    problems([{ waypoint: 'wp-a', sha256: sha }]),
    /^controlPlane\.tokens\[0\]\.waypoint: must be <namespace>\/<name> of the waypoint Gateway .*\(got "wp-a"\)/,
  );
  assert.match(
    problems([{ waypoint: 'default/wp-c', sha256: sha }]),
    /controlPlane\.tokens\[0\]\.waypoint: is not a waypoint Gateway of routes: \(default\/wp-a, default\/wp-b\).*\(got "default\/wp-c"\)/,
  );
  assert.match(
    problems([
      { node: 'n1', sha256: sha },
      { waypoint: WP_A, sha256: sha },
    ]),
    /controlPlane\.tokens\[1\]\.sha256: duplicates controlPlane\.tokens\[0\]\.sha256.*\(waypoint default\/wp-a\)/,
  );
});

test("TokenReview: a declared waypoint Gateway's service account is that waypoint; an undeclared one is refused", async () => {
  const kube = new FakeKube();
  await new Promise<void>((r) => kube.server.listen(0, '127.0.0.1', () => r()));
  try {
    const status = fixture<{ status: { user: Record<string, unknown> } }>('tokenreview').status;
    kube.review('wp', { ...status, user: { ...status.user, username: 'system:serviceaccount:default:wp-a' } });
    kube.review('other', { ...status, user: { ...status.user, username: 'system:serviceaccount:default:wp-c' } });
    const reviewer = new TokenReviewer(new KubeClient({ server: `http://127.0.0.1:${(kube.server.address() as AddressInfo).port}` }), {
      nodeOfPod: () => undefined,
      isWaypoint: (ns, name) => `${ns}/${name}` === WP_A,
      log,
    });
    const md = (token: string): grpc.Metadata => {
      const m = new grpc.Metadata();
      m.set('authorization', `Bearer ${token}`);
      return m;
    };
    assert.deepEqual(await reviewer.authenticate(md('wp')), { waypoint: WP_A });
    assert.match(
      JSON.stringify(await reviewer.authenticate(md('other'))),
      /wp-c is not a node agent's service account .* nor a declared waypoint Gateway's/,
    );
  } finally {
    kube.server.closeAllConnections();
    kube.server.close();
  }
});
