// Root: hostile HBONE peers against `ambit node`, once with the tunnel in
// the agent (--workers 0, node n1) and once in tunnel workers (--workers 2,
// node n2). The peer holds a valid mesh certificate and plays from the
// other node's netns: CONNECT then at once RST_STREAM (PROTOCOL_ERROR,
// INTERNAL_ERROR), and a stream on a session opened before its pod left
// the mesh. Neither may take down the agent or a worker, nor disturb a
// connection already flowing through the same pod.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { Cleanup } from '../helpers/cleanup';
import { PODAPP, requireRoot, spawnNodeAgent, testBed, workloadOf } from '../helpers/fixture';
import { type ClientCert, certFor, connect, connectAndReset, connectOk, echo, firstLine, openSession } from '../helpers/hbone-client';
import { at, must } from '../helpers/must';
import { alive, jsonLines, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { TestNode, TestPod, Topology } from '../helpers/topology';

const WORKERS: Record<string, number> = { n1: 0, n2: 2 };
const workersOf = (node: string): number => must(WORKERS[node], `--workers of ${node}`);

describe('hostile HBONE peers against ambit node', () => {
  let topo: Topology;
  let dir: string;
  let configFile: string;
  let cert: ClientCert;
  const agents = new Map<string, { child: ChildProcess; logs: Record<string, unknown>[] }>();
  const sessions: http2.ClientHttp2Session[] = [];
  const cleanup = new Cleanup();

  const config = (pods: TestPod[]): string =>
    YAML.stringify({
      trustDomain: 'cluster.local',
      ca: { dir: path.join(dir, 'ca') },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      // authorizationPolicies is the store's field (policies assigned), not one the YAML takes.
      workloads: pods.map((p) => {
        const { authorizationPolicies: _, ...w } = workloadOf(p);
        return w;
      }),
    });

  const other = (node: TestNode): TestNode =>
    must(
      topo.nodes.find((n) => n !== node),
      `a node other than ${node.name}`,
    );
  const agent = (node: string): { child: ChildProcess; logs: Record<string, unknown>[] } => must(agents.get(node), `agent ${node}`);
  const workerPids = (node: string): number[] => {
    const a = agent(node);
    return [...new Set(a.logs.filter((l) => l.msg === 'worker started').map((l) => l.pid as number))].filter((p) => p !== a.child.pid);
  };
  /** Error-level lines and worker exits of a node's agent: none may appear. */
  const trouble = (node: string): unknown[] =>
    agent(node).logs.filter((l) => (l.level as number) >= 50 || String(l.msg).includes('exited'));

  function assertUnharmed(node: TestNode, pidsBefore: number[]): void {
    const a = agent(node.name);
    assert.equal(a.child.exitCode, null, `the agent of ${node.name} exited: ${JSON.stringify(trouble(node.name))}`);
    assert.equal(a.child.signalCode, null);
    assert.deepEqual(trouble(node.name), [], 'no crash or worker exit logged');
    assert.deepEqual(workerPids(node.name), pidsBefore, 'the same workers, none replaced');
    assert.ok(pidsBefore.every(alive), 'every worker still running');
  }

  /** A session from the other node's netns to pod, and a CONNECT through it to the pod's whoami. */
  async function flowing(pod: TestPod): Promise<{ session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream }> {
    const session = await openSession(other(pod.node).netnsPath, pod.ip, cert);
    sessions.push(session);
    const stream = await connectOk(session, `${pod.ip}:8080`);
    const seen = JSON.parse(await firstLine(stream)) as { local: string; remote: string };
    assert.equal(seen.local, `${pod.ip}:8080`);
    assert.match(seen.remote, new RegExp(`^${pod.ip.replaceAll('.', '\\.')}:`), 'dialed from inside the pod');
    assert.equal(await echo(stream, 'before'), 'before');
    return { session, stream };
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    cleanup.add('HBONE sessions', () => {
      for (const s of sessions) s.destroy();
    });
    const ca = await BuiltinCa.open(path.join(dir, 'ca')); // before the agents: one creator of the root
    cert = await certFor(ca, 'spiffe://cluster.local/ns/default/sa/default');
    configFile = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(configFile, config(topo.pods));
    await Promise.all(
      topo.nodes.map(async (node) => {
        const child = spawnNodeAgent(topo, node, ['--config', configFile, '--workers', String(workersOf(node.name))], {
          AMBIT_LOG_LEVEL: 'info',
        });
        const logs = jsonLines(child);
        agents.set(node.name, { child, logs });
        await waitForLine(child, (l) => l.includes('"node ready"'), `agent ${node.name}`);
        await waitFor(`${node.name} workers serving`, () => workerPids(node.name).length >= workersOf(node.name));
      }),
    );
    for (const pod of topo.pods) {
      const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', '8080']);
      await waitForLine(app, (l) => l.includes('listening'), `whoami in ${pod.uid}`);
    }
  });

  after(() => cleanup.run());

  for (const [nodeName, workers] of Object.entries(WORKERS)) {
    test(`${nodeName} (--workers ${workers}): CONNECT then RST_STREAM at once, 3 × PROTOCOL_ERROR and 3 × INTERNAL_ERROR`, async () => {
      const node = must(
        topo.nodes.find((n) => n.name === nodeName),
        `node ${nodeName}`,
      );
      const pod = at(node.pods, 0, `pods of ${nodeName}`);
      const pids = workerPids(nodeName);
      const open = await flowing(pod);
      for (const code of [http2.constants.NGHTTP2_PROTOCOL_ERROR, http2.constants.NGHTTP2_INTERNAL_ERROR]) {
        for (let i = 0; i < 3; i++) {
          // A fresh session each time: a worker that crashed would take it along, so each try is counted.
          const attacker = await openSession(other(node).netnsPath, pod.ip, cert);
          sessions.push(attacker);
          connectAndReset(attacker, `${pod.ip}:8080`, code);
          // The same session still serves: the reset cost only its own stream.
          (await connectOk(attacker, `${pod.ip}:8080`, {}, `after reset ${code} #${i + 1}`)).close();
          attacker.destroy();
        }
      }
      assert.equal(await echo(open.stream, 'after'), 'after', 'the connection open across the resets still flows');
      const fresh = await flowing(pod);
      fresh.session.destroy();
      assertUnharmed(node, pids);
      open.session.destroy();
    });
  }

  test('a stream on a session opened before its pod left the mesh is refused, not a crash; the open connection carries on', async () => {
    const leaving = [topo.pod(1, 2), topo.pod(2, 2)];
    const pids = Object.fromEntries(topo.nodes.map((n) => [n.name, workerPids(n.name)]));
    const open = await Promise.all(leaving.map(flowing));
    const goaways = open.map(({ session }) => new Promise<number>((resolve) => session.once('goaway', (code) => resolve(code))));
    const unenrolled = (node: string): number => agent(node).logs.filter((l) => l.msg === 'pod unenrolled').length;
    fs.writeFileSync(configFile, config(topo.pods.filter((p) => !leaving.includes(p))));
    for (const pod of leaving) await waitFor(`${pod.uid} unenrolled`, () => unenrolled(pod.node.name) >= 1, 20_000);
    for (const [i, pod] of leaving.entries()) {
      const { session, stream } = at(open, i, 'open connections');
      // Which of the three the client sees depends on whether the GOAWAY reached it before the stream left.
      await expectRefusal(
        connect(session, `${pod.ip}:8080`).then((r) => r.outcome),
        [{ status: 503 }, { goaway: true }, { rst: http2.constants.NGHTTP2_REFUSED_STREAM }],
        2000,
        `${pod.uid}: a stream after the pod left`,
      );
      assert.equal(await at(goaways, i, 'GOAWAY waits'), http2.constants.NGHTTP2_NO_ERROR, 'the peer was told to open no more streams');
      assert.equal(await echo(stream, 'still here'), 'still here', 'the connection delivered before the removal carries on');
    }
    for (const node of topo.nodes) assertUnharmed(node, must(pids[node.name], `the workers of ${node.name}`));
    // The pods still in the mesh are served as before.
    for (const pod of [topo.pod(1, 1), topo.pod(2, 1)]) (await flowing(pod)).session.destroy();
    for (const o of open) o.session.destroy();
  });
});
