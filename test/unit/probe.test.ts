import assert from 'node:assert/strict';
import { test } from 'node:test';
import { effectiveCaps, kernelVersion, mountsOfType } from '../../src/datapath/probe';

const MOUNTINFO = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 22 0:36 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
`;

test('mountsOfType reads the file-system type after the separator', () => {
  assert.deepEqual(mountsOfType('cgroup2', MOUNTINFO), ['/sys/fs/cgroup/unified']);
  assert.deepEqual(mountsOfType('bpf', MOUNTINFO), ['/sys/fs/bpf']);
  assert.deepEqual(mountsOfType('xfs', MOUNTINFO), []);
});

test('effectiveCaps parses CapEff as a bit set', () => {
  const caps = effectiveCaps('Name:\tnode\nCapEff:\t000001ffffffffff\n');
  assert.ok(caps & (1n << 39n), 'CAP_BPF');
  assert.equal(effectiveCaps('CapEff:\t0000000000000000\n'), 0n);
});

test('kernelVersion takes major.minor from a release string', () => {
  assert.deepEqual(kernelVersion('5.10.0-32-amd64'), [5, 10]);
  assert.deepEqual(kernelVersion('6.18.44-fc'), [6, 18]);
});
