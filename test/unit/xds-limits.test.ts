// xDS under load and under a misbehaving node, over real gRPC and TLS on
// 127.0.0.1 (no root): a 25,000-workload mesh reaches ambit's node client
// and a plain gRPC client with default limits, in parts none larger than
// the budget; the node announces a change only once its last part is in; a
// node that never ACKs costs the server no more state however often the
// mesh changes, and gets the coalesced latest when it does ACK; a stream
// whose token no longer passes is closed with UNAUTHENTICATED.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { type ServerCredentialsPem, serverCredentials } from '../../src/control-plane/tls';
import { DEFAULT_MAX_RESPONSE_BYTES, resourceBytes } from '../../src/control-plane/xds-chunks';
import { type AuthResult, XdsServer, type XdsServerOptions } from '../../src/control-plane/xds-server';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse } from '../../src/protocol/messages';
import { encodedLength, grpcServices, MORE_FOLLOWS, pack, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/protocol/protos';
import { nodeMessage, XdsClient } from '../../src/sources/xds-client';
import type { MeshConfig, Service, Workload } from '../../src/state/types';
import { at, must } from '../helpers/must';
import { TIME_SCALE, waitFor } from '../helpers/proc';
import { ofType, resourcesOf } from '../helpers/xds-resources';

const log = pino({ level: 'silent' });
const RESPONSE = 'envoy.service.discovery.v3.DeltaDiscoveryResponse';
const GRPC_DEFAULT_RECEIVE = 4 * 1024 * 1024;
let dir: string;
let creds: ServerCredentialsPem;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-xds-limits-'));
  creds = await serverCredentials(await BuiltinCa.open(dir), { ips: ['127.0.0.1'] });
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A mesh shaped like a cluster's: n pods in 50 namespaces behind services of 100 pods each, on 100 nodes. */
function mesh(n: number, capacity = 1): MeshConfig {
  const services: Service[] = [];
  const workloads: Workload[] = [];
  for (let i = 0; i < n; i++) {
    const ns = `team-${i % 50}`;
    const app = `app-${Math.floor(i / 100)}`;
    if (i % 100 === 0) {
      services.push({
        name: app,
        namespace: ns,
        hostname: `${app}.${ns}.svc.cluster.local`,
        addresses: [`10.96.${(i / 100) >> 8}.${(i / 100) & 255}`],
        ports: [{ port: 80, targetPort: 8080 }],
        selector: { app },
      });
    }
    const pod = `${app}-7f9c8d${(i % 997).toString(16)}-${(i * 7919).toString(36).padStart(5, 'x').slice(-5)}`;
    workloads.push({
      uid: `Kubernetes//Pod/${ns}/${pod}`,
      name: pod,
      namespace: ns,
      serviceAccount: app,
      node: `node-${i % 100}`,
      addresses: [`10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
      protocol: 'HBONE',
      dataplane: 'ambient',
      labels: { app, version: 'v1' },
      capacity,
      authorizationPolicies: [],
      services: [`${at(services, -1, 'services').namespace}/${at(services, -1, 'services').hostname}`],
    });
  }
  return {
    trustDomain: 'cluster.local',
    ca: { dir: '' },
    nodes: [],
    workloads,
    services,
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
  };
}

async function serve(
  auth: () => AuthResult | Promise<AuthResult>,
  opts: XdsServerOptions = {},
): Promise<{ xds: XdsServer; server: grpc.Server; port: number }> {
  const xds = new XdsServer(auth, log, opts);
  const server = new grpc.Server();
  server.addService(grpcServices().ads.service, xds.handlers());
  const tls = grpc.ServerCredentials.createSsl(
    Buffer.from(creds.rootPem),
    [{ cert_chain: Buffer.from(creds.certPem), private_key: Buffer.from(creds.keyPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', tls, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { xds, server, port };
}

const n1 = nodeMessage({ nodeName: 'n1', podName: 'ambit-n1', podNamespace: 'ambit-system', ip: '127.0.0.1' });
const nodeClient = (port: number): XdsClient =>
  new XdsClient({
    address: `127.0.0.1:${port}`,
    rootsPem: creds.rootPem,
    trustDomain: 'cluster.local',
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    node: n1,
    log,
  });

/** A bare gRPC client with every default (4 MiB receive limit), as ztunnel or grpcio would be out of the box. */
function bareStream(port: number): { call: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>; client: grpc.Client } {
  const Ads = grpcServices().ads;
  const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(creds.rootPem))) as unknown as grpc.Client & {
    DeltaAggregatedResources(): grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  };
  const call = client.DeltaAggregatedResources();
  call.on('error', () => undefined);
  for (const [i, typeUrl] of [TYPE_ADDRESS, TYPE_AUTHORIZATION].entries()) {
    call.write({
      node: i === 0 ? n1 : undefined,
      type_url: typeUrl,
      resource_names_subscribe: [],
      resource_names_unsubscribe: [],
      initial_resource_versions: {},
      response_nonce: '',
    });
  }
  return { call, client };
}

const ack = (res: DeltaDiscoveryResponse): DeltaDiscoveryRequest => ({
  type_url: res.type_url,
  response_nonce: res.nonce,
  resource_names_subscribe: [],
  resource_names_unsubscribe: [],
  initial_resource_versions: {},
});

test('a 25,000-workload mesh syncs to the node in parts, none over the budget', async () => {
  const cfg = mesh(25_000);
  const resources = resourcesOf(cfg);
  const whole = [...ofType(resources, TYPE_ADDRESS).values()].reduce((n, r) => n + resourceBytes(r), 0);
  assert.ok(
    whole > GRPC_DEFAULT_RECEIVE,
    `the whole Address type (${whole} bytes) exceeds gRPC's default receive limit: one response could not be received`,
  );
  const { xds, server, port } = await serve(() => ({ node: 'n1' }));
  xds.update(resources);
  const client = nodeClient(port);
  let atSync = -1;
  client.once('synced', () => {
    atSync = client.state().workloads.length;
  });
  const started = Date.now();
  try {
    client.start();
    await client.whenSynced(60_000 * TIME_SCALE);
    const ms = Date.now() - started;
    assert.equal(atSync, 25_000, 'synced only once every part was in');
    assert.equal(client.state().services.length, 250);
    assert.ok(xds.stats.parts >= 1, 'the update went in parts');
    assert.ok(xds.stats.maxResponseBytes <= DEFAULT_MAX_RESPONSE_BYTES, `largest response ${xds.stats.maxResponseBytes} bytes`);
    assert.equal(client.stats.nacks, 0);
    console.log(
      `# 25,000 workloads: ${whole} bytes of Address resources, ${xds.stats.pushes} responses (largest ${xds.stats.maxResponseBytes} bytes), synced in ${ms} ms`,
    );
  } finally {
    client.stop();
    server.forceShutdown();
  }
});

test('a gRPC client with default limits (4 MiB) receives the 25,000-workload mesh, each response under the budget as encoded', async () => {
  const { xds, server, port } = await serve(() => ({ node: 'n1' }));
  xds.update(resourcesOf(mesh(25_000)));
  const { call, client } = bareStream(port);
  const got = new Map<string, number>();
  const done = new Set<string>();
  const sizes: number[] = [];
  let failure: string | undefined;
  call.on('error', (err: grpc.ServiceError) => {
    failure = `${err.code}: ${err.details}`;
  });
  call.on('data', (res: DeltaDiscoveryResponse) => {
    sizes.push(encodedLength(RESPONSE, res));
    got.set(res.type_url, (got.get(res.type_url) ?? 0) + res.resources.length);
    if (res.system_version_info !== MORE_FOLLOWS) done.add(res.type_url);
    call.write(ack(res));
  });
  try {
    await waitFor(
      'both types complete',
      () => {
        if (failure) throw new Error(failure);
        return done.size === 2;
      },
      60_000,
    );
    assert.equal(got.get(TYPE_ADDRESS), 25_250);
    assert.ok(Math.max(...sizes) <= DEFAULT_MAX_RESPONSE_BYTES, `largest encoded response ${Math.max(...sizes)} bytes`);
  } finally {
    call.cancel();
    client.close();
    server.forceShutdown();
  }
});

test('a change that comes in parts reaches the data plane once, complete; a NACKed part does not stop the rest', async () => {
  const { xds, server, port } = await serve(() => ({ node: 'n1' }), { maxResponseBytes: 8 * 1024 });
  xds.update(resourcesOf(mesh(600)));
  const client = nodeClient(port);
  const seen: number[] = [];
  client.on('changed', (st: { workloads: Workload[] }) => seen.push(st.workloads.filter((w) => w.capacity === 2).length));
  try {
    client.start();
    await client.whenSynced(10_000 * TIME_SCALE);
    assert.equal(client.state().workloads.length, 600);
    const partsBefore = xds.stats.parts;
    assert.ok(partsBefore >= 3, `the first sync came in parts (${partsBefore + 2} responses)`);
    seen.length = 0;
    const changed = resourcesOf(mesh(600, 2));
    xds.update(changed);
    await waitFor('the change', () => seen.length > 0);
    assert.deepEqual(seen, [600], 'one announcement, with every workload changed');
    assert.ok(xds.stats.parts > partsBefore);

    // One bad resource: the part holding it is refused, every other part is applied, and the refusal does not loop.
    const broken = resourcesOf(mesh(600, 3));
    const victim = at([...ofType(broken, TYPE_ADDRESS).values()], 0, 'workload resources');
    victim.resource = pack(TYPE_ADDRESS, {
      workload: { uid: victim.name, namespace: 'team-0', service_account: 'app-0', addresses: [Buffer.from([10, 0, 0])] },
    });
    victim.version = 'broken';
    seen.length = 0;
    xds.update(broken);
    await waitFor('the rest of the change', () => client.state().workloads.filter((w) => w.capacity === 3).length > 550);
    await waitFor('the update to settle', () => xds.streamStates()[0]?.types.every((t) => t.inFlight === 0));
    assert.equal(client.stats.nacks, 1, 'the refused part was not offered again');
    assert.ok((xds.streamStates()[0]?.types.find((t) => t.typeUrl === TYPE_ADDRESS)?.refused ?? 0) > 0, 'a refused part counted');
    assert.equal(seen.length, 1, 'the applied parts were announced once');
  } finally {
    client.stop();
    server.forceShutdown();
  }
});

test('a node that never ACKs keeps the server state bounded; its ACK brings the latest state at once', async () => {
  const { xds, server, port } = await serve(() => ({ node: 'n1' }));
  xds.update(resourcesOf(mesh(2_000)));
  const { call, client } = bareStream(port);
  const responses: DeltaDiscoveryResponse[] = [];
  call.on('data', (res: DeltaDiscoveryResponse) => responses.push(res));
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  try {
    await waitFor('the first responses', () => responses.length === 2);
    const variants = [1, 2, 3, 4].map((c) => resourcesOf(mesh(2_000, c)));
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    for (let i = 0; i < 400; i++) xds.update(at(variants, i % 4, 'variants'));
    gc();
    const grew = process.memoryUsage().heapUsed - heapBefore;
    console.log(
      `# never-ACKing node, 400 updates of 2,000 workloads: heap grew ${(grew / 1024).toFixed(0)} KiB, ${xds.stats.pushes} responses sent`,
    );
    assert.ok(grew < 8 * 1024 * 1024, `heap grew ${grew} bytes`);
    assert.equal(xds.stats.pushes, 2, 'nothing more was sent to a node that has not ACKed');
    const address = must(
      xds.streamStates()[0]?.types.find((t) => t.typeUrl === TYPE_ADDRESS),
      "the stream's address state",
    );
    console.log(`# per-stream state: ${JSON.stringify(address)}`);
    assert.deepEqual(
      { inFlight: address.inFlight, held: address.held },
      { inFlight: 1, held: 2_020 },
      'one response in flight, one version per resource',
    );
    assert.ok(address.undo <= 2_020);
    await waitFor('the stream to deliver', () => responses.length === 2);

    // The ACK: the 400 updates coalesce into what is served now (capacity 4), nothing in between.
    call.write(
      ack(
        must(
          responses.find((r) => r.type_url === TYPE_ADDRESS),
          'an address response',
        ),
      ),
    );
    await waitFor('the coalesced update', () => responses.length === 3);
    assert.equal(responses[2]?.resources.length, 2_000);
    assert.equal(xds.stats.pushes, 3);
  } finally {
    call.cancel();
    client.close();
    server.forceShutdown();
  }
});

test('a stream whose token no longer passes is closed with UNAUTHENTICATED; a check that could not be made closes nothing', async () => {
  let verdict: AuthResult = { node: 'n1' };
  const { xds, server, port } = await serve(() => verdict);
  xds.update(resourcesOf(mesh(10)));
  const client = nodeClient(port);
  const lost: string[] = [];
  client.on('disconnected', (why: string) => lost.push(why));
  try {
    client.start();
    await client.whenSynced(10_000 * TIME_SCALE);
    verdict = { error: 'the token could not be reviewed: connect ECONNREFUSED', transient: true };
    assert.equal(await xds.recheck(), 0);
    assert.equal(client.connected, true);
    verdict = { error: 'unknown bearer token (no configured node has it)' };
    const t0 = Date.now();
    assert.equal(await xds.recheck(), 1);
    await waitFor('the client to see the stream closed', () => lost.length > 0, 5_000);
    assert.match(lost[0] ?? '', /^UNAUTHENTICATED: credentials no longer accepted: unknown bearer token/);
    console.log(`# revoked stream seen closed by the node ${Date.now() - t0} ms after the re-check`);
    assert.equal(xds.streamStates().length, 0);
  } finally {
    client.stop();
    server.forceShutdown();
  }
});
