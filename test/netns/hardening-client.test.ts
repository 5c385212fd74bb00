// Root: the client side of a node agent with tunnel workers under failure.
// The agent runs in this process (PodAgent with the WorkersDataPlane `ambit
// node --workers` uses) with a CA the test can make refuse, so the test can
// read the agent's log and its workers' pids.
//   - The CA refuses once a pod's certificate has expired: the worker's
//     outbound connection is closed fast with AMBIT_E_CA (not held), and the
//     worker lives on.
//   - A worker killed again and again is replaced after a growing delay.
// Topology: 1 node × 2 pods, both in the mesh; p2 runs whoami.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { AmbitError } from '../../src/errors';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import type { CertificateAuthority } from '../../src/identity/ca';
import { PodAgent } from '../../src/roots/pod-agent';
import { WorkersDataPlane } from '../../src/tunnel/worker-host';
import { Cleanup } from '../helpers/cleanup';
import { CLI, dialOutcome, meshConfig, PODAPP, pinDirFor, requireRoot, testBed } from '../helpers/fixture';
import { must } from '../helpers/must';
import { alive, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { Topology } from '../helpers/topology';

const CERT_TTL_S = 3;
const CERTIFICATE_WAIT_MS = 3000;
const RESPAWN_INITIAL_MS = 200;

describe('node agent client side under failure (tunnel workers)', () => {
  let topo: Topology;
  let dir: string;
  let app: PodAgent;
  let refuse = false;
  const cleanup = new Cleanup();
  const logs: Record<string, unknown>[] = [];
  const workers = (): WorkersDataPlane => app.dataPlane as WorkersDataPlane;
  const startedPids: number[] = [];

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 1, podsPerNode: 2 }));
    const builtin = await BuiltinCa.open(path.join(dir, 'ca'));
    const ca: CertificateAuthority = {
      sign: (csr, id, ttl) =>
        refuse ? Promise.reject(new AmbitError('AMBIT_E_CA', `CA refused ${id}: PERMISSION_DENIED`)) : builtin.sign(csr, id, ttl),
    };
    const config = meshConfig(topo, dir);
    // Warnings and up are what the test reads (respawns); the workers inherit the level, so their info lines stay quiet.
    const log = pino(
      { level: 'warn' },
      {
        write: (line: string) => {
          logs.push(JSON.parse(line) as Record<string, unknown>);
        },
      },
    );
    const node = topo.node(1);
    app = await PodAgent.start({
      config,
      scope: { node: node.name },
      podsCgroup: node.podsCgroup,
      pinDir: pinDirFor(topo, node),
      ca,
      certTtlSeconds: CERT_TTL_S,
      limits: { certificateWaitMs: CERTIFICATE_WAIT_MS },
      dataPlane: (ctx) =>
        new WorkersDataPlane(ctx, { count: 1, pinDir: ctx.datapath.pinDir, cli: CLI, respawnInitialMs: RESPAWN_INITIAL_MS }),
      log,
    });
    // The workers are this process's children, not the topology's: stopping the agent ends them, or they are killed.
    cleanup.add('the agent and its workers', async () => {
      const pids = [...new Set([...startedPids, ...workers().pids()])];
      app.stop();
      await waitFor('every worker gone', () => pids.every((p) => !alive(p)), 10_000).finally(() => {
        for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
      });
    });
    const whoami = topo.spawnInPod(topo.pod(1, 2), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(whoami, (l) => l.includes('listening'), 'whoami');
    await waitFor('the worker serving both pods', () => app.readiness().pending.length === 0, 20_000);
    startedPids.push(...workers().pids());
    // No connection before the CA refuses: an HBONE session opened now would carry the later ones without a new certificate.
  });

  after(() => cleanup.run());

  test('the CA refuses after the certificate expired: the worker closes the connection within certificateWaitMs with AMBIT_E_CA, and lives on', async () => {
    const [worker] = workers().pids();
    const source = topo.pod(1, 1);
    const identity = app.store.identityOf(
      must(
        app.store.config.workloads.find((w) => w.uid === source.uid),
        `${source.uid} in the configuration`,
      ),
    );
    refuse = true;
    assert.equal(app.certs.current(identity)?.identity, identity, 'the pod was enrolled with a certificate');
    await waitFor(`the certificate of ${identity} expired`, () => app.certs.current(identity) === undefined, (CERT_TTL_S + 3) * 1000, 50);
    // Closed with not a byte, within certificateWaitMs; the bound holds even with the dial's own process start included.
    const tookMs = await expectRefusal(
      dialOutcome(topo, source, topo.pod(1, 2).ip, 8080, 10_000, 3),
      { closed: true },
      CERTIFICATE_WAIT_MS + 1500,
      'three connections while the CA refuses',
    );
    const metrics = await app.metricsText();
    assert.match(
      metrics,
      /ambit_connection_failures_total\{direction="outbound",reason="AMBIT_E_CA"\} 3/,
      'the worker counts the failures with their reason',
    );
    assert.deepEqual(workers().pids(), [worker], 'the same worker still serves');
    assert.ok(
      logs.some((l) => l.msg === 'certificate for a worker failed' && l.identity === identity),
      'the agent says why',
    );
    console.log(
      `CA refusing, certificate expired: 3 connections closed in ${tookMs} ms including the client's start (certificateWaitMs ${CERTIFICATE_WAIT_MS})`,
    );
  });

  test('a worker killed again and again is replaced after a growing delay', async () => {
    const respawns = (): Record<string, unknown>[] => logs.filter((l) => l.msg === 'worker exited; starting a replacement');
    const before = respawns().length;
    const gaps: { delayMs: number; tookMs: number }[] = [];
    for (let i = 0; i < 4; i++) {
      const pid = await waitFor('a worker running', () => (workers().pids().length === 1 ? workers().pids()[0] : undefined), 20_000);
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      const next = await waitFor(
        `a replacement for ${pid}`,
        () =>
          workers()
            .pids()
            .find((p) => p !== pid),
        20_000,
        5,
      );
      startedPids.push(next);
      const log = respawns()[before + i];
      assert.ok(log, 'the respawn is logged');
      gaps.push({ delayMs: log.delayMs as number, tookMs: Date.now() - killedAt });
    }
    assert.deepEqual(
      gaps.map((g) => g.delayMs),
      [1, 2, 4, 8].map((k) => k * RESPAWN_INITIAL_MS),
      JSON.stringify(gaps),
    );
    for (const g of gaps) assert.ok(g.tookMs >= g.delayMs, `replaced after ${g.tookMs} ms, before its delay of ${g.delayMs} ms`);
    console.log(`respawn delays (ms): ${gaps.map((g) => `${g.delayMs} (replaced after ${g.tookMs})`).join(', ')}`);
    await waitFor('the last replacement serving', () => app.readiness().pending.length === 0, 20_000);
  });

  test('after teardown no namespace, cgroup, pin or process remains', async () => {
    await cleanup.run(); // fails if a worker outlives the agent's stop by 10 s
  });
});
