// Root: `ambit node` with two tunnel workers per node. A worker killed with
// SIGKILL during a connection storm ends the connections it carried, but no
// new connection is refused; a rolling replacement (SIGHUP) loses none; a
// SIGTERM drain lets an open transfer finish before the agent exits.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Cleanup, waitExit } from '../helpers/cleanup';
import { dialFrom, httpInNetns, PODAPP, requireRoot, spawnNodeAgent, testBed, writeMeshYaml } from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { alive, collect, jsonLines, lastJson, TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import type { TestNode, Topology } from '../helpers/topology';

const CONCURRENCY = 16;

describe('tunnel workers', () => {
  let topo: Topology;
  let dir: string;
  let config: string;
  const agents = new Map<string, { child: ChildProcess; logs: Record<string, unknown>[] }>();
  const cleanup = new Cleanup();

  async function startAgent(node: TestNode): Promise<void> {
    const child = spawnNodeAgent(topo, node, ['--config', config, '--workers', '2', '--drain-seconds', '10'], { AMBIT_LOG_LEVEL: 'info' });
    const logs = jsonLines(child);
    agents.set(node.name, { child, logs });
    await waitForLine(child, (l) => l.includes('"node ready"'), `agent ${node.name}`);
    await waitFor(`${node.name} workers serving`, () => logs.filter((l) => l.msg === 'worker started').length >= 2);
  }

  /** Pids of the workers an agent started, in order (replacements come last). */
  const agent = (node: string): { child: ChildProcess; logs: Record<string, unknown>[] } => must(agents.get(node), `agent ${node}`);
  const workerPids = (node: string): number[] =>
    agent(node)
      .logs.filter((l) => l.msg === 'worker started')
      .map((l) => l.pid as number)
      .filter((p, i, all) => all.indexOf(p) === i && p !== agent(node).child.pid);

  /**
   * Runs a storm of short connections n1-p1 → n2-p1 and calls during() once
   * it is under way; fails unless the disturbance started and ended while
   * connections were still being made.
   */
  async function storm(n: number, during: () => Promise<void>): Promise<{ ok: number; failed: number; errors: Record<string, number> }> {
    const client = topo.spawnInPod(topo.pod(1, 1), process.execPath, [
      PODAPP,
      'dial',
      topo.pod(2, 1).ip,
      '8080',
      String(n),
      String(CONCURRENCY),
      '5000',
    ]);
    let endedAt = 0;
    const result = collect(client).then((r) => {
      endedAt = Date.now();
      return r;
    });
    await new Promise((r) => setTimeout(r, 300)); // the storm is under way (about 1,000 connections/s here)
    assert.equal(client.exitCode, null, 'the storm was running when the workers were disturbed');
    await during();
    const disturbedUntil = Date.now();
    const r = await result;
    const slow = [...agents.values()].flatMap((a) =>
      a.logs.filter((l) => l.msg === 'drain deadline reached: closing the connections still open'),
    );
    assert.ok(
      endedAt >= disturbedUntil,
      `the storm ended ${disturbedUntil - endedAt} ms before the disturbance did: make it longer ${JSON.stringify(slow)}`,
    );
    return lastJson<{ ok: number; failed: number; errors: Record<string, number> }>(r.stdout);
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 1 }));
    config = writeMeshYaml(topo, dir);
    for (const node of topo.nodes) await startAgent(node);
    const app = topo.spawnInPod(topo.pod(2, 1), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami');
    const warm = await dialFrom(topo, topo.pod(1, 1), topo.pod(2, 1).ip, 8080, 20, 4);
    assert.equal(warm.failed, 0);
  });

  after(() => cleanup.run());

  test('a worker killed with SIGKILL during a storm: no connection refused, only those it carried end, and it is replaced', async () => {
    const crashed = [...agents.values()].flatMap((a) =>
      a.logs.filter((l) => (l.level as number) >= 40 || String(l.msg).includes('exited')),
    );
    assert.deepEqual(crashed, [], 'no worker failed before the test disturbed them');
    const [source, destination] = [
      at(workerPids('n1').filter(alive), 0, 'n1 workers'),
      at(workerPids('n2').filter(alive), 0, 'n2 workers'),
    ];
    const failures = (): string =>
      JSON.stringify(
        [...agents.values()].flatMap((a) => a.logs.filter((l) => (l.level as number) >= 50 || String(l.msg).includes('exited'))),
      );
    const kill = (pid: number): void => {
      if (!alive(pid)) assert.fail(`worker ${pid} died before it was killed: ${failures()}`);
      process.kill(pid, 'SIGKILL');
    };
    const r = await storm(2000, async () => {
      kill(source);
      await new Promise((res) => setTimeout(res, 300));
      kill(destination);
    });
    assert.equal(r.errors.ECONNREFUSED, undefined, `refused: ${JSON.stringify(r.errors)}`);
    assert.ok(r.failed <= 2 * 2 * CONCURRENCY, `only connections in flight on the two killed workers may end: ${JSON.stringify(r)}`);
    assert.ok(r.ok >= 2000 - 2 * 2 * CONCURRENCY);
    for (const node of ['n1', 'n2']) {
      await waitFor(`a replacement worker on ${node}`, () => workerPids(node).filter(alive).length === 2);
    }
  });

  test('a rolling replacement of the workers (SIGHUP) loses no connection', async () => {
    const before = workerPids('n1').filter(alive);
    const n1 = agent('n1');
    const r = await storm(6000, async () => {
      n1.child.kill('SIGHUP');
      await waitFor('the workers replaced', () => n1.logs.some((l) => l.msg === 'tunnel workers replaced'), 15_000);
    });
    assert.deepEqual(r.errors, {}, JSON.stringify(r));
    assert.equal(r.ok, 6000);
    const now = workerPids('n1').filter(alive);
    assert.equal(now.length, 2);
    assert.deepEqual(
      now.filter((p) => before.includes(p)),
      [],
      'every worker was replaced',
    );
  });

  test('SIGTERM drains: an open transfer finishes, then the agent exits', async () => {
    // The transfer is under way once the source node counts one more connection open.
    const opened = async (): Promise<number> =>
      [
        ...(await httpInNetns(topo.node(1), '127.0.0.1', 15020, 'GET', '/metrics')).body.matchAll(
          /^istio_tcp_connections_opened_total\{[^}]*reporter="source"[^}]*\} (\d+)$/gm,
        ),
      ].reduce((n, m) => n + Number(m[1]), 0);
    const before = await opened();
    const transfer = collect(topo.spawnInPod(topo.pod(1, 1), process.execPath, [PODAPP, 'stream', topo.pod(2, 1).ip, '8080', '4', '3']));
    await waitFor('the transfer open', async () => (await opened()) > before);
    const n1 = agent('n1');
    const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
      n1.child.once('exit', (code) => resolve({ code, at: Date.now() })),
    );
    n1.child.kill('SIGTERM');
    const t = await transfer;
    const doneAt = Date.now();
    const result = JSON.parse(t.stdout.trim()) as { echoed: number; error?: string };
    assert.equal(result.error, undefined);
    assert.equal(result.echoed, 4 * 1024 * 1024, 'the whole transfer came back');
    const exit = await exited;
    assert.equal(exit.code, 0);
    // The client process reports after its connection closed; allow for its own exit (slower under emulation).
    assert.ok(
      exit.at >= doneAt - 500 * TIME_SCALE,
      `the agent waited for the transfer (exited ${doneAt - exit.at} ms before the client reported)`,
    );
    assert.ok(n1.logs.some((l) => l.msg === 'stopped'));
  });

  test('after teardown no namespace, cgroup, pin or process remains', async () => {
    const pids = [...agents.keys()].flatMap(workerPids);
    for (const { child } of agents.values()) child.kill('SIGTERM');
    await Promise.all([...agents.values()].map((a) => waitExit(a.child)));
    await waitFor('every worker gone', () => pids.every((p) => !alive(p)));
    await cleanup.run();
  });
});
