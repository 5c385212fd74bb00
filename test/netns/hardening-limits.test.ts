// Root: what a peer can make node n2's tunnel hold, and what it can make
// it report. The agent runs in this process (PodAgent) with short limits,
// so the test reads its counters and metrics directly:
// - slowloris: 300 silent TCP connections to a pod's :15008 from one pod
//   are cut to the per-source handshake cap at once and the rest closed
//   within the handshake timeout, while honest peers keep being served;
// - a peer that completes TLS but never speaks HTTP/2, and a session left
//   with no stream, are closed in time;
// - 500 CONNECTs with made-up baggage and service hosts add no metric
//   series: labels come from the certificate and the mesh state, and the
//   series of a workload that left the mesh go with it.
import assert from 'node:assert/strict';
import type http2 from 'node:http2';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import type { Metric } from 'prom-client';
import { connectFromNetns } from '../../src/datapath/netns';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { createLogger } from '../../src/observability/log';
import { PodAgent } from '../../src/roots/pod-agent';
import type { MeshConfig } from '../../src/state/types';
import { DEFAULT_LIMITS } from '../../src/tunnel/limits';
import { Cleanup } from '../helpers/cleanup';
import { meshConfig, PODAPP, pinDirFor, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { type ClientCert, certFor, connectOk, echo, firstLine, openSession } from '../helpers/hbone-client';
import { at, must } from '../helpers/must';
import { TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import type { TestPod, Topology } from '../helpers/topology';

const HANDSHAKE_MS = 2000;
const IDLE_MS = 2000;
const SERVICE = 'echo.default.svc.cluster.local';
const sa = (p: TestPod): string => `sa-${p.node.name}-${p.name}`;
const spiffe = (p: TestPod): string => `spiffe://cluster.local/ns/default/sa/${sa(p)}`;
/** p, or a failure naming what did not happen within ms (× TIME_SCALE): a test fails, never hangs. */
const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: not within ${ms * TIME_SCALE} ms`)), ms * TIME_SCALE).unref(),
    ),
  ]);
const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

describe('inbound limits and verified telemetry', () => {
  let topo: Topology;
  let dir: string;
  let ca: BuiltinCa;
  let app: PodAgent;
  const sessions: http2.ClientHttp2Session[] = [];
  const cleanup = new Cleanup();
  const log = createLogger(process.env.AMBIT_TEST_LOG ?? 'silent');

  function config(without: TestPod[] = []): MeshConfig {
    return meshConfig(topo, dir, {
      workloads: topo.pods
        .filter((p) => !without.includes(p))
        .map((p) => ({ ...workloadOf(p), serviceAccount: sa(p), labels: p.node.index === 2 ? { app: 'echo' } : { app: 'client' } })),
      services: [
        {
          name: 'echo',
          namespace: 'default',
          hostname: SERVICE,
          addresses: ['10.96.0.10'],
          ports: [{ port: 80, targetPort: 8080 }],
          selector: { app: 'echo' },
        },
      ],
    });
  }

  const target = (): TestPod => topo.pod(2, 1);

  /** A fresh HBONE session (its own TLS handshake) from netns, and one echoed CONNECT over it. */
  async function honest(netnsPath: string, cert: ClientCert): Promise<void> {
    const session = await openSession(netnsPath, target().ip, cert);
    sessions.push(session);
    const stream = await connectOk(session, `${target().ip}:8080`);
    await firstLine(stream);
    assert.equal(await echo(stream, 'hello'), 'hello');
    session.destroy();
  }

  /** One of the agent's metrics, as prom-client holds it. */
  const metric = (name: string): Metric => must(app.metrics.registry.getSingleMetric(name), `metric ${name}`);
  /** What node n2's tunnel holds for the target pod. */
  const held = (): { sessions: number; pending: number; open: number } =>
    must(app.tunnel?.inboundStats(target().uid), `the tunnel's stats for ${target().uid}`);

  /** The destination-side TCP series: one entry per label set, with its opened count. */
  async function destinationSeries(): Promise<{ labels: Record<string, string>; value: number }[]> {
    const m = await metric('istio_tcp_connections_opened_total').get();
    return m.values
      .filter((v) => v.labels.reporter === 'destination')
      .map((v) => ({ labels: v.labels as Record<string, string>, value: v.value }));
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    cleanup.add('HBONE sessions', () => {
      for (const s of sessions) s.destroy();
    });
    ca = await BuiltinCa.open(path.join(dir, 'ca'));
    const node = topo.node(2);
    app = await PodAgent.start({
      config: config(),
      scope: { node: node.name },
      podsCgroup: node.podsCgroup,
      pinDir: pinDirFor(topo, node),
      log,
      limits: { serverHandshakeMs: HANDSHAKE_MS, sessionIdleMs: IDLE_MS },
    });
    cleanup.add('the agent', () => app.stop());
    const whoami = topo.spawnInPod(target(), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(whoami, (l) => l.includes('listening'), 'whoami');
  });

  after(() => cleanup.run());

  test('slowloris: 300 silent connections are cut to the per-source cap at once, the rest closed within the handshake timeout; honest peers are served meanwhile', async () => {
    const attackerPod = topo.pod(1, 2);
    const cert = await certFor(ca, spiffe(topo.pod(1, 1)));
    const rssBefore = process.memoryUsage().rss;
    const openedAt = Date.now();
    const closedAfter: number[] = [];
    const silent: net.Socket[] = [];
    for (let i = 0; i < 300; i++) {
      const s = connectFromNetns(attackerPod.netnsPath, target().ip, 15008, { allowHalfOpen: false });
      s.on('error', () => undefined);
      s.once('close', () => closedAfter.push(Date.now() - openedAt));
      silent.push(s);
    }
    try {
      await waitFor('the silent connections connected', () => silent.every((s) => !s.connecting || s.destroyed));
      const cap = DEFAULT_LIMITS.maxPendingHandshakesPerSource;
      await waitFor('the connections over the per-source handshake cap closed', () => closedAfter.length >= 300 - cap, 2000);
      const stats = held();
      assert.ok(stats.pending <= cap, `at most ${cap} handshakes held for one source: ${JSON.stringify(stats)}`);
      const rssPeak = process.memoryUsage().rss;
      // Honest peers from elsewhere (the other node's address, another pod) still get fresh sessions.
      for (let i = 0; i < 5; i++) await honest(topo.node(1).netnsPath, cert);
      await honest(topo.pod(1, 1).netnsPath, cert);
      assert.ok(closedAfter.length < 300, 'some silent connections were still held while honest peers were served');
      await waitFor('every silent connection closed', () => closedAfter.length === 300, HANDSHAKE_MS + 3000);
      const last = Math.max(...closedAfter);
      assert.ok(last <= HANDSHAKE_MS + 1500 * TIME_SCALE, `the last silent connection was held ${last} ms (timeout ${HANDSHAKE_MS} ms)`);
      const immediate = closedAfter.filter((t) => t < HANDSHAKE_MS / 2).length;
      console.log(
        `# slowloris: ${immediate} of 300 closed at once, the rest after ${Math.min(...closedAfter.filter((t) => t >= HANDSHAKE_MS / 2))}–${last} ms (timeout ${HANDSHAKE_MS} ms); RSS ${mib(rssBefore)} before, ${mib(rssPeak)} while held, ${mib(process.memoryUsage().rss)} after`,
      );
      await waitFor('nothing held after the attack', () => held().pending === 0);
    } finally {
      for (const s of silent) s.destroy();
    }
  });

  test('a peer that finishes TLS but never sends the HTTP/2 preface is closed within the handshake timeout', async () => {
    const cert = await certFor(ca, spiffe(topo.pod(1, 1)));
    const started = Date.now();
    const closedAt = await new Promise<number>((resolve) => {
      const tcp = connectFromNetns(topo.node(1).netnsPath, target().ip, 15008, { allowHalfOpen: false });
      const s = tls.connect({ socket: tcp, ALPNProtocols: ['h2'], rejectUnauthorized: false, ...cert });
      s.on('error', () => undefined);
      s.resume(); // read, or the server's close would go unseen
      const bound = setTimeout(
        () => {
          resolve(Infinity);
          s.destroy();
        },
        (HANDSHAKE_MS + 5000) * TIME_SCALE,
      );
      s.once('close', () => {
        clearTimeout(bound);
        resolve(Date.now());
      });
    });
    const held = closedAt - started;
    assert.ok(held >= HANDSHAKE_MS - 200 && held <= HANDSHAKE_MS + 1500 * TIME_SCALE, `held ${held} ms (timeout ${HANDSHAKE_MS} ms)`);
  });

  test('a session with no open stream is closed after the idle time; one carrying a stream is not', async () => {
    const cert = await certFor(ca, spiffe(topo.pod(1, 1)));
    const busy = await openSession(topo.node(1).netnsPath, target().ip, cert);
    const idle = await openSession(topo.node(1).netnsPath, target().ip, cert);
    sessions.push(busy, idle);
    const open = await connectOk(busy, `${target().ip}:8080`);
    await firstLine(open);
    (await connectOk(idle, `${target().ip}:8080`)).close();
    const started = Date.now();
    const busyClosed = new Promise<void>((resolve) => busy.once('goaway', () => resolve()));
    await within(new Promise<void>((resolve) => idle.once('close', () => resolve())), IDLE_MS + 5000, 'the idle session closed');
    const idleFor = Date.now() - started;
    assert.ok(
      idleFor >= IDLE_MS - 200 && idleFor <= IDLE_MS + 1500 * TIME_SCALE,
      `idle session closed after ${idleFor} ms (idle limit ${IDLE_MS} ms)`,
    );
    assert.equal(await echo(open, 'busy'), 'busy', 'the session carrying a stream is still open');
    open.close();
    await within(busyClosed, IDLE_MS + 5000, 'the busy session closed once idle'); // once its stream is done, it goes idle too
  });

  test("500 CONNECTs with made-up baggage and service hosts add no series; source labels are the verified ones; a departed workload's series go", async () => {
    const source = topo.pod(1, 1);
    const session = await openSession(source.netnsPath, target().ip, await certFor(ca, spiffe(source)));
    sessions.push(session);
    const before = (await app.metrics.registry.metrics()).length;
    const key = (l: Record<string, string>): string => JSON.stringify(l);
    const closedTotal = async (): Promise<number> =>
      (await metric('istio_tcp_connections_closed_total').get()).values
        .filter((v) => v.labels.reporter === 'destination')
        .reduce((n, v) => n + v.value, 0);
    const closedBefore = await closedTotal();
    const known = new Set((await destinationSeries()).map((x) => key(x.labels)));
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const i = batch * 50 + j;
          const stream = await connectOk(session, `${target().ip}:8080`, {
            baggage: `k8s.namespace.name=evil${i},k8s.pod.name=fake${i},service.name=x${i},service.version=v${i}`,
            forwarded: `for="10.0.0.1";host=fake${i}.evil.svc`,
          });
          stream.close();
          await new Promise((res) => stream.once('close', res));
        }),
      );
    }
    await waitFor('500 connections closed and counted', async () => (await closedTotal()) >= closedBefore + 500);
    const text = await app.metrics.registry.metrics();
    assert.doesNotMatch(text, /evil|fake/, 'no claimed name reached a label');
    const series = await destinationSeries();
    const added = series.filter((x) => !known.has(key(x.labels)));
    assert.ok(added.length <= 1, `at most the verified series is new: ${JSON.stringify(added.map((x) => x.labels))}`);
    const fromSource = series.filter((x) => x.labels.source_principal === spiffe(source) && x.labels.source_workload !== 'unknown');
    assert.equal(fromSource.length, 1, `one series names the verified source: ${JSON.stringify(fromSource.map((x) => x.labels))}`);
    const verified = at(fromSource, 0, 'series of the verified source');
    assert.deepEqual(
      {
        w: verified.labels.source_workload,
        ns: verified.labels.source_workload_namespace,
        app: verified.labels.source_app,
        svc: verified.labels.destination_service,
      },
      { w: `${source.node.name}-${source.name}`, ns: 'default', app: 'client', svc: 'unknown' },
    );
    assert.ok(verified.value >= 500);
    console.log(`# baggage: 500 made-up claims → ${series.length} destination series; exposition ${text.length} bytes (${before} before)`);

    // From an address that is no workload's, baggage counts only when it names a workload of the proven identity.
    const other = topo.pod(1, 2);
    const fromNode = await openSession(topo.node(1).netnsPath, target().ip, await certFor(ca, spiffe(other)));
    sessions.push(fromNode);
    for (const [claim, host] of [
      [other, SERVICE],
      [source, 'x'],
    ] as const) {
      const stream = await connectOk(fromNode, `${target().ip}:8080`, {
        baggage: `k8s.namespace.name=default,k8s.pod.name=${claim.node.name}-${claim.name}`,
        forwarded: `for="10.0.0.1";host=${host}`,
      });
      stream.close();
      await new Promise((res) => stream.once('close', res));
    }
    const byPrincipal = await waitFor('both counted', async () => {
      const s = (await destinationSeries()).filter((x) => x.labels.source_principal === spiffe(other));
      return s.length === 2 ? s : undefined;
    });
    const seen = byPrincipal
      .map((s) => [s.labels.source_workload, s.labels.source_workload_namespace, s.labels.destination_service])
      .sort();
    assert.deepEqual(seen, [
      [`${other.node.name}-${other.name}`, 'default', SERVICE],
      ['unknown', 'default', 'unknown'],
    ]);

    // The source leaves the mesh: its series leave the exposition.
    await app.update(config([source]));
    await waitFor(
      "the departed source's series removed",
      async () => !(await destinationSeries()).some((s) => s.labels.source_workload === `${source.node.name}-${source.name}`),
    );
    assert.ok(
      (await destinationSeries()).some((s) => s.labels.source_workload === `${other.node.name}-${other.name}`),
      'series of workloads still present stay',
    );
    await app.update(config());
  });
});
