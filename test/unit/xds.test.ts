// Delta xDS over real gRPC and TLS on 127.0.0.1 (no root): ambit's server
// and client, the mesh state encoded as resources and decoded back, a
// malformed resource NACKed and rolled back on the server, only changes
// pushed, and a reconnect that announces what the node holds so that only
// the difference comes back.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { type ServerCredentialsPem, serverCredentials } from '../../src/control-plane/tls';
import { XdsServer } from '../../src/control-plane/xds-server';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import type { AddressMessage, AuthorizationMessage } from '../../src/protocol/messages';
import { grpcServices, pack, TYPE_ADDRESS, TYPE_AUTHORIZATION, unpack } from '../../src/protocol/protos';
import { parseConfig } from '../../src/sources/config';
import { nodeMessage, XdsClient } from '../../src/sources/xds-client';
import { addressFromMessage, authorizationFromMessage } from '../../src/sources/xds-resources';
import { waitFor } from '../helpers/proc';
import { ofType, resource, resourcesOf } from '../helpers/xds-resources';

const log = pino({ level: 'silent' });
const YAML_TEXT = (extraPolicy = ''): string => `
trustDomain: cluster.local
nodes: [{ name: n1, address: 10.0.0.1 }, { name: n2, address: 10.0.0.2 }]
workloads:
  - { uid: default/sleep, name: sleep, namespace: default, serviceAccount: sleep, node: n1, addresses: [10.200.1.11], labels: { app: sleep, version: v1 } }
  - { uid: default/echo, name: echo, namespace: default, serviceAccount: echo, node: n2, addresses: [10.200.2.11], labels: { app: echo }, capacity: 3 }
  - { uid: default/legacy, name: legacy, namespace: default, serviceAccount: legacy, node: n2, addresses: [10.200.2.12], protocol: NONE }
services:
  - { name: echo, namespace: default, hostname: echo.default.svc.cluster.local, addresses: [10.96.0.10], ports: [{ port: 80, targetPort: 8080 }], selector: { app: echo } }
policies:
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: { name: echo-from-sleep, namespace: default }
    spec:
      selector: { matchLabels: { app: echo } }
      rules: [{ from: [{ source: { principals: [cluster.local/ns/default/sa/sleep], ipBlocks: [10.200.0.0/16] } }], to: [{ operation: { ports: ["8080"] } }] }]
${extraPolicy}`;
const DENY_LEGACY = `  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: { name: deny-legacy, namespace: default }
    spec: { action: DENY, rules: [{ from: [{ source: { notPrincipals: ["*"] } }] }] }`;

let dir: string;
let creds: ServerCredentialsPem;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-xds-'));
  creds = await serverCredentials(await BuiltinCa.open(dir), { ips: ['127.0.0.1'] });
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

async function startServer(xds: XdsServer, port = 0): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(grpcServices().ads.service, xds.handlers());
  const tls = grpc.ServerCredentials.createSsl(
    Buffer.from(creds.rootPem),
    [{ cert_chain: Buffer.from(creds.certPem), private_key: Buffer.from(creds.keyPem) }],
    false,
  );
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, tls, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port: bound };
}

function clientFor(port: number): XdsClient {
  return new XdsClient({
    address: `127.0.0.1:${port}`,
    rootsPem: creds.rootPem,
    trustDomain: 'cluster.local',
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    log,
    node: nodeMessage({ nodeName: 'n1', podName: 'ambit-n1', podNamespace: 'ambit-system', ip: '127.0.0.1' }),
  });
}

const anyNode = (): { node: string } => ({ node: 'n1' });

test('the mesh state survives encoding as resources and decoding, resource by resource', () => {
  const cfg = parseConfig(YAML_TEXT(DENY_LEGACY));
  const res = resourcesOf(cfg);
  assert.deepEqual([...ofType(res, TYPE_ADDRESS).keys()].sort(), [
    'default/echo',
    'default/echo.default.svc.cluster.local',
    'default/legacy',
    'default/sleep',
  ]);
  const echo = addressFromMessage(
    'default/echo',
    unpack<AddressMessage>(resource(res, TYPE_ADDRESS, 'default/echo').resource),
    'cluster.local',
  );
  assert.ok('workload' in echo);
  assert.deepEqual(
    { ...echo.workload },
    {
      uid: 'default/echo',
      name: 'echo',
      namespace: 'default',
      serviceAccount: 'echo',
      node: 'n2',
      addresses: ['10.200.2.11'],
      protocol: 'HBONE',
      dataplane: 'ambient',
      labels: { app: 'echo', version: 'latest' },
      capacity: 3,
      trustDomain: undefined,
      services: ['default/echo.default.svc.cluster.local'],
      authorizationPolicies: ['default/echo-from-sleep'],
    },
  );
  const legacy = addressFromMessage(
    'default/legacy',
    unpack<AddressMessage>(resource(res, TYPE_ADDRESS, 'default/legacy').resource),
    'cluster.local',
  );
  assert.equal('workload' in legacy && legacy.workload.protocol, 'NONE');
  const svc = addressFromMessage(
    'default/echo.default.svc.cluster.local',
    unpack<AddressMessage>(resource(res, TYPE_ADDRESS, 'default/echo.default.svc.cluster.local').resource),
    'cluster.local',
  );
  assert.deepEqual(svc, {
    service: {
      name: 'echo',
      namespace: 'default',
      hostname: 'echo.default.svc.cluster.local',
      addresses: ['10.96.0.10'],
      ports: [{ port: 80, targetPort: 8080 }],
      selector: {},
    },
  });
  for (const p of cfg.policies) {
    const key = `${p.namespace}/${p.name}`;
    assert.deepEqual(
      authorizationFromMessage(key, unpack<AuthorizationMessage>(resource(res, TYPE_AUTHORIZATION, key).resource)),
      p,
      `${key} round-trips`,
    );
  }
  // Same content, same version: only real changes are pushed.
  assert.equal(
    resource(resourcesOf(parseConfig(YAML_TEXT(DENY_LEGACY))), TYPE_ADDRESS, 'default/sleep').version,
    resource(res, TYPE_ADDRESS, 'default/sleep').version,
  );
});

test('decoding names the resource and the field of what is wrong', () => {
  const bad = (m: object): string => {
    try {
      addressFromMessage('default/x', unpack<AddressMessage>(pack(TYPE_ADDRESS, m)), 'cluster.local');
      return 'accepted';
    } catch (err) {
      return (err as Error).message;
    }
  };
  assert.equal(
    bad({ workload: { uid: 'default/x', namespace: 'default', service_account: 'x', addresses: [Buffer.from([1, 2, 3])] } }),
    'default/x: addresses[0] "010203" is not an IP address: 4 (IPv4) or 16 (IPv6) bytes expected',
  );
  assert.match(
    bad({ workload: { uid: 'default/y', namespace: 'default', service_account: 'x' } }),
    /^default\/x: uid "default\/y" must equal the resource name/,
  );
  assert.match(bad({ workload: { uid: 'default/x', namespace: 'default' } }), /service_account "" must be set/);
  assert.match(bad({}), /is neither a workload nor a service/);
});

test('sync, push of changes only, NACK with rollback, and a reconnect that sends only the difference', async () => {
  let cfg = parseConfig(YAML_TEXT());
  const xds = new XdsServer(anyNode, log);
  xds.update(resourcesOf(cfg));
  let { server, port } = await startServer(xds);
  const client = clientFor(port);
  const rejected: string[] = [];
  client.on('rejected', (why: string) => rejected.push(why));
  try {
    client.start();
    await client.whenSynced(5000);
    assert.deepEqual(
      client
        .state()
        .workloads.map((w) => w.uid)
        .sort(),
      ['default/echo', 'default/legacy', 'default/sleep'],
    );
    assert.deepEqual(
      client.state().policies.map((p) => p.name),
      ['echo-from-sleep'],
    );
    assert.equal(xds.stats.resourcesSent, 5, 'first sync: 4 addresses and 1 policy');
    await waitFor('both ACKs', () => xds.stats.acks === 2);

    // A new policy: only it travels.
    cfg = parseConfig(YAML_TEXT(DENY_LEGACY));
    xds.update(resourcesOf(cfg));
    await waitFor('the new policy', () => client.state().policies.length === 2);
    assert.equal(xds.stats.resourcesSent, 6, 'one resource pushed');

    // A malformed workload: NACKed, the node keeps the last good one, the server rolls back.
    const broken = resourcesOf(cfg);
    ofType(broken, TYPE_ADDRESS).set('default/echo', {
      name: 'default/echo',
      version: 'broken',
      resource: pack(TYPE_ADDRESS, {
        workload: { uid: 'default/echo', namespace: 'default', service_account: 'echo', addresses: [Buffer.from([10, 0, 0])] },
      }),
    });
    xds.update(broken);
    await waitFor('the NACK', () => xds.stats.nacks === 1);
    assert.match(rejected[0] ?? '', /^default\/echo: addresses\[0\] "0a0000" is not an IP address/);
    assert.deepEqual(
      client.state().workloads.find((w) => w.uid === 'default/echo')?.addresses,
      ['10.200.2.11'],
      'the last good state is kept',
    );
    // Rolled back: the server knows the node still holds the good version, so the same bad one is offered (and refused) again.
    xds.update(broken);
    await waitFor('the second NACK', () => xds.stats.nacks === 2);
    assert.equal(xds.stats.resourcesSent, 8);
    assert.equal(client.stats.nacks, 2);
    xds.update(resourcesOf(cfg));

    // The server goes away; a new one with one change comes back on the same port.
    const versionsBefore = client.stats.connects;
    await new Promise<void>((resolve) => {
      xds.close();
      server.forceShutdown();
      resolve();
    });
    await waitFor('the client to notice', () => !client.connected);
    const xds2 = new XdsServer(anyNode, log);
    const changed = parseConfig(YAML_TEXT(DENY_LEGACY).replace('capacity: 3', 'capacity: 5'));
    xds2.update(resourcesOf(changed));
    ({ server } = await startServer(xds2, port));
    await waitFor('the reconnect and resync', () => client.state().workloads.find((w) => w.uid === 'default/echo')?.capacity === 5, 10_000);
    assert.ok(client.stats.connects > versionsBefore);
    assert.equal(xds2.stats.resourcesSent, 1, 'only the changed workload came back: the client announced what it held');
    assert.equal(client.state().workloads.length, 3);
  } finally {
    client.stop();
    server.forceShutdown();
  }
});
