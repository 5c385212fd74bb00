// Root: `ambit node` as a real process per node (in the node's netns, as a
// DaemonSet pod runs on the host), with the plain relay as its tunnel.
// Covers the end-to-end path, agent restarts (exactly one attachment of each
// program, capture keeps working) and `ambit datapath status|cleanup`.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { assertNothingLeft, CLI, cleanupPins, dialFrom, PODAPP, pinDirFor, requireRoot, waitExit, workloadOf } from '../helpers/fixture';
import { sh, waitForLine } from '../helpers/proc';
import { Topology, type TestNode } from '../helpers/topology';

interface BpftoolLink { id: number; prog_id: number; type: string; cgroup_id?: number; netns_ino?: number }

describe('ambit node (agent process with the plain relay)', () => {
  let topo: Topology;
  let configFile: string;
  const agents = new Map<string, ChildProcess>();

  async function startAgent(node: TestNode): Promise<string> {
    const child = topo.spawnInNode(node, process.execPath, [CLI, 'node', '--config', configFile, '--node', node.name, '--pods-cgroup', node.podsCgroup, '--pin-dir', pinDirFor(topo, node)]);
    agents.set(node.name, child);
    const attached = waitForLine(child, (l) => l.includes('"datapath attached"'), `agent ${node.name} attached`);
    await waitForLine(child, (l) => l.includes('"node ready"'), `agent ${node.name} ready`);
    return attached;
  }

  async function stopAgent(node: TestNode, signal: NodeJS.Signals): Promise<void> {
    const child = agents.get(node.name);
    if (!child) return;
    child.kill(signal);
    await waitExit(child);
    agents.delete(node.name);
  }

  before(async () => {
    requireRoot();
    topo = await Topology.create({ nodes: 2, podsPerNode: 3 });
    const workloads = topo.pods.map((p) => ({ ...workloadOf(p), protocol: p.name === 'p3' ? 'NONE' : 'HBONE' }));
    configFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-`)), 'mesh.yaml');
    fs.writeFileSync(configFile, YAML.stringify({
      trustDomain: 'cluster.local',
      ca: { dir: path.join(path.dirname(configFile), 'ca') },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads,
    }));
    for (const node of topo.nodes) await startAgent(node);
  });

  after(async () => {
    for (const node of topo?.nodes ?? []) await stopAgent(node, 'SIGKILL');
    if (topo) {
      await topo.destroy();
      cleanupPins(topo);
      fs.rmSync(path.dirname(configFile), { recursive: true, force: true });
    }
  });

  test('cross-node and same-node connections go through both nodes\' relays', async () => {
    const server = topo.pod(2, 1);
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    for (const client of [topo.pod(1, 1), topo.pod(2, 2)]) {
      const r = await dialFrom(topo, client, server.ip, 8080, 200, 50);
      assert.equal(r.failed, 0, JSON.stringify(r.errors));
      assert.deepEqual(r.peers, { [`${server.ip}:8080`]: 200 });
      // Delivered from inside the server pod by its node's inbound relay.
      assert.deepEqual(r.firstLines, { [JSON.stringify({ local: `${server.ip}:8080`, remote: server.ip })]: 200 });
    }
    app.kill();
  });

  test('an agent restart reuses its pinned state: one attachment of each program, capture keeps working', async () => {
    const node = topo.nodes[0];
    const server = topo.pod(2, 3); // not in the mesh: answers directly
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');

    await stopAgent(node, 'SIGKILL');
    const down = await dialFrom(topo, topo.pod(1, 1), server.ip, 8080);
    assert.deepEqual(down.errors, { ECONNREFUSED: 1 }, 'while the agent is down, outbound fails closed');

    for (let i = 0; i < 2; i++) {
      const attached = JSON.parse(await startAgent(node)) as { attachments: { link: string; action: string }[] };
      assert.deepEqual(attached.attachments.map((a) => a.action), ['reused', 'reused', 'reused']);
      if (i === 0) await stopAgent(node, 'SIGTERM');
    }

    const links = JSON.parse(await sh('bpftool', ['link', 'show', '--json'])) as BpftoolLink[];
    const cgroupId = fs.statSync(node.podsCgroup).ino;
    assert.equal(links.filter((l) => l.cgroup_id === cgroupId).length, 3, 'connect4, sockops, getpeername4 once each on the pods cgroup');
    for (const pod of node.pods.slice(0, 2)) {
      const ino = fs.statSync(pod.netnsPath).ino;
      assert.equal(links.filter((l) => l.netns_ino === ino).length, 1, `one sk_lookup link on ${pod.netns}`);
    }
    assert.equal(links.filter((l) => l.netns_ino === fs.statSync(node.pods[2].netnsPath).ino).length, 0, 'none on the non-mesh pod');

    const r = await dialFrom(topo, topo.pod(1, 1), server.ip, 8080, 100, 20);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.firstLines, { [JSON.stringify({ local: `${server.ip}:8080`, remote: node.wireIp })]: 100 }, 'relayed from the node, as before the restart');
    app.kill();
  });

  test('ambit datapath status shows the attachments and counters; cleanup removes every pin', async () => {
    const node = topo.nodes[0];
    const pinDir = pinDirFor(topo, node);
    const status = JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDir, '--json'])) as {
      links: { pin: string; program: string }[]; enrolledCgroups: number; counters: Record<string, number>;
    };
    assert.deepEqual(status.links.map((l) => l.pin).sort(), ['connect4', 'getpeername4', `netns-${topo.prefix}_n1-p1`, `netns-${topo.prefix}_n1-p2`, 'sockops']);
    assert.equal(status.enrolledCgroups, 2);
    assert.ok(status.counters.CONNECT_REDIRECTED >= 100, `redirect counter ${status.counters.CONNECT_REDIRECTED}`);

    await stopAgent(node, 'SIGTERM');
    const out = await sh(process.execPath, [CLI, 'datapath', 'cleanup', '--pin-dir', pinDir]);
    assert.match(out, /removed \d+ pins/);
    assert.equal(fs.existsSync(pinDir), false);
    const links = JSON.parse(await sh('bpftool', ['link', 'show', '--json'])) as BpftoolLink[];
    assert.equal(links.filter((l) => l.cgroup_id === fs.statSync(node.podsCgroup).ino).length, 0, 'cleanup detached the cgroup programs');
  });

  test('after teardown no namespace, cgroup, pin or agent process remains', async () => {
    for (const node of topo.nodes) await stopAgent(node, 'SIGTERM');
    await topo.destroy();
    cleanupPins(topo);
    assertNothingLeft(topo);
  });
});
