// Pods pending enrolment, as an operator sees them: in the readiness answer
// (which they do not turn into a 503) and in `ambit datapath status`, which
// asks the agent's admin endpoint for them. Real HTTP servers on loopback
// ports; no root needed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { pendingPodsOf } from '../../src/datapath/status';
import { type AdminPorts, MAX_READY_PODS, type Readiness, startAdmin } from '../../src/observability/admin';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-pending-'));
let readiness: Readiness = { pending: [] };
let dump: unknown = {};
let ports: AdminPorts;
let close: () => void;

before(async () => {
  ({ ports, close } = await startAdmin(
    {
      metrics: () => Promise.resolve(''),
      readiness: () => readiness,
      configDump: () => dump,
      log: pino({ level: 'silent' }),
      setLogLevel: () => {},
      quit: () => {},
    },
    { admin: 0, stats: 0, ready: 0 },
  ));
});
after(() => {
  close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function get(port: number, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function ambit(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
}

const ghost = { uid: 'shop/ghost', why: 'enrolment failed (retried at the next change): cannot open netns /var/run/netns/x: ENOENT' };
const web = { uid: 'shop/web', why: 'no netns and cgroup yet: waiting for its sandbox (a CNI ADD, or a process of the pod)' };

test('pods pending enrolment keep the process ready: 200, listed after "ready"', async () => {
  readiness = { pending: [], pods: [ghost, web] };
  const r = await get(ports.ready, '/healthz/ready');
  assert.equal(r.status, 200);
  assert.equal(
    r.body,
    'ready\npods pending enrolment (not captured yet; they do not make this process not ready):\n' +
      `- shop/ghost: ${ghost.why}\n- shop/web: ${web.why}\n`,
  );
  readiness = { pending: [] };
  assert.deepEqual(await get(ports.ready, '/healthz/ready'), { status: 200, body: 'ready\n' });
});

test('what the process itself lacks still answers 503, with the pending pods after it', async () => {
  readiness = { pending: ['listeners of pod shop/a'], pods: [web] };
  const r = await get(ports.ready, '/healthz/ready');
  assert.equal(r.status, 503);
  assert.match(r.body, /^not ready:\n- listeners of pod shop\/a\npods pending enrolment .*:\n- shop\/web: no netns/);
});

test(`at most ${MAX_READY_PODS} pods are listed, then how many more`, async () => {
  readiness = { pending: [], pods: Array.from({ length: MAX_READY_PODS + 7 }, (_, i) => ({ uid: `ns/p${i}`, why: 'w' })) };
  const lines = (await get(ports.ready, '/healthz/ready')).body.trimEnd().split('\n');
  assert.equal(lines.length, 2 + MAX_READY_PODS + 1);
  assert.equal(lines.at(-2), `- ns/p${MAX_READY_PODS - 1}: w`);
  assert.equal(lines.at(-1), '- … and 7 more (GET :15000/config_dump lists all)');
});

test('pendingPodsOf: the dump of the agent serving that pin directory only', () => {
  const pin = '/sys/fs/bpf/ambit';
  assert.deepEqual(pendingPodsOf({ pendingPods: [ghost, { uid: 3 }], datapath: { pinDir: `${pin}/` } }, pin), { pods: [ghost] });
  assert.deepEqual(pendingPodsOf({ pendingPods: [], datapath: { pinDir: '/sys/fs/bpf/other' } }, pin), {
    unknown: `the agent there serves pin directory /sys/fs/bpf/other, not ${pin}`,
  });
  assert.match((pendingPodsOf({ starting: true }, pin) as { unknown: string }).unknown, /without a pendingPods list/);
  assert.match((pendingPodsOf(null, pin) as { unknown: string }).unknown, /without a pendingPods list/);
});

test('ambit datapath status lists the pending pods the agent reports, and says so when no agent answers', async () => {
  const pinDir = path.join(dir, 'pins'); // nothing pinned: the kernel half is empty, no root needed
  dump = { pendingPods: [web, ghost], datapath: { pinDir } };
  const admin = `127.0.0.1:${ports.admin}`;
  const text = await ambit('datapath', 'status', '--pin-dir', pinDir, '--admin', admin);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /pods pending enrolment: 2\n {2}shop\/web: no netns.*\n {2}shop\/ghost: enrolment failed.*ENOENT\n$/);
  const json = await ambit('datapath', 'status', '--pin-dir', pinDir, '--admin', admin, '--json');
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual((JSON.parse(json.stdout) as { pendingPods: unknown }).pendingPods, [web, ghost]);

  dump = { pendingPods: [], datapath: { pinDir } };
  assert.match((await ambit('datapath', 'status', '--pin-dir', pinDir, '--admin', admin)).stdout, /pods pending enrolment: none\n$/);

  // A port nothing listens on (the admin server's, once closed, is not reused so fast: take a fresh one and free it).
  const free = await new Promise<number>((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
  const down = await ambit('datapath', 'status', '--pin-dir', pinDir, '--admin', `127.0.0.1:${free}`, '--json');
  assert.equal(down.code, 0, 'the kernel half is still shown');
  const doc = JSON.parse(down.stdout) as { pendingPods: unknown; pendingPodsUnknown: string };
  assert.equal(doc.pendingPods, null);
  assert.match(doc.pendingPodsUnknown, new RegExp(`127\\.0\\.0\\.1:${free}`));
  const bad = await ambit('datapath', 'status', '--admin', 'nope');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--admin "nope" is not HOST:PORT/);
});
