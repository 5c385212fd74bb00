// Root: `ambit config` against running nodes — one with the tunnel in the
// agent (--workers 0), one with a tunnel worker (--workers 1). While
// connections are open through the tunnel in both directions (and one in
// plaintext), `ambit config connections` lists each on both nodes with the
// same connection id and source; workloads and certificates show what the
// node serves. Then the connections close — the client aborting, the app
// aborting, clean FINs — and both lists go back to empty.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import type { CertificateRow, WorkloadRow } from '../../src/cli/inspect';
import type { ConnectionInfo } from '../../src/tunnel/connections';
import { Cleanup } from '../helpers/cleanup';
import { CLI, dialFrom, httpInNetns, PODAPP, pinDirFor, requireRoot, testBed, untilReady, workloadOf } from '../helpers/fixture';
import { collect, jsonLines, waitFor, waitForLine } from '../helpers/proc';
import type { TestNode, Topology } from '../helpers/topology';

describe('ambit config against running nodes', () => {
  let topo: Topology;
  let dir: string;
  const cleanup = new Cleanup();
  const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;
  const apps = new Map<string, ChildProcess>();

  /** `ambit config ARGS` run in the node's netns, where its admin port is. */
  async function ambitConfig(node: TestNode, ...args: string[]): Promise<string> {
    const r = await collect(topo.spawnInNode(node, process.execPath, [CLI, 'config', ...args]));
    assert.equal(r.code, 0, `ambit config ${args.join(' ')} on ${node.name}: ${r.stderr}`);
    return r.stdout;
  }
  const rows = async <R>(node: TestNode, kind: string, ...args: string[]): Promise<R[]> =>
    JSON.parse(await ambitConfig(node, kind, '-o', 'json', ...args)) as R[];
  /** What GET /connections holds now (polled: quicker than a CLI process per look). */
  const openOn = async (node: TestNode): Promise<ConnectionInfo[]> =>
    (JSON.parse((await httpInNetns(node, '127.0.0.1', 15000, 'GET', '/connections')).body) as { connections: ConnectionInfo[] })
      .connections;

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 1 }));
    const config = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(
      config,
      YAML.stringify({
        trustDomain: 'cluster.local',
        ca: { dir: path.join(dir, 'ca') },
        nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
        workloads: topo.pods.map((p) => ({ ...workloadOf(p), serviceAccount: `sa-${p.node.name}` })),
      }),
    );
    for (const [node, workers] of [
      [topo.nodes[0], '0'],
      [topo.nodes[1], '1'],
    ] as const) {
      if (!node) throw new Error('the bed has two nodes');
      const agent = topo.spawnInNode(node, process.execPath, [
        CLI,
        'node',
        '--config',
        config,
        '--node',
        node.name,
        '--pods-cgroup',
        node.podsCgroup,
        '--pin-dir',
        pinDirFor(topo, node),
        '--workers',
        workers,
      ]);
      jsonLines(agent); // the agent logs on stdout: read it, or a full pipe would stall it
      await waitForLine(agent, (l) => l.includes('"node ready"'), `agent ${node.name}`);
      await untilReady(node);
    }
    for (const pod of topo.pods) {
      const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', '8080']);
      await waitForLine(app, (l) => l.includes('listening'), `whoami in ${pod.uid}`);
      apps.set(pod.uid, app);
    }
  });

  after(() => cleanup.run());

  test('workloads and certificates: what each node serves', async () => {
    const [n1, n2] = topo.nodes as [TestNode, TestNode];
    const workloads = await rows<WorkloadRow>(n1, 'workloads');
    assert.deepEqual(
      workloads.map((w) => [w.podName, w.node, w.addresses, w.protocol, w.state]),
      [
        ['n1-p1', 'n1', [topo.pod(1, 1).ip], 'HBONE', 'enrolled'],
        ['n2-p1', 'n2', [topo.pod(2, 1).ip], 'HBONE', undefined],
      ],
      'n1 enrolled its own pod and only that one',
    );
    assert.deepEqual(
      (await rows<WorkloadRow>(n2, 'workloads', '--node', 'n2')).map((w) => [w.podName, w.state]),
      [['n2-p1', 'enrolled']],
    );
    for (const [node, sa] of [
      [n1, 'sa-n1'],
      [n2, 'sa-n2'],
    ] as const) {
      const certs = await rows<CertificateRow>(node, 'certificates');
      assert.deepEqual(
        certs.map((c) => [c.certificateName, c.type, c.status, c.valid]),
        [
          [id(sa), 'leaf', 'Available', true],
          [id(sa), 'root', 'Available', true],
        ],
      );
      assert.ok(Date.parse(certs[0]?.notAfter ?? '') > Date.now() + 23 * 3600_000, 'a day-long leaf');
    }
    assert.doesNotMatch(await ambitConfig(n1, 'certificates', '-o', 'yaml'), /PRIVATE KEY|BEGIN/);
  });

  test('open connections are listed on both nodes, then the lists empty as they close', async (t) => {
    const [n1, n2] = topo.nodes as [TestNode, TestNode];
    const [p1, p2] = [topo.pod(1, 1), topo.pod(2, 1)];
    // Long transfers (1 MiB paced over two minutes): open until ended on purpose.
    const stream = (spawn: () => ChildProcess): ChildProcess => {
      const c = spawn();
      c.stdout?.resume();
      return c;
    };
    const out1 = stream(() => topo.spawnInPod(p1, process.execPath, [PODAPP, 'stream', p2.ip, '8080', '1', '120']));
    stream(() => topo.spawnInPod(p2, process.execPath, [PODAPP, 'stream', p1.ip, '8080', '1', '120']));
    // From n2's own netns (no pod, not captured): plaintext into p1, through its :15006.
    const plain = stream(() => topo.spawnInNode(n2, process.execPath, [PODAPP, 'stream', p1.ip, '8080', '1', '120']));

    await waitFor(
      'three connections on n1 and two on n2, bytes flowing both ways',
      async () => {
        const [a, b] = [await openOn(n1), await openOn(n2)];
        const flowing = [...a, ...b].every((c) => c.bytesToDestination > 0 && c.bytesToSource > 0);
        return a.length === 3 && b.length === 2 && flowing ? { a, b } : undefined;
      },
      15_000,
      200,
    );
    // What an operator runs: the CLI, in JSON.
    const on1 = await rows<ConnectionInfo>(n1, 'connections');
    const on2 = await rows<ConnectionInfo>(n2, 'connections');
    const find = (list: ConnectionInfo[], direction: string, protocol: string, pod: string): ConnectionInfo => {
      const c = list.find((x) => x.direction === direction && x.protocol === protocol && x.pod === pod);
      assert.ok(c, `no ${direction} ${protocol} row of ${pod} in ${JSON.stringify(list, null, 1)}`);
      return c;
    };

    const out1Src = find(on1, 'outbound', 'HBONE', 'n1-p1');
    assert.match(out1Src.source, new RegExp(`^${p1.ip.replace(/\./g, '\\.')}:\\d+$`));
    assert.deepEqual(
      [out1Src.sourceIdentity, out1Src.destination, out1Src.destinationIdentity, out1Src.peer, out1Src.worker],
      [id('sa-n1'), `${p2.ip}:8080`, id('sa-n2'), `${p2.ip}:15008`, undefined],
    );
    const out1Dst = find(on2, 'inbound', 'HBONE', 'n2-p1');
    assert.equal(out1Dst.connId, out1Src.connId, 'both nodes list the same connection id');
    assert.equal(out1Dst.source, out1Src.source, 'and the same source');
    assert.deepEqual(
      [out1Dst.sourceIdentity, out1Dst.destination, out1Dst.destinationIdentity, typeof out1Dst.worker],
      [id('sa-n1'), `${p2.ip}:8080`, id('sa-n2'), 'number'],
    );
    assert.match(out1Dst.peer, new RegExp(`^${p1.ip.replace(/\./g, '\\.')}:\\d+$`), "the HBONE client's address");

    const out2Src = find(on2, 'outbound', 'HBONE', 'n2-p1');
    const out2Dst = find(on1, 'inbound', 'HBONE', 'n1-p1');
    assert.equal(out2Src.connId, out2Dst.connId);
    assert.equal(typeof out2Src.worker, 'number', 'a worker carries it on n2');
    assert.equal(out2Dst.worker, undefined, 'the agent itself on n1');

    const plainRow = find(on1, 'inbound', 'plaintext', 'n1-p1');
    assert.match(plainRow.source, new RegExp(`^${n2.wireIp.replace(/\./g, '\\.')}:\\d+$`));
    assert.deepEqual([plainRow.sourceIdentity, plainRow.destination], [undefined, `${p1.ip}:8080`]);
    for (const c of [...on1, ...on2]) assert.ok(Date.now() - Date.parse(c.startedAt) < 60_000, `started recently: ${c.startedAt}`);

    const table = await ambitConfig(n1, 'connections');
    t.diagnostic(`ambit config connections on n1:\n${table}`);
    const lines = table.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^NAMESPACE\s+POD\s+DIRECTION\s+SOURCE\s+SOURCE-IDENTITY\s+DESTINATION\s+SERVICE\s+PROTOCOL\s+PEER\s+AGE/);
    assert.equal(lines.length, 4, 'a header and three rows');
    assert.match(await ambitConfig(n2, 'connections'), /\bWORKER$/m, 'with workers, which one carries each');

    // Closing: the client aborts (n1's outbound), the app aborts (p1's whoami: n2's outbound ends from the far side),
    // the plaintext client aborts.
    out1.kill('SIGKILL');
    apps.get(p1.uid)?.kill('SIGKILL');
    plain.kill('SIGKILL');
    await waitFor('both lists empty', async () => (await openOn(n1)).length === 0 && (await openOn(n2)).length === 0, 15_000, 100);
    // Clean closes (the client's FIN after one line) leave nothing either.
    const r = await dialFrom(topo, p1, p2.ip, 8080, 20, 5);
    assert.equal(r.failed, 0);
    await waitFor('both lists empty again', async () => (await openOn(n1)).length === 0 && (await openOn(n2)).length === 0, 15_000, 100);
    assert.deepEqual(await rows(n1, 'connections'), []);
    assert.deepEqual(await rows(n2, 'connections'), []);
    const none = await collect(topo.spawnInNode(n1, process.execPath, [CLI, 'config', 'connections']));
    assert.deepEqual([none.code, none.stdout, none.stderr], [0, '', 'No connections found.\n']);
  });

  test('a node that is not there: one AMBIT_E_ADMIN line, exit 2', async () => {
    // The switch has no agent: nothing listens on its 127.0.0.1:15000.
    const r = await collect(topo.spawnInSwitch(process.execPath, [CLI, 'config', 'workloads']));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^ambit: AMBIT_E_ADMIN: cannot reach 127\.0\.0\.1:15000: ECONNREFUSED .*is `ambit node` running\?.*\n$/);
  });
});
