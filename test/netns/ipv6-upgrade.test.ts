// Root: upgrading over pins of an agent with fewer counter reasons (as any
// agent from before the IPv6 reasons). libbpf refuses a pinned map of another
// size; the loader replaces the counters map alone (capture state is kept),
// replaces every program so none keeps counting into the dropped map, and
// attaches connect6/getpeername6. The "old" build is the same source with
// the counters map sized for 15 reasons.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Enrolment } from '../../src/datapath/enrolment';
import { Datapath } from '../../src/datapath/loader';
import { listenerServer } from '../../src/datapath/netns';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, pinDirFor, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { sh } from '../helpers/proc';
import type { Topology } from '../helpers/topology';

const ROOT = path.resolve(__dirname, '../../..');
const OLD_REASONS = 15;
let topo: Topology;
let oldObjDir: string;
const cleanup = new Cleanup();

before(async () => {
  requireRoot();
  ({ topo, dir: oldObjDir } = await testBed(cleanup, { nodes: 1, podsPerNode: 1 }));
  for (const f of ['redirect', 'inbound']) {
    execFileSync('clang', [
      '-target',
      'bpf',
      '-O2',
      '-g',
      '-Wall',
      '-Werror',
      `-I/usr/include/${os.arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
      `-DAMBIT_COUNTER_SLOTS=${OLD_REASONS}`,
      '-c',
      path.join(ROOT, `bpf/${f}.c`),
      '-o',
      path.join(oldObjDir, `${f}.o`),
    ]);
  }
});

after(() => cleanup.run());

/** Enrols the pod and answers every captured connection with its original destination. */
function serve(dp: Datapath): () => void {
  const enrolment = new Enrolment(dp);
  const pod = enrolment.enrol(workloadOf(topo.pod(1, 1)));
  const outbound = listenerServer(pod.listeners.outbound);
  outbound.on('connection', (s: net.Socket) => {
    if (!s.remoteAddress || !s.remotePort) return void s.destroy();
    const orig = dp.maps.origDst(pod.podId, s.remoteAddress, s.remotePort);
    s.end(`${orig ? `${orig.ip}:${orig.port}` : 'none'}\n`);
  });
  return () => {
    outbound.close();
    enrolment.unenrol(pod.workload.uid);
    dp.close();
  };
}

async function countersSize(pinDir: string): Promise<number> {
  const info = JSON.parse(await sh('bpftool', ['map', 'show', 'pinned', path.join(pinDir, 'maps', 'counters'), '--json'])) as {
    max_entries: number;
  };
  return info.max_entries;
}

test('a counters map pinned with fewer reasons is replaced on load; every program is swapped and counts into the new one', async () => {
  const node = topo.node(1);
  const pinDir = pinDirFor(topo, node);
  const old = Datapath.open({ pinDir, cgroupPath: node.podsCgroup, objDir: oldObjDir });
  assert.equal(await countersSize(pinDir), OLD_REASONS);
  const closeOld = serve(old);
  assert.deepEqual((await dialFrom(topo, topo.pod(1, 1), '192.0.2.7', 80)).firstLines, { '192.0.2.7:80': 1 }, 'the old build captures');
  closeOld();

  const upgraded = Datapath.open({ pinDir, cgroupPath: node.podsCgroup });
  assert.deepEqual(
    upgraded.attachments.map((a) => a.action),
    ['replaced', 'replaced', 'replaced', 'replaced', 'replaced'],
    'same tags, but they must stop using the dropped map',
  );
  assert.ok((await countersSize(pinDir)) > OLD_REASONS, 'the counters map has a slot for every reason now');
  const closeNew = serve(upgraded);
  assert.deepEqual((await dialFrom(topo, topo.pod(1, 1), '192.0.2.7', 81)).firstLines, { '192.0.2.7:81': 1 }, 'the new build captures');
  assert.deepEqual((await dialFrom(topo, topo.pod(1, 1), '::ffff:192.0.2.7', 82)).firstLines, { '192.0.2.7:82': 1 }, 'and v4-mapped');
  const counters = upgraded.maps.readCounters();
  assert.equal(counters.CONNECT_REDIRECTED, 1n, 'counted in the new map, from 0');
  assert.equal(counters.CONNECT_REDIRECTED_V4MAPPED, 1n);
  closeNew();
});

test('after teardown no namespace, cgroup or pin remains', () => cleanup.run());
