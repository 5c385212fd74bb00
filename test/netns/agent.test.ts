// Root: `ambit node` as a real process per node (in the node's netns, as a
// DaemonSet pod runs on the host). Covers the end-to-end path, live
// configuration changes, agent restarts (exactly one attachment of each
// program, capture keeps working) and `ambit datapath status|cleanup`.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { Cleanup, waitExit } from '../helpers/cleanup';
import {
  CLI,
  dialFrom,
  dialOutcome,
  httpInNetns,
  PODAPP,
  pinDirFor,
  requireRoot,
  spawnNodeAgent,
  testBed,
  untilReady,
  workloadOf,
  writeMeshYaml,
} from '../helpers/fixture';
import { must } from '../helpers/must';
import { sh, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { TestNode, Topology } from '../helpers/topology';

interface BpftoolLink {
  id: number;
  prog_id: number;
  type: string;
  cgroup_id?: number;
  netns_ino?: number;
}

describe('ambit node (agent process)', () => {
  let topo: Topology;
  let dir: string;
  let configFile: string;
  const agents = new Map<string, ChildProcess>();
  const cleanup = new Cleanup();

  async function startAgent(node: TestNode): Promise<string> {
    const child = spawnNodeAgent(topo, node, ['--config', configFile]);
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
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    const workloads = topo.pods.map((p) => ({ ...workloadOf(p), protocol: p.name === 'p3' ? 'NONE' : 'HBONE' }));
    configFile = writeMeshYaml(topo, dir, { workloads });
    for (const node of topo.nodes) await startAgent(node);
  });

  after(() => cleanup.run());

  test("cross-node and same-node connections go through both nodes' tunnels", async () => {
    const server = topo.pod(2, 1);
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    for (const client of [topo.pod(1, 1), topo.pod(2, 2)]) {
      const r = await dialFrom(topo, client, server.ip, 8080, 200, 50);
      assert.equal(r.failed, 0, JSON.stringify(r.errors));
      assert.deepEqual(r.peers, { [`${server.ip}:8080`]: 200 });
      // Delivered from inside the server pod by its node's tunnel.
      assert.deepEqual(r.firstLines, { [JSON.stringify({ local: `${server.ip}:8080`, remote: server.ip })]: 200 });
    }
    app.kill();
  });

  test('a configuration change applies without a restart; an invalid one is rejected and the last good state keeps serving', async () => {
    const agent = must(agents.get('n1'), 'agent n1');
    const original = fs.readFileSync(configFile, 'utf8');
    const server = topo.pod(2, 1);
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
    const netnsLinks = async (): Promise<string[]> =>
      (
        JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, topo.node(1)), '--json'])) as {
          links: { pin: string }[];
        }
      ).links
        .map((l) => l.pin)
        .filter((p) => p.startsWith('netns-'))
        .sort();
    try {
      const rejected = waitForLine(agent, (l) => l.includes('configuration change rejected'), 'the rejection');
      fs.writeFileSync(configFile, original.replace('protocol: HBONE', 'protocol: TLS'));
      assert.match(await rejected, /workloads\[0\]\.protocol: must be HBONE/);
      const still = await dialFrom(topo, topo.pod(1, 1), server.ip, 8080, 10, 5);
      assert.equal(still.failed, 0, 'the last good state keeps serving');
      assert.equal((await netnsLinks()).length, 2);

      const cfg = YAML.parse(original) as { workloads: Record<string, unknown>[] };
      must(
        cfg.workloads.find((w) => w.uid === topo.pod(1, 2).uid),
        'n1-p2 in the configuration',
      ).protocol = 'NONE';
      // A pod whose netns is gone: logged, and it keeps no other pod out.
      cfg.workloads.push({
        ...workloadOf(topo.pod(1, 3)),
        uid: `${topo.prefix}/ghost`,
        addresses: ['10.200.1.99'],
        netns: `/var/run/netns/${topo.prefix}-ghost`,
      });
      const ghost = waitForLine(agent, (l) => l.includes('pod enrolment failed'), 'the failed enrolment');
      const applied = waitForLine(agent, (l) => l.includes('configuration applied'), 'the change applied');
      fs.writeFileSync(configFile, YAML.stringify(cfg));
      assert.match(await ghost, /AMBIT_E_NETNS.*cannot open netns .*ghost: ENOENT/);
      await applied;
      const ready = await httpInNetns(topo.node(1), '127.0.0.1', 15021, 'GET', '/healthz/ready');
      // The pod's problem, not the node's: the agent stays ready and says which pod is pending and why.
      assert.equal(ready.status, 200, ready.body);
      assert.match(ready.body, new RegExp(`^ready\\npods pending enrolment .*\\n- ${topo.prefix}/ghost: enrolment failed .*ENOENT`));
      const status = await sh('ip', [
        'netns',
        'exec',
        topo.node(1).netns,
        process.execPath,
        CLI,
        'datapath',
        'status',
        '--pin-dir',
        pinDirFor(topo, topo.node(1)),
      ]);
      assert.match(status, new RegExp(`pods pending enrolment: 1\\n {2}${topo.prefix}/ghost: enrolment failed .*ENOENT`));
      assert.deepEqual(await netnsLinks(), [`netns-${topo.prefix}_n1-p1`], 'n1-p2 left the mesh: unenrolled');
      await expectRefusal(
        dialOutcome(topo, topo.pod(1, 3), topo.pod(1, 2).ip, 15008, 1000),
        { refused: true },
        1000,
        'nothing listens on n1-p2:15008 any more',
      );
    } finally {
      const restored = waitForLine(agent, (l) => l.includes('configuration applied'), 'the original configuration');
      fs.writeFileSync(configFile, original);
      await restored;
      app.kill();
    }
    assert.equal((await netnsLinks()).length, 2, 'n1-p2 enrolled again');
  });

  test('a pod whose addresses change is re-enrolled in the same netns at once: its workers free the ports first', async () => {
    const agent = must(agents.get('n1'), 'agent n1');
    const original = fs.readFileSync(configFile, 'utf8');
    const pod = topo.pod(1, 1);
    // Its certificate is already held, so the re-enrolment follows the unenrolment with no pause.
    const enrolledWith = (addresses: string[]): Promise<string> =>
      waitForLine(
        agent,
        (l) => l.includes('"pod enrolled"') && l.includes(pod.uid) && l.includes(`"addresses":${JSON.stringify(addresses)}`),
        `${pod.uid} enrolled with ${addresses.join(', ')}`,
      );
    const failed = waitForLine(agent, (l) => l.includes('pod enrolment failed'), 'an enrolment failure', 60_000).then(
      (l) => l,
      () => undefined,
    );
    try {
      const cfg = YAML.parse(original) as { workloads: Record<string, unknown>[] };
      must(
        cfg.workloads.find((w) => w.uid === pod.uid),
        `${pod.uid} in the configuration`,
      ).addresses = [pod.ip, '10.200.1.99'];
      const changed = enrolledWith([pod.ip, '10.200.1.99']);
      fs.writeFileSync(configFile, YAML.stringify(cfg));
      await changed;
      await untilReady(topo.node(1), 10_000); // a pod that failed to enrol would keep it at 503
      const server = topo.pod(2, 3);
      const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
      await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');
      assert.equal((await dialFrom(topo, pod, server.ip, 8080, 10, 5)).ok, 10, 'captured and served again');
      app.kill();
    } finally {
      const back = enrolledWith([pod.ip]);
      fs.writeFileSync(configFile, original);
      await back;
    }
    assert.equal(await Promise.race([failed, Promise.resolve('none')]), 'none', 'no enrolment failed');
  });

  test('an agent restart reuses its pinned state: one attachment of each program, capture keeps working', async () => {
    const node = topo.node(1);
    const server = topo.pod(2, 3); // not in the mesh: answers directly
    const app = topo.spawnInPod(server, process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami listening');

    await stopAgent(node, 'SIGKILL');
    await expectRefusal(
      dialOutcome(topo, topo.pod(1, 1), server.ip, 8080, 1000),
      { refused: true },
      1000,
      'while the agent is down, outbound fails closed',
    );

    for (let i = 0; i < 2; i++) {
      const attached = JSON.parse(await startAgent(node)) as { attachments: { link: string; action: string }[] };
      assert.deepEqual(
        attached.attachments.map((a) => a.action),
        ['reused', 'reused', 'reused', 'reused', 'reused'],
      );
      if (i === 0) await stopAgent(node, 'SIGTERM');
    }

    const links = JSON.parse(await sh('bpftool', ['link', 'show', '--json'])) as BpftoolLink[];
    const cgroupId = fs.statSync(node.podsCgroup).ino;
    assert.equal(
      links.filter((l) => l.cgroup_id === cgroupId).length,
      5,
      'connect4, sockops, getpeername4, connect6, getpeername6 once each on the pods cgroup',
    );
    for (const pod of node.pods.slice(0, 2)) {
      const ino = fs.statSync(pod.netnsPath).ino;
      assert.equal(links.filter((l) => l.netns_ino === ino).length, 1, `one sk_lookup link on ${pod.netns}`);
    }
    assert.equal(links.filter((l) => l.netns_ino === fs.statSync(topo.pod(1, 3).netnsPath).ino).length, 0, 'none on the non-mesh pod');

    const r = await dialFrom(topo, topo.pod(1, 1), server.ip, 8080, 100, 20);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(
      r.firstLines,
      { [JSON.stringify({ local: `${server.ip}:8080`, remote: topo.pod(1, 1).ip })]: 100 },
      'captured and relayed from inside the client pod, as before the restart',
    );
    app.kill();
  });

  test('ambit datapath status shows the attachments and counters; cleanup removes every pin', async () => {
    const node = topo.node(1);
    const pinDir = pinDirFor(topo, node);
    const status = JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDir, '--json'])) as {
      links: { pin: string; program: string }[];
      enrolledCgroups: number;
      counters: Record<string, number>;
    };
    assert.deepEqual(status.links.map((l) => l.pin).sort(), [
      'connect4',
      'connect6',
      'getpeername4',
      'getpeername6',
      `netns-${topo.prefix}_n1-p1`,
      `netns-${topo.prefix}_n1-p2`,
      'sockops',
    ]);
    assert.equal(status.enrolledCgroups, 2);
    assert.ok((status.counters.CONNECT_REDIRECTED ?? 0) >= 100, `redirect counter ${status.counters.CONNECT_REDIRECTED}`);

    await stopAgent(node, 'SIGTERM');
    const out = await sh(process.execPath, [CLI, 'datapath', 'cleanup', '--pin-dir', pinDir]);
    assert.match(out, /removed \d+ pins/);
    assert.equal(fs.existsSync(pinDir), false);
    const links = JSON.parse(await sh('bpftool', ['link', 'show', '--json'])) as BpftoolLink[];
    assert.equal(links.filter((l) => l.cgroup_id === fs.statSync(node.podsCgroup).ino).length, 0, 'cleanup detached the cgroup programs');
  });

  test('after teardown no namespace, cgroup, pin or agent process remains', async () => {
    for (const node of topo.nodes) await stopAgent(node, 'SIGTERM');
    await cleanup.run();
  });
});
