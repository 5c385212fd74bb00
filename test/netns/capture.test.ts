// Root: the capture itself, with this test process standing in for the
// tunnel (it owns the datapath and the enrolled pods' listeners and answers
// on them), so every assertion sees exactly what the kernel delivered.
// Topology: 2 nodes × 3 pods; p1 and p2 of each node enrolled, p3 not.
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { closeListeners, type EnrolledPod, Enrolment } from '../../src/datapath/enrolment';
import type { Datapath } from '../../src/datapath/loader';
import { listenerServer } from '../../src/datapath/netns';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, dialOutcome, openDatapath, PODAPP, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { sh, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { TestNode, TestPod, Topology } from '../helpers/topology';

describe('capture (connect4 + sockops + getpeername4 + sk_lookup)', () => {
  let topo: Topology;
  /** Each node's datapath and enrolment, by node index - 1. */
  const nodes: { dp: Datapath; enrolment: Enrolment }[] = [];
  const of = (node: TestNode): { dp: Datapath; enrolment: Enrolment } => at(nodes, node.index - 1, 'node datapaths');
  const enrolled = new Map<string, { pod: EnrolledPod; servers: net.Server[] }>();
  const cleanup = new Cleanup();

  /** Every connection accepted on a pod's tunnel sockets answers with what the tunnel learned. */
  function answer(pod: EnrolledPod, dp: Datapath): net.Server[] {
    const outbound = listenerServer(pod.listeners.outbound);
    const plain = listenerServer(pod.listeners.inboundPlain);
    const hbone = listenerServer(pod.listeners.inboundHbone);
    outbound.on('connection', (s: net.Socket) => {
      // A client that reset before this ran has no address left to look up.
      if (!s.remoteAddress || !s.remotePort) return void s.destroy();
      const orig = dp.maps.origDst(pod.podId, s.remoteAddress, s.remotePort);
      s.end(`${JSON.stringify({ at: 'outbound', pod: pod.workload.uid, orig: orig ? `${orig.ip}:${orig.port}` : null })}\n`);
    });
    plain.on('connection', (s: net.Socket) => {
      s.end(`${JSON.stringify({ at: 'plain', pod: pod.workload.uid, local: `${s.localAddress}:${s.localPort}` })}\n`);
    });
    hbone.on('connection', (s: net.Socket) => {
      s.end(`${JSON.stringify({ at: 'hbone', pod: pod.workload.uid, local: `${s.localAddress}:${s.localPort}` })}\n`);
    });
    return [outbound, plain, hbone];
  }

  function enrol(pod: TestPod): EnrolledPod {
    const { dp, enrolment } = of(pod.node);
    const e = enrolment.enrol(workloadOf(pod));
    enrolled.set(pod.uid, { pod: e, servers: answer(e, dp) });
    return e;
  }

  function unenrol(pod: TestPod): void {
    const e = enrolled.get(pod.uid);
    if (!e) return;
    for (const s of e.servers) s.close();
    of(pod.node).enrolment.unenrol(pod.uid);
    enrolled.delete(pod.uid);
  }

  before(async () => {
    requireRoot();
    ({ topo } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    cleanup.add('datapaths', () => {
      for (const pod of topo.pods) unenrol(pod);
      for (const { dp } of nodes.splice(0)) dp.close();
    });
    for (const node of topo.nodes) {
      const dp = openDatapath(topo, node);
      nodes.push({ dp, enrolment: new Enrolment(dp) });
    }
    for (const node of topo.nodes) for (const pod of node.pods.slice(0, 2)) enrol(pod);
  });

  after(() => cleanup.run());

  test("outbound: 1,000 concurrent connects land at the source pod's tunnel with the right original destination", async () => {
    const src = topo.pod(1, 1);
    const cross = topo.pod(2, 1);
    const same = topo.pod(1, 2);
    const [a, b] = await Promise.all([dialFrom(topo, src, cross.ip, 8080, 500, 250), dialFrom(topo, src, same.ip, 9090, 500, 250)]);
    for (const [r, dst] of [
      [a, `${cross.ip}:8080`],
      [b, `${same.ip}:9090`],
    ] as const) {
      assert.equal(r.failed, 0, `failures: ${JSON.stringify(r.errors)}`);
      assert.deepEqual(
        r.firstLines,
        { [JSON.stringify({ at: 'outbound', pod: src.uid, orig: dst })]: 500 },
        'every connection: source pod from the listener, original destination from the map',
      );
      assert.deepEqual(r.peers, { [dst]: 500 }, 'getpeername() shows what the app dialed');
    }
    // Every client socket has closed: sockops dropped both records of each connection.
    await waitFor('original-destination records to be dropped', () => {
      const left = of(topo.node(1)).dp.maps.pendingRecords();
      return left.byCookie === 0 && left.byFlow === 0;
    });
  });

  test('inbound: any port of an enrolled pod lands at :15006 with the original destination; :15008 at the HBONE listener', async () => {
    const client = topo.pod(1, 3); // not enrolled: its connects go out untouched
    const dst = topo.pod(2, 2);
    const plain = await dialFrom(topo, client, dst.ip, 7777);
    assert.deepEqual(plain.firstLines, { [JSON.stringify({ at: 'plain', pod: dst.uid, local: `${dst.ip}:7777` })]: 1 });
    const hbone = await dialFrom(topo, client, dst.ip, 15008);
    assert.deepEqual(hbone.firstLines, { [JSON.stringify({ at: 'hbone', pod: dst.uid, local: `${dst.ip}:15008` })]: 1 });
  });

  test("an enrolled pod may reuse TIME_WAIT ports (the tunnel delivers from the pod's own address)", async () => {
    const read = (pod: TestPod): Promise<string> =>
      sh('nsenter', [`--net=${pod.netnsPath}`, '--', 'cat', '/proc/sys/net/ipv4/tcp_tw_reuse']);
    assert.equal((await read(topo.pod(1, 1))).trim(), '1');
    assert.equal((await read(topo.pod(1, 3))).trim(), '2', 'a pod not in the mesh keeps the kernel default');
  });

  test('a non-enrolled pod is untouched both ways', async () => {
    const server = topo.pod(2, 3);
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    const r = await dialFrom(topo, topo.pod(1, 3), server.ip, 8080);
    assert.deepEqual(
      r.firstLines,
      { [JSON.stringify({ local: `${server.ip}:8080`, remote: topo.pod(1, 3).ip })]: 1 },
      "the app itself answered, seeing the client pod's address",
    );
    app.kill();
  });

  test("with the tunnel's sockets closed, outbound is refused and inbound dropped by sk_lookup (refused, never delivered around the tunnel)", async () => {
    const pod = topo.pod(2, 2);
    const e = must(enrolled.get(pod.uid), `${pod.uid} enrolled`);
    // The real app listens on the pod's 8080: a fail-open datapath would reach it.
    const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    // The tunnel is gone: every server and the agent's own fds of the sockets closed.
    await Promise.all(e.servers.map((s) => new Promise((r) => s.close(r))));
    closeListeners(e.pod);
    const { dp } = of(pod.node);
    const dropsBefore = dp.maps.readCounters().LOOKUP_DROP_NO_SOCKET ?? 0;

    await expectRefusal(
      dialOutcome(topo, pod, topo.pod(1, 3).ip, 8080, 1500),
      { refused: true },
      1500,
      'outbound from a pod whose tunnel is down',
    );
    // sk_lookup's SK_DROP fails the kernel's socket lookup, so the SYN is answered with a reset as if
    // nothing listened: refused at once, never the app's answer and never a hang.
    await expectRefusal(
      dialOutcome(topo, topo.pod(1, 3), pod.ip, 8080, 1500),
      { refused: true },
      1500,
      'inbound to a pod whose tunnel is down',
    );
    assert.ok((dp.maps.readCounters().LOOKUP_DROP_NO_SOCKET ?? 0) > dropsBefore, 'sk_lookup dropped it');
    app.kill();

    // Re-enrol so later tests see a working pod again.
    unenrol(pod);
    enrol(pod);
  });

  test('unenrol restores direct traffic', async () => {
    const pod = topo.pod(1, 2);
    const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    unenrol(pod);
    const inbound = await dialFrom(topo, topo.pod(1, 3), pod.ip, 8080);
    assert.deepEqual(
      inbound.firstLines,
      { [JSON.stringify({ local: `${pod.ip}:8080`, remote: topo.pod(1, 3).ip })]: 1 },
      'inbound reaches the app directly',
    );
    const target = topo.pod(2, 3);
    const server = topo.spawnInPod(target, process.execPath, [PODAPP, 'whoami', '8081']);
    await waitForLine(server, (l) => l.includes('listening'), 'whoami listening');
    const out = await dialFrom(topo, pod, target.ip, 8081);
    assert.deepEqual(
      out.firstLines,
      { [JSON.stringify({ local: `${target.ip}:8081`, remote: pod.ip })]: 1 },
      'outbound goes straight to the destination',
    );
    app.kill();
    server.kill();
  });

  test('after teardown no namespace, cgroup or pin remains', async () => {
    await cleanup.run();
  });
});
