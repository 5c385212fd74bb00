// Root: AF_INET6 sockets of enrolled pods. A v4-mapped destination
// (::ffff:a.b.c.d, what Java and any dual-stack socket dial) is captured by
// connect6 exactly like IPv4 and carried over HBONE, and getpeername6 gives
// the app back what it dialed. Native IPv6 is not carried yet, so it fails
// closed both ways: an enrolled pod's connect() to an IPv6 destination is
// refused (EPERM) and IPv6 TCP to an enrolled pod is reset by sk_lookup.
// Both agents run in this process (PodAgent), as in tunnel.test.ts.
// Topology: 2 nodes × 3 pods with ULA addresses beside the IPv4 ones; p1,
// p2 in the mesh, p3 not in the configuration at all.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { libcFns } from '../../src/datapath/ffi';
import { DatapathMaps } from '../../src/datapath/maps';
import { datapathStatus, openPinnedMaps } from '../../src/datapath/status';
import { createLogger } from '../../src/observability/log';
import { PodAgent } from '../../src/roots/pod-agent';
import { Cleanup } from '../helpers/cleanup';
import { CLI, meshConfig, PODAPP, pinDirFor, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { collect, lastJson, sh, TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import type { TestNode, TestPod, Topology } from '../helpers/topology';

/** One connection from an AF_INET6 (or AF_INET) socket: what getpeername() said and the server's first line, or the error code. */
const DIAL = `
const net = require('node:net');
const [host, port, ms] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
let buf = '';
let peer = '';
const done = (o) => { console.log(JSON.stringify(o)); s.destroy(); };
s.setTimeout(Number(ms), () => done({ error: 'ETIMEDOUT' }));
s.on('connect', () => { peer = s.remoteAddress + ':' + s.remotePort; });
s.on('data', (d) => {
  buf += d;
  const nl = buf.indexOf('\\n');
  if (nl >= 0) done({ peer, family: s.remoteFamily, line: buf.slice(0, nl) });
});
s.on('error', (e) => done({ error: e.code }));
s.on('end', () => done({ error: 'ECLOSED' }));
`;

/** Listens on [::]:PORT (both families); each connection gets one line {local, remote}. */
const WHOAMI6 = `
const net = require('node:net');
net.createServer((s) => s.end(JSON.stringify({ local: s.localAddress + ':' + s.localPort, remote: s.remoteAddress }) + '\\n'))
  .listen({ host: '::', port: Number(process.argv[1]) }, () => console.log(JSON.stringify({ listening: process.argv[1] })));
`;

/** Inside one pod: a server on [::1]:0 and a connection to it from the same pod. */
const LOOPBACK6 = `
const net = require('node:net');
const srv = net.createServer((s) => s.end('hi\\n')).listen({ host: '::1', port: 0 }, () => {
  const c = net.connect({ host: '::1', port: srv.address().port });
  c.on('data', (d) => { console.log(JSON.stringify({ got: String(d).trim() })); c.destroy(); srv.close(); });
  c.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); srv.close(); });
});
`;

interface Dialed {
  peer?: string;
  family?: string;
  line?: string;
  error?: string;
}

describe('IPv6 and v4-mapped sockets of enrolled pods', () => {
  let topo: Topology;
  let dir: string;
  const apps: PodAgent[] = [];
  const cleanup = new Cleanup();
  const log = createLogger(process.env.AMBIT_TEST_LOG ?? 'silent');
  const agent = (i: number): PodAgent => at(apps, i - 1, 'agents');
  const handshakes = (i: number): number => must(agent(i).tunnel, `the tunnel of n${i}`).handshakes();
  const counter = (node: TestNode, reason: string): bigint =>
    datapathStatus(pinDirFor(topo, node)).counters?.[reason as 'CONNECT_REDIRECTED'] ?? 0n;
  const ip6 = (pod: TestPod): string => must(pod.ip6, `${pod.uid} has an IPv6 address`);

  async function dial(from: TestPod, host: string, port: number, timeoutMs = 5000): Promise<Dialed> {
    const r = await collect(topo.spawnInPod(from, process.execPath, ['-e', DIAL, host, String(port), String(timeoutMs * TIME_SCALE)]));
    assert.equal(r.code, 0, `dial from ${from.uid} failed: ${r.stderr}`);
    return lastJson<Dialed>(r.stdout);
  }

  async function serve(pod: TestPod, args: string[], what: string): Promise<void> {
    const app = topo.spawnInPod(pod, process.execPath, args);
    await waitForLine(app, (l) => l.includes('listening'), `${what} in ${pod.uid}`);
  }

  /** TCP on the wire between the nodes (the switch's bridge) while fn runs, as "src.port > dst.port" lines. */
  async function onTheWire(fn: () => Promise<void>): Promise<string[]> {
    const dump: ChildProcess = topo.spawnInSwitch('tcpdump', ['-i', 'br0', '-n', '-l', '-q', '--immediate-mode', 'tcp']);
    const lines: string[] = [];
    let stderr = '';
    dump.stdout?.on('data', (d) => lines.push(...String(d).split('\n').filter(Boolean)));
    dump.stderr?.on('data', (d) => {
      stderr += d;
    });
    await waitFor('tcpdump listening', () => stderr.includes('listening on'));
    try {
      await fn();
    } finally {
      // 'close', not 'exit': the last lines may still be in the pipe when it exits.
      const exited = new Promise((r) => dump.once('close', r));
      dump.kill('SIGINT');
      await exited;
    }
    return lines.flatMap((l) => {
      const m = /\s(\S+)\.(\d+) > (\S+)\.(\d+):/.exec(l);
      return m ? [`${m[1]}.${m[2]} > ${m[3]}.${m[4]}`] : [];
    });
  }
  const ports = (packets: string[]): Set<string> =>
    new Set(packets.flatMap((p) => p.split(' > ').map((e) => e.slice(e.lastIndexOf('.') + 1))));

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3, ula: true }));
    cleanup.add('the agents', () => {
      for (const a of apps.splice(0)) a.stop();
    });
    const inMesh = topo.pods.filter((p) => p.name !== 'p3');
    for (const node of topo.nodes) {
      apps.push(
        await PodAgent.start({
          config: meshConfig(topo, dir, {
            workloads: inMesh.map((p) => ({ ...workloadOf(p), serviceAccount: `sa-${p.node.name}-${p.name}` })),
          }),
          scope: { node: node.name },
          podsCgroup: node.podsCgroup,
          pinDir: pinDirFor(topo, node),
          log,
          authorizer: () => ({ check: () => ({ allow: true }) }),
        }),
      );
    }
    for (const pod of topo.pods) {
      await serve(pod, [PODAPP, 'whoami', '8080'], 'whoami');
      await serve(pod, ['-e', WHOAMI6, '8086'], 'whoami6');
    }
  });

  after(() => cleanup.run());

  test('v4-mapped: an AF_INET6 client is carried over HBONE (only :15008 on the wire) and sees the address it dialed', async () => {
    const client = topo.pod(1, 1);
    const server = topo.pod(2, 1);
    const mapped = `::ffff:${server.ip}`;
    const before = { handshakes: handshakes(2), redirected: counter(client.node, 'CONNECT_REDIRECTED_V4MAPPED') };
    let r: Dialed = {};
    const wire = await onTheWire(async () => {
      r = await dial(client, mapped, 8080);
    });
    assert.deepEqual(
      { peer: r.peer, family: r.family },
      { peer: `${mapped}:8080`, family: 'IPv6' },
      `getpeername6 gives back what was dialed: ${JSON.stringify(r)}`,
    );
    const line = JSON.parse(must(r.line, `a first line: ${JSON.stringify(r)}`)) as { local: string; remote: string };
    assert.deepEqual(
      { local: line.local, remote: line.remote.replace(/:\d+$/, '') },
      { local: `${server.ip}:8080`, remote: server.ip },
      'delivered by the tunnel from inside the server pod',
    );
    assert.ok(handshakes(2) > before.handshakes, 'arrived over mutual TLS at n2');
    assert.ok(counter(client.node, 'CONNECT_REDIRECTED_V4MAPPED') > before.redirected, 'counted by connect6');
    assert.ok(wire.length > 0, 'packets seen on the wire');
    assert.deepEqual(
      wire.filter((p) => !/\.15008( |$)/.test(p)),
      [],
      'nothing but HBONE (:15008) between the nodes',
    );
    // Both records of the connection are dropped once the client socket closed.
    await waitFor('original-destination records dropped', () => {
      const fds = openPinnedMaps(pinDirFor(topo, client.node));
      let left: { byCookie: number; byFlow: number };
      try {
        left = new DatapathMaps(fds).pendingRecords();
      } finally {
        for (const fd of fds.values()) libcFns.close(fd);
      }
      const { byCookie, byFlow } = left;
      return byCookie === 0 && byFlow === 0;
    });
  });

  test('v4-mapped from a pod outside the mesh is untouched: plaintext :8080 on the wire (the capture above can fail)', async () => {
    const client = topo.pod(1, 3);
    const server = topo.pod(2, 3);
    let r: Dialed = {};
    const wire = await onTheWire(async () => {
      r = await dial(client, `::ffff:${server.ip}`, 8080);
    });
    assert.equal(r.peer, `::ffff:${server.ip}:8080`);
    assert.equal((JSON.parse(must(r.line, JSON.stringify(r))) as { remote: string }).remote.replace(/:\d+$/, ''), client.ip);
    assert.ok(ports(wire).has('8080'), `plain :8080 seen: ${wire.join(', ')}`);
  });

  test('native IPv6 from an enrolled pod is refused at connect() (EPERM); ::1 stays open; outside the mesh it goes through', async () => {
    const target = topo.pod(2, 3);
    const outside = await dial(topo.pod(1, 3), ip6(target), 8086);
    assert.equal(
      (JSON.parse(must(outside.line, `IPv6 works on the bed: ${JSON.stringify(outside)}`)) as { remote: string }).remote,
      ip6(topo.pod(1, 3)),
    );

    const node = topo.node(1);
    const refusedBefore = counter(node, 'CONNECT_REFUSED_IPV6');
    const started = Date.now();
    assert.deepEqual(await dial(topo.pod(1, 1), ip6(target), 8086), { error: 'EPERM' });
    assert.ok(Date.now() - started < 2000 * TIME_SCALE, 'refused at once, not after a timeout');
    assert.deepEqual(await dial(topo.pod(1, 2), ip6(topo.pod(1, 1)), 8086), { error: 'EPERM' }, 'same node too');
    assert.equal(counter(node, 'CONNECT_REFUSED_IPV6') - refusedBefore, 2n);

    const loop = await collect(topo.spawnInPod(topo.pod(1, 1), process.execPath, ['-e', LOOPBACK6]));
    assert.deepEqual(lastJson(loop.stdout), { got: 'hi' }, `::1 inside the pod: ${loop.stderr}`);
  });

  test('native IPv6 to an enrolled pod is reset by sk_lookup, never delivered to the app; its IPv4 still is, through the tunnel', async () => {
    const client = topo.pod(1, 3);
    const server = topo.pod(2, 1);
    const node = topo.node(2);
    const droppedBefore = counter(node, 'LOOKUP_DROP_IPV6');
    assert.deepEqual(await dial(client, ip6(server), 8086, 2000), { error: 'ECONNREFUSED' });
    assert.deepEqual(await dial(client, ip6(server), 15008, 2000), { error: 'ECONNREFUSED' }, 'the HBONE port as well');
    assert.equal(counter(node, 'LOOKUP_DROP_IPV6') - droppedBefore, 2n);

    // The same app over IPv4 (a mesh client) is reached, through the tunnel.
    const v4 = await dial(topo.pod(1, 1), server.ip, 8086);
    assert.equal((JSON.parse(must(v4.line, JSON.stringify(v4))) as { remote: string }).remote, `::ffff:${server.ip}`);

    const status = JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, node), '--json'])) as {
      counters: Record<string, number | string>;
    };
    assert.ok(Number(status.counters.LOOKUP_DROP_IPV6) >= 2, `ambit datapath status shows the drops: ${JSON.stringify(status.counters)}`);
  });

  test('after teardown no namespace, cgroup or pin remains', async () => {
    await cleanup.run();
  });
});
