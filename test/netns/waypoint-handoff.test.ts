// Root: the node tunnel hands traffic to a waypoint. The mesh comes from a
// standalone YAML (parseConfig): a Gateway of class istio-waypoint whose pod
// is n1-p3, a service opted in by its label, a pod opted in by its own, and
// a service opted out with `none`. The "waypoint" is a small HBONE server in
// n1-p3 (not enrolled: its workload has no netns, as a waypoint's pod must
// not be captured) that answers every CONNECT with the authority it was
// asked for and the client identity it verified, so the test proves the
// hand-off without the real waypoint process.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type tls from 'node:tls';
import pino from 'pino';
import { Netns } from '../../src/datapath/netns';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { requestCertificate } from '../../src/identity/cert-manager';
import { peerIdentity, serverTlsOptions } from '../../src/identity/tls';
import { PodAgent } from '../../src/roots/pod-agent';
import { parseConfig } from '../../src/sources/config';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, PODAPP, pinDirFor, requireRoot, testBed } from '../helpers/fixture';
import { waitFor, waitForLine } from '../helpers/proc';
import type { TestPod, Topology } from '../helpers/topology';

const VIA_WAYPOINT = '10.96.0.10';
const OPTED_OUT = '10.96.0.11';
const identity = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

describe('hand-off to a waypoint', () => {
  let topo: Topology;
  let dir: string;
  const cleanup = new Cleanup();
  const logLines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logLines.push(JSON.parse(s) as Record<string, unknown>) });

  /** The mesh as a user would write it; JSON is YAML. */
  function yaml(client: TestPod, echo: TestPod, waypoint: TestPod, other: TestPod): string {
    const pod = (p: TestPod, sa: string, labels: Record<string, string>, enrolled = true) => ({
      uid: p.uid,
      name: `${p.node.name}-${p.name}`,
      namespace: 'default',
      serviceAccount: sa,
      node: p.node.name,
      addresses: [p.ip],
      labels,
      ...(enrolled ? { netns: p.netnsPath, cgroup: p.cgroup } : {}),
    });
    const svc = (name: string, vip: string, app: string, use: string) => ({
      name,
      namespace: 'default',
      hostname: `${name}.default.svc.cluster.local`,
      addresses: [vip],
      ports: [{ port: 80, targetPort: 8080 }],
      selector: { app },
      labels: { 'istio.io/use-waypoint': use },
    });
    return JSON.stringify({
      trustDomain: 'cluster.local',
      ca: { dir: path.join(dir, 'ca') },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: [
        pod(client, 'sleep', { app: 'sleep' }),
        pod(echo, 'echo', { app: 'echo', 'istio.io/use-waypoint': 'waypoint' }),
        pod(waypoint, 'waypoint', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, false),
        pod(other, 'other', { app: 'other' }),
      ],
      services: [svc('echo', VIA_WAYPOINT, 'echo', 'waypoint'), svc('other', OPTED_OUT, 'other', 'none')],
      routes: [
        {
          apiVersion: 'gateway.networking.k8s.io/v1',
          kind: 'Gateway',
          metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'all' } },
          spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
        },
      ],
    });
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 1, podsPerNode: 4 }));
    const [client, echo, waypoint, other] = [topo.pod(1, 1), topo.pod(1, 2), topo.pod(1, 3), topo.pod(1, 4)];
    const ca = await BuiltinCa.open(path.join(dir, 'ca'));
    const config = parseConfig(yaml(client, echo, waypoint, other), 'waypoint-handoff.yaml');

    // The stand-in waypoint: HBONE's TLS with the waypoint's identity, listening inside its pod.
    const cert = await requestCertificate(ca, identity('waypoint'), 600);
    const ns = Netns.open(waypoint.netnsPath);
    const [fd] = ns.listen([{ ip: waypoint.ip, port: 15008 }]);
    ns.close();
    const server = http2.createSecureServer(serverTlsOptions(cert));
    server.on('stream', (stream, headers) => {
      const peer = peerIdentity(stream.session?.socket as tls.TLSSocket, 'cluster.local');
      stream.respond({ ':status': 200 });
      stream.end(`${JSON.stringify({ waypoint: headers[':method'], authority: headers[':authority'], peer })}\n`);
    });
    server.listen({ fd });
    cleanup.add('the stand-in waypoint', () => new Promise((r) => server.close(r)));

    const app = await PodAgent.start({
      config,
      scope: { node: topo.node(1).name },
      podsCgroup: topo.node(1).podsCgroup,
      pinDir: pinDirFor(topo, topo.node(1)),
      certTtlSeconds: 600,
      log,
    });
    cleanup.add('the agent', () => app.stop());
    for (const p of [echo, other]) {
      const whoami = topo.spawnInPod(p, process.execPath, [PODAPP, 'whoami', '8080']);
      await waitForLine(whoami, (l) => l.includes('listening'), `whoami in ${p.uid}`);
    }
  });

  after(() => cleanup.run());

  const saw = (authority: string) =>
    JSON.stringify({ waypoint: 'CONNECT', authority, peer: { identity: identity('sleep') } }) satisfies string;

  test("a service's VIP goes to the waypoint with the VIP:port as authority and the client's identity", async () => {
    const r = await dialFrom(topo, topo.pod(1, 1), VIA_WAYPOINT, 80, 5, 5);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.firstLines, { [saw(`${VIA_WAYPOINT}:80`)]: 5 });
    // The access log names the waypoint; the HBONE leg went to its pod.
    const entry = await waitFor(
      'the access-log line of a connection through the waypoint',
      () => logLines.find((l) => l['dst.addr'] === `${VIA_WAYPOINT}:80` && l.direction === 'outbound'),
      10_000,
      50,
    );
    assert.equal(entry['dst.waypoint'], topo.pod(1, 3).ip);
    assert.equal(entry['dst.hbone_addr'], `${topo.pod(1, 3).ip}:15008`);
    assert.equal(entry['dst.identity'], identity('waypoint'));
  });

  test("a pod's IP, its own label naming a waypoint for all traffic, goes there with podIP:port as authority", async () => {
    const echo = topo.pod(1, 2);
    const r = await dialFrom(topo, topo.pod(1, 1), echo.ip, 8080, 3, 3);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.firstLines, { [saw(`${echo.ip}:8080`)]: 3 });
  });

  test('a service opted out with none goes straight to its endpoint', async () => {
    const other = topo.pod(1, 4);
    const r = await dialFrom(topo, topo.pod(1, 1), OPTED_OUT, 80, 3, 3);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(
      r.firstLines,
      { [JSON.stringify({ local: `${other.ip}:8080`, remote: other.ip })]: 3 },
      'delivered from inside the pod',
    );
  });
});
