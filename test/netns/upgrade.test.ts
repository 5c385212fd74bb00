// Root: an agent upgrade whose connect4 changed. The pinned link is kept
// and its program swapped atomically (bpf_link_update); unchanged programs
// are reused; nothing is attached twice and capture works throughout.
// The "old" build is the same source compiled with another cgroup depth,
// which changes connect4's instructions (and so its tag) only.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Enrolment } from '../../src/datapath/enrolment';
import { Datapath } from '../../src/datapath/loader';
import { listenerServer } from '../../src/datapath/netns';
import { datapathStatus } from '../../src/datapath/status';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, pinDirFor, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { must } from '../helpers/must';
import { sh } from '../helpers/proc';
import type { Topology } from '../helpers/topology';

const ROOT = path.resolve(__dirname, '../../..');
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
      '-DAMBIT_MAX_CGROUP_DEPTH=6',
      '-c',
      path.join(ROOT, `bpf/${f}.c`),
      '-o',
      path.join(oldObjDir, `${f}.o`),
    ]);
  }
});

after(() => cleanup.run());

/** Enrols the pod with this datapath and answers every captured connection with its original destination. */
function serve(dp: Datapath): { enrolment: Enrolment; close: () => void } {
  const enrolment = new Enrolment(dp);
  const pod = enrolment.enrol(workloadOf(topo.pod(1, 1)));
  const outbound = listenerServer(pod.listeners.outbound);
  outbound.on('connection', (s: net.Socket) => {
    // A client that reset before this ran has no address left to look up.
    if (!s.remoteAddress || !s.remotePort) return void s.destroy();
    const orig = dp.maps.origDst(pod.podId, s.remoteAddress, s.remotePort);
    s.end(`${orig ? `${orig.ip}:${orig.port}` : 'none'}\n`);
  });
  return {
    enrolment,
    close: () => {
      outbound.close();
      enrolment.unenrol(pod.workload.uid);
      dp.close();
    },
  };
}

test('a changed connect4 replaces the program in the pinned link; the others are reused', async () => {
  const node = topo.node(1);
  const pinDir = pinDirFor(topo, node);
  const old = Datapath.open({ pinDir, cgroupPath: node.podsCgroup, objDir: oldObjDir });
  assert.deepEqual(
    old.attachments.map((a) => a.action),
    ['attached', 'attached', 'attached', 'attached', 'attached'],
  );
  const connect4 = (): { linkId: number; tag: string } =>
    must(
      datapathStatus(pinDir).links.find((l) => l.pin === 'connect4'),
      'the connect4 link',
    );
  const before = connect4();
  const v1 = serve(old);
  const r1 = await dialFrom(topo, topo.pod(1, 1), '192.0.2.7', 80);
  assert.deepEqual(r1.firstLines, { '192.0.2.7:80': 1 }, 'the old build captures');
  v1.close();

  const upgraded = Datapath.open({ pinDir, cgroupPath: node.podsCgroup });
  assert.deepEqual(upgraded.attachments, [
    { link: 'connect4', action: 'replaced' },
    { link: 'sockops', action: 'reused' },
    { link: 'getpeername4', action: 'reused' },
    // connect6 shares connect4's cgroup walk, so the depth changed it too.
    { link: 'connect6', action: 'replaced' },
    { link: 'getpeername6', action: 'reused' },
  ]);
  const after = connect4();
  assert.equal(after.linkId, before.linkId, 'the same link');
  assert.notEqual(after.tag, before.tag, 'now running the new program');

  const links = JSON.parse(await sh('bpftool', ['link', 'show', '--json'])) as { cgroup_id?: number }[];
  assert.equal(links.filter((l) => l.cgroup_id === fs.statSync(node.podsCgroup).ino).length, 5, 'still one attachment of each program');
  const v2 = serve(upgraded);
  const r2 = await dialFrom(topo, topo.pod(1, 1), '192.0.2.7', 81);
  assert.deepEqual(r2.firstLines, { '192.0.2.7:81': 1 }, 'the new build captures');
  v2.close();
});

test('after teardown no namespace, cgroup or pin remains', () => cleanup.run());
