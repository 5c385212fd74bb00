// Root: sidecar mode next to ambient nodes. n1-p1 is ambient (node 1's
// agent), n2-p1 has its own `ambit sidecar` running inside the pod (its
// netns and its cgroup, as a sidecar container does), n2-p2 is ambient on
// node 2. The sidecar speaks the same HBONE, so traffic flows both ways
// with each side seeing the other's identity.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { cleanupDatapath } from '../../src/datapath/status';
import { Cleanup, killAndWait, waitExit } from '../helpers/cleanup';
import { CLI, dialFrom, PODAPP, pinDirFor, requireRoot, spawnNodeAgent, testBed, workloadOf, writeMeshYaml } from '../helpers/fixture';
import { must } from '../helpers/must';
import { jsonLines, sh, waitFor, waitForLine } from '../helpers/proc';
import type { Topology } from '../helpers/topology';

describe('sidecar mode', () => {
  let topo: Topology;
  let dir: string;
  let sidecarPins: string;
  const children: ChildProcess[] = [];
  const logs = new Map<string, Record<string, unknown>[]>();
  const cleanup = new Cleanup();
  const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    sidecarPins = `/sys/fs/bpf/${topo.prefix}-sidecar`;
    const config = writeMeshYaml(topo, dir, {
      workloads: topo.pods.map((p) => ({
        ...workloadOf(p),
        serviceAccount: `sa-${p.node.name}-${p.name}`,
        dataplane: p === topo.pod(2, 1) ? 'sidecar' : 'ambient',
      })),
    });
    for (const node of topo.nodes) {
      const agent = spawnNodeAgent(topo, node, ['--config', config]);
      children.push(agent);
      logs.set(node.name, jsonLines(agent));
      await waitForLine(agent, (l) => l.includes('"node ready"'), `agent ${node.name}`);
    }
    const sidecar = topo.spawnInPod(topo.pod(2, 1), process.execPath, [
      CLI,
      'sidecar',
      '--config',
      config,
      '--workload',
      topo.pod(2, 1).uid,
      '--pin-dir',
      sidecarPins,
    ]);
    children.push(sidecar);
    // Its pins are its own, outside the nodes' pin directories: removed once it has stopped.
    cleanup.add(`the sidecar and its pins (${sidecarPins})`, async () => {
      await killAndWait(sidecar);
      cleanupDatapath(sidecarPins);
    });
    logs.set('sidecar', jsonLines(sidecar));
    await waitForLine(sidecar, (l) => l.includes('"sidecar ready"'), 'the sidecar');
    for (const pod of [topo.pod(1, 1), topo.pod(2, 1)]) {
      const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', '8080']);
      await waitForLine(app, (l) => l.includes('listening'), `whoami in ${pod.uid}`);
    }
  });

  after(() => cleanup.run());

  const inboundFrom = (who: string, identity: string) =>
    waitFor(`an inbound log line on ${who} from ${identity}`, () =>
      must(logs.get(who), `the log of ${who}`).find((l) => l.direction === 'inbound' && l['src.identity'] === identity),
    );

  test('the node agent leaves a sidecar pod alone', async () => {
    const status = JSON.parse(
      await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, topo.node(2)), '--json']),
    ) as { links: { pin: string }[] };
    assert.deepEqual(
      status.links.map((l) => l.pin).filter((p) => p.startsWith('netns-')),
      [`netns-${topo.prefix}_n2-p2`],
    );
    const own = JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', sidecarPins, '--json'])) as {
      links: { pin: string; target: string }[];
    };
    assert.deepEqual(own.links.map((l) => l.pin).sort(), [
      'connect4',
      'connect6',
      'getpeername4',
      'getpeername6',
      `netns-${topo.prefix}_n2-p1`,
      'sockops',
    ]);
    const podCgroupId = fs.statSync(topo.pod(2, 1).cgroup).ino;
    assert.ok(
      own.links.filter((l) => !l.pin.startsWith('netns-')).every((l) => l.target === `cgroup id ${podCgroupId}`),
      "attached to the pod's own cgroup",
    );
  });

  test("ambient → sidecar: delivered by the sidecar, which sees the ambient pod's identity", async () => {
    const server = topo.pod(2, 1);
    const r = await dialFrom(topo, topo.pod(1, 1), server.ip, 8080, 20, 5);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.firstLines, { [JSON.stringify({ local: `${server.ip}:8080`, remote: server.ip })]: 20 });
    const line = await inboundFrom('sidecar', id('sa-n1-p1'));
    assert.equal(line['dst.identity'], id('sa-n2-p1'));
  });

  test("sidecar → ambient: captured in the pod by the sidecar's own datapath, the node sees the sidecar pod's identity", async () => {
    const server = topo.pod(1, 1);
    const r = await dialFrom(topo, topo.pod(2, 1), server.ip, 8080, 20, 5);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.peers, { [`${server.ip}:8080`]: 20 });
    await inboundFrom('n1', id('sa-n2-p1'));
    const status = JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', sidecarPins, '--json'])) as {
      counters: Record<string, number>;
    };
    assert.ok((status.counters.CONNECT_REDIRECTED ?? 0) >= 20, "the app's connects were captured");
    assert.ok((status.counters.CONNECT_SKIP_TUNNEL ?? 0) >= 1, "the sidecar's own connects (same cgroup) were not");
  });

  test('after teardown no namespace, cgroup, pin or process remains', async () => {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map(waitExit));
    await cleanup.run();
  });
});
