// Root: what an operator sees of a running `ambit node` — Prometheus
// metrics after known traffic (Istio's TCP metrics from both reporters, with
// their labels), failures by reason, datapath counters, readiness, the admin
// API (config dump without keys, log level, quit) and that the admin port
// listens on localhost only.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Cleanup, waitExit } from '../helpers/cleanup';
import {
  ADMIN_MUTATION,
  connectionFailures,
  dialFrom,
  dialOutcome,
  httpInNetns,
  PODAPP,
  requireRoot,
  sample,
  spawnNodeAgent,
  testBed,
  workloadOf,
  writeMeshYaml,
} from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { jsonLines, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { TestNode, Topology } from '../helpers/topology';

describe('operations: metrics, readiness, admin', () => {
  let topo: Topology;
  let dir: string;
  const agents = new Map<string, ChildProcess>();
  const logs = new Map<string, Record<string, unknown>[]>();
  const logOf = (node: string): Record<string, unknown>[] => must(logs.get(node), `the log of ${node}`);
  const cleanup = new Cleanup();
  const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;
  const metrics = async (node: TestNode): Promise<string> => (await httpInNetns(node, '127.0.0.1', 15020, 'GET', '/metrics')).body;

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 1 }));
    const config = writeMeshYaml(topo, dir, {
      workloads: topo.pods.map((p) => ({
        ...workloadOf(p),
        name: `${p.node.name}-${p.name}`,
        serviceAccount: `sa-${p.node.name}`,
        labels: { app: `app-${p.node.name}`, version: 'v7' },
      })),
    });
    for (const node of topo.nodes) {
      const agent = spawnNodeAgent(topo, node, ['--config', config]);
      agents.set(node.name, agent);
      logs.set(node.name, jsonLines(agent));
      await waitForLine(agent, (l) => l.includes('"node ready"'), `agent ${node.name}`);
    }
    const app = topo.spawnInPod(topo.pod(2, 1), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami');
  });

  after(() => cleanup.run());

  test('readiness says ready once the node serves', async () => {
    const r = await httpInNetns(topo.node(1), '127.0.0.1', 15021, 'GET', '/healthz/ready');
    assert.deepEqual(r, { status: 200, body: 'ready\n' });
  });

  test('Istio TCP metrics after known traffic, from the source and the destination, with every label known', async () => {
    const [n1, n2] = [topo.node(1), topo.node(2)];
    const r = await dialFrom(topo, topo.pod(1, 1), topo.pod(2, 1).ip, 8080, 30, 5);
    assert.equal(r.failed, 0);
    const expected = {
      source_workload: 'n1-p1',
      source_workload_namespace: 'default',
      source_principal: id('sa-n1'),
      source_app: 'app-n1',
      source_version: 'v7',
      destination_workload: 'n2-p1',
      destination_workload_namespace: 'default',
      destination_principal: id('sa-n2'),
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    };
    const source = { reporter: 'source', ...expected };
    const destination = { reporter: 'destination', ...expected };
    // Connections are counted closed when both ends are done: wait for the last one.
    await waitFor(
      '30 closed connections on both reporters',
      async () =>
        sample(await metrics(n1), 'istio_tcp_connections_closed_total', source) === 30 &&
        sample(await metrics(n2), 'istio_tcp_connections_closed_total', destination) === 30,
    );
    const m1 = await metrics(n1);
    const m2 = await metrics(n2);
    assert.equal(sample(m1, 'istio_tcp_connections_opened_total', source), 30);
    assert.equal(sample(m2, 'istio_tcp_connections_opened_total', destination), 30);
    const sent = sample(m1, 'istio_tcp_sent_bytes_total', source) ?? 0;
    assert.ok(sent > 30 * 40, `sent bytes ${sent}: 30 whoami lines toward the source`);
    assert.equal(sample(m2, 'istio_tcp_sent_bytes_total', destination), sent, 'both reporters count the same bytes');
    assert.equal(sample(m1, 'istio_tcp_received_bytes_total', source), 0, 'the client sent nothing');
    assert.doesNotMatch(
      m1
        .split('\n')
        .filter((l) => l.startsWith('istio_tcp_connections_opened_total{reporter="source",source_workload="n1-p1"'))
        .join('\n'),
      /destination_workload="unknown"/,
    );
    assert.ok((sample(m1, 'ambit_datapath_events_total', { reason: 'CONNECT_REDIRECTED' }) ?? 0) >= 30, 'datapath counters read on scrape');
    assert.ok((sample(m2, 'ambit_datapath_events_total', { reason: 'LOOKUP_TO_HBONE' }) ?? 0) >= 1);
    assert.ok((sample(m1, 'ambit_certificate_expiry_timestamp_seconds', { identity: id('sa-n1') }) ?? 0) > Date.now() / 1000 + 23 * 3600);
    assert.ok((sample(m1, 'ambit_pool_sessions', {}) ?? 0) >= 1);
    assert.match(m1, /^process_open_fds \d+/m);
    assert.match(m1, /^nodejs_eventloop_lag_seconds /m);
  });

  test("access log: one line per connection on each side, sharing the connection id, with Istio's fields", async () => {
    const out = logOf('n1').filter((l) => l.direction === 'outbound' && l.msg === 'connection complete');
    assert.ok(out.length >= 30, `${out.length} outbound lines`);
    const fields = [
      'src.addr',
      'src.workload',
      'src.namespace',
      'src.identity',
      'dst.addr',
      'dst.hbone_addr',
      'dst.workload',
      'dst.namespace',
      'dst.identity',
      'bytes_sent',
      'bytes_recv',
      'duration',
    ];
    for (const line of out)
      for (const f of fields) assert.ok(line[f] !== undefined && line[f] !== null, `outbound line lacks ${f}: ${JSON.stringify(line)}`);
    const first = at(out, 0, 'outbound lines');
    const peer = await waitFor("the destination's line for the same connection", () =>
      logOf('n2').find((l) => l.direction === 'inbound' && l.conn_id === first.conn_id),
    );
    for (const f of fields) assert.ok(peer[f] !== undefined, `inbound line lacks ${f}: ${JSON.stringify(peer)}`);
    assert.equal(peer['src.identity'], first['src.identity']);
    assert.equal(peer['src.workload'], 'n1-p1');
    assert.equal(peer.bytes_sent, first.bytes_recv, 'what the destination sent is what the source received');
    assert.match(String(first.duration), /^\d+\.\d{3}ms$/);
  });

  test('failures are counted by reason on both sides', async () => {
    // A tunnel port as the destination: the destination answers 503, the source closes the app's connection.
    await expectRefusal(
      dialOutcome(topo, topo.pod(1, 1), topo.pod(2, 1).ip, 15006, 2000),
      { closed: true },
      2000,
      'CONNECT to a tunnel port',
    );
    await waitFor('the inbound refusal counted', async () => (await connectionFailures(topo.node(2), 'inbound', 'tunnel_port')) === 1);
    assert.equal(await connectionFailures(topo.node(1), 'outbound', 'AMBIT_E_HBONE_STATUS'), 1);
  });

  test('admin: config dump without keys, log level at runtime, localhost only, quit', async () => {
    const node = topo.node(1);
    const dump = await httpInNetns(node, '127.0.0.1', 15000, 'GET', '/config_dump');
    assert.equal(dump.status, 200);
    const parsed = JSON.parse(dump.body) as {
      pods: { uid: string; identity: string }[];
      certificates: { identity: string }[];
      datapath: { links: unknown[] };
      dataPlane: { pending: string[] };
    };
    assert.deepEqual(
      parsed.pods.map((p) => [p.uid, p.identity]),
      [[topo.pod(1, 1).uid, id('sa-n1')]],
    );
    assert.deepEqual(parsed.dataPlane.pending, []);
    assert.deepEqual(
      parsed.certificates.map((c) => c.identity),
      [id('sa-n1')],
    );
    assert.equal(parsed.datapath.links.length, 6, 'five cgroup links and the one pod netns link');
    assert.doesNotMatch(dump.body, /PRIVATE KEY/, 'no private key in the dump');

    assert.equal(
      (await httpInNetns(node, '127.0.0.1', 15000, 'POST', '/logging?level=debug')).status,
      403,
      'a mutation without x-ambit-admin (what a browser page can forge)',
    );
    assert.deepEqual(await httpInNetns(node, '127.0.0.1', 15000, 'POST', '/logging?level=debug', ADMIN_MUTATION), {
      status: 200,
      body: 'level=debug\n',
    });
    assert.deepEqual(await httpInNetns(node, '127.0.0.1', 15000, 'POST', '/logging', ADMIN_MUTATION), {
      status: 200,
      body: 'level=debug\n',
    });
    assert.equal((await httpInNetns(node, '127.0.0.1', 15000, 'POST', '/logging?level=loud', ADMIN_MUTATION)).status, 400);

    await assert.rejects(
      httpInNetns(node, node.wireIp, 15000, 'GET', '/config_dump'),
      /ECONNREFUSED/,
      'the admin API is not reachable from the network',
    );
    assert.equal((await httpInNetns(node, node.wireIp, 15020, 'GET', '/metrics')).status, 200, 'metrics are');

    const agent = must(agents.get(node.name), `agent ${node.name}`);
    const exited = new Promise<number | null>((resolve) => agent.once('exit', (code) => resolve(code)));
    assert.equal((await httpInNetns(node, '127.0.0.1', 15000, 'POST', '/quitquitquit', ADMIN_MUTATION)).status, 200);
    assert.equal(await exited, 0);
  });

  test('after teardown no namespace, cgroup, pin or process remains', async () => {
    for (const a of agents.values()) a.kill('SIGTERM');
    await Promise.all([...agents.values()].map(waitExit));
    await cleanup.run();
  });
});
