// Root: startup probing refuses clearly when privileges are missing. The
// capabilities are dropped from the bounding set with setpriv, so even
// root runs without them.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { before, test } from 'node:test';
import { requireRoot } from '../helpers/fixture';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr })),
  );
}

before(requireRoot);

test('with every capability, every probe passes on this kernel', async () => {
  const r = await run(process.execPath, [CLI, 'datapath', 'probe']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /FAIL/);
  assert.match(r.stdout, /ok {3}sk_lookup programs: supported/);
});

test('without CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN the probe names them and fails', async () => {
  const r = await run('setpriv', [
    '--bounding-set',
    '-bpf,-net_admin,-sys_admin',
    '--inh-caps',
    '-all',
    '--',
    process.execPath,
    CLI,
    'datapath',
    'probe',
  ]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /FAIL capabilities: missing CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF; run as root or grant them/);
});

test('a pin directory outside bpffs is reported with the mount command that fixes it', async () => {
  const r = await run(process.execPath, [CLI, 'datapath', 'probe', '--pin-dir', '/tmp/not-bpffs/ambit']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /FAIL bpffs: no bpf file system holds \/tmp\/not-bpffs\/ambit; fix: mount -t bpf bpf/);
});
