// Root: kubelet probes under STRICT. A PeerAuthentication STRICT refuses
// plaintext, and the kubelet probes in plaintext from the node itself: a
// connection whose other end is a socket of the node's own netns reaches
// the app without policy, and nothing from elsewhere does — not a pod of
// the same node outside the mesh, not another node, not another node that
// sends from the node's own address. Node n1 runs the tunnel in the agent
// (--workers 0), n2 in a tunnel worker (--workers 1), which learns the
// setting over IPC. Pod p1 of each node is in the mesh, p2 is not.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Cleanup } from '../helpers/cleanup';
import {
  connectionFailures,
  httpInNetns,
  PODAPP,
  requireRoot,
  sample,
  spawnNodeAgent,
  tcpAttempt,
  testBed,
  workloadOf,
  writeMeshYaml,
} from '../helpers/fixture';
import { must } from '../helpers/must';
import { collect, jsonLines, TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal, type Outcome } from '../helpers/refusal';
import type { TestNode, Topology } from '../helpers/topology';

const WORKERS: Record<string, number> = { n1: 0, n2: 1 };
const APP_PORT = 8080;
/** What every pod-facing veth of a test node holds (topology.ts): the source the node's own connections to its pods get. */
const POD_GATEWAY = '169.254.1.1';
const REQUEST = `GET /ready HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n`;

describe('kubelet probes under STRICT', () => {
  let topo: Topology;
  const cleanup = new Cleanup();
  const logs = new Map<string, Record<string, unknown>[]>();

  const other = (node: TestNode): TestNode =>
    must(
      topo.nodes.find((n) => n !== node),
      `a node other than ${node.name}`,
    );

  async function exempted(node: TestNode): Promise<number> {
    const text = (await httpInNetns(node, '127.0.0.1', 15020, 'GET', '/metrics')).body;
    return sample(text, 'ambit_node_exempt_connections_total', { via: 'node_socket' }) ?? 0;
  }

  /** A TCP connection from a netns bound to a source address of our choosing, as a child in that node's netns. */
  async function fromAddress(node: TestNode, source: string, ip: string, port: number, timeoutMs: number): Promise<Outcome> {
    const script = `
      const s = require('node:net').connect({ host: ${JSON.stringify(ip)}, port: ${port}, localAddress: ${JSON.stringify(source)} });
      const done = (o) => { console.log(o); s.destroy(); process.exit(0); };
      s.setTimeout(${timeoutMs * TIME_SCALE}, () => done('timeout'));
      s.on('connect', () => s.write(${JSON.stringify(REQUEST)}));
      s.once('data', () => done('connected'));
      s.on('end', () => done('closed'));
      s.on('error', (e) => done(e.code === 'ECONNRESET' ? 'reset' : e.code === 'ECONNREFUSED' ? 'refused' : 'error ' + e.code));`;
    const r = await collect(topo.spawnInNode(node, process.execPath, ['-e', script]));
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  }

  before(async () => {
    requireRoot();
    let dir: string;
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    const mesh = topo.nodes.map((n) => must(n.pods[0], `p1 of ${n.name}`));
    const configFile = writeMeshYaml(topo, dir, {
      // authorizationPolicies is the store's field (policies assigned), not one the YAML takes.
      workloads: mesh.map((p) => {
        const { authorizationPolicies: _, ...w } = workloadOf(p);
        return w;
      }),
      policies: [
        {
          apiVersion: 'security.istio.io/v1beta1',
          kind: 'PeerAuthentication',
          metadata: { name: 'strict', namespace: 'default' },
          spec: { mtls: { mode: 'STRICT' } },
        },
      ],
    });
    for (const node of topo.nodes) {
      const workers = must(WORKERS[node.name], `--workers of ${node.name}`);
      const child = spawnNodeAgent(topo, node, ['--config', configFile, '--workers', String(workers)], { AMBIT_LOG_LEVEL: 'debug' });
      logs.set(node.name, jsonLines(child));
      await waitForLine(child, (l) => l.includes('"node ready"'), `agent ${node.name}`);
    }
    for (const pod of topo.pods) {
      const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'http', String(APP_PORT), pod.uid]);
      await waitForLine(app, (l) => l.includes('listening'), `http app in ${pod.uid}`);
    }
    // Serving: the mesh pod answers the node (a worker may take the pod a moment after "ready").
    for (const node of topo.nodes) {
      const p1 = must(node.pods[0], `p1 of ${node.name}`);
      await waitFor(
        `${p1.uid} answering its node under STRICT`,
        async () => (await httpInNetns(node, p1.ip, APP_PORT, 'GET', '/').catch(() => ({ status: 0 }))).status === 200,
      );
    }
  });

  after(() => cleanup.run());

  for (const [name, workers] of Object.entries(WORKERS)) {
    test(`${name} (--workers ${workers}): an HTTP GET from the node's own netns reaches the app, counted as exempt`, async () => {
      const node = topo.nodes.find((n) => n.name === name) ?? assert.fail(name);
      const p1 = must(node.pods[0], 'p1');
      const before = await exempted(node);
      const r = await httpInNetns(node, p1.ip, APP_PORT, 'GET', '/healthz');
      assert.equal(r.status, 200, r.body);
      assert.equal((JSON.parse(r.body) as { name: string; path: string }).path, '/healthz');
      await waitFor('the exemption counted', async () => (await exempted(node)) >= before + 1);
      const line = must(logs.get(name), 'logs').find((l) => l.msg === 'connection from the node: no policy applies');
      assert.equal(line?.via, 'node_socket', 'logged at debug');
      assert.match(
        String(line?.src),
        new RegExp(`^${POD_GATEWAY.replaceAll('.', '\\.')}:`),
        "the node's connections to its pods leave from the gateway address",
      );
    });

    test(`${name}: the same request from a pod of the node outside the mesh is refused by STRICT`, async () => {
      const node = topo.nodes.find((n) => n.name === name) ?? assert.fail(name);
      const [p1, p2] = [must(node.pods[0], 'p1'), must(node.pods[1], 'p2')];
      const denied = await connectionFailures(node, 'inbound', 'denied');
      const exemptBefore = await exempted(node);
      await expectRefusal(tcpAttempt(p2.netnsPath, p1.ip, APP_PORT, REQUEST), [{ reset: true }, { closed: true }], 5000, 'a pod');
      await waitFor('the denial counted', async () => (await connectionFailures(node, 'inbound', 'denied')) >= denied + 1);
      assert.equal(await exempted(node), exemptBefore, 'not exempt');
    });

    test(`${name}: the same request from the other node is refused by STRICT`, async () => {
      const node = topo.nodes.find((n) => n.name === name) ?? assert.fail(name);
      const p1 = must(node.pods[0], 'p1');
      const denied = await connectionFailures(node, 'inbound', 'denied');
      await expectRefusal(tcpAttempt(other(node).netnsPath, p1.ip, APP_PORT, REQUEST), [{ reset: true }, { closed: true }], 5000, 'a node');
      await waitFor('the denial counted', async () => (await connectionFailures(node, 'inbound', 'denied')) >= denied + 1);
    });

    test(`${name}: the other node sending from the node's own address (${POD_GATEWAY}, its pods' gateway) never connects`, async () => {
      const node = topo.nodes.find((n) => n.name === name) ?? assert.fail(name);
      const p1 = must(node.pods[0], 'p1');
      const exemptBefore = await exempted(node);
      // The other node holds that address too (its own pods' gateway), so it can bind to it; the node drops the SYN as a martian.
      await expectRefusal(fromAddress(other(node), POD_GATEWAY, p1.ip, APP_PORT, 2000), { dropped: true }, 8000, 'a forged source');
      assert.equal(await exempted(node), exemptBefore, 'not exempt');
    });
  }
});
