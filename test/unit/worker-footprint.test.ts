// What a tunnel worker process loads, and how many the agent starts by default.
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { defaultWorkerCount, WORKER_V8_FLAGS } from '../../src/tunnel/worker-host';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-worker-footprint-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('`ambit worker` loads the data path only: no gRPC, protobuf, X.509 issuing, YAML, Kubernetes or roots', async () => {
  // Preloaded into the worker: once it is waiting for its init message, it reports every module it loaded.
  const report = path.join(dir, 'report.js');
  fs.writeFileSync(report, 'setTimeout(() => process.send({ modules: Object.keys(require.cache) }), 300);\n');
  const child = fork(CLI, ['worker'], { execArgv: ['--require', report, ...WORKER_V8_FLAGS], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  try {
    const { modules } = await new Promise<{ modules: string[] }>((resolve, reject) => {
      child.once('message', (m) => resolve(m as { modules: string[] }));
      child.once('exit', (code) => reject(new Error(`worker exited (${code}) before reporting`)));
    });
    const heavy = modules.filter((m) =>
      /node_modules\/(@grpc|@peculiar|protobufjs|yaml|tsyringe)\/|\/src\/(roots|sources|kube|control-plane|waypoint)\/|\/identity\/(cert-manager|builtin-ca|ca-client)\.js$/.test(
        m,
      ),
    );
    assert.deepEqual(heavy, []);
    assert.ok(
      modules.some((m) => m.endsWith('/src/tunnel/worker.js')),
      'the worker module itself is loaded',
    );
  } finally {
    child.kill('SIGKILL');
  }
});

test('the default worker count: the CPUs this process may use, fewer under a cgroup CPU quota, at least one', () => {
  const cpus = os.availableParallelism();
  const proc = path.join(dir, 'proc');
  const cg = path.join(dir, 'cgroup');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.mkdirSync(path.join(cg, 'kubepods/pod1/agent'), { recursive: true });
  const cgroupFile = path.join(proc, 'self/cgroup');
  fs.writeFileSync(cgroupFile, '0::/kubepods/pod1/agent\n');
  // No cpu.max anywhere (or cgroup v1): every CPU of the affinity mask.
  assert.equal(defaultWorkerCount(proc, cg), cpus);
  fs.writeFileSync(path.join(cg, 'kubepods/pod1/agent/cpu.max'), 'max 100000\n');
  assert.equal(defaultWorkerCount(proc, cg), cpus);
  // A limit of 0.5 CPU on an ancestor (the pod) holds for the agent's cgroup too.
  fs.writeFileSync(path.join(cg, 'kubepods/pod1/cpu.max'), '50000 100000\n');
  assert.equal(defaultWorkerCount(proc, cg), 1);
  fs.writeFileSync(path.join(cg, 'kubepods/pod1/cpu.max'), `${(cpus + 4) * 100000} 100000\n`);
  assert.equal(defaultWorkerCount(proc, cg), cpus);
  fs.writeFileSync(cgroupFile, '1:cpu:/\n'); // cgroup v1 only
  assert.equal(defaultWorkerCount(proc, cg), cpus);
  assert.equal(defaultWorkerCount(path.join(dir, 'absent'), cg), cpus);
});
