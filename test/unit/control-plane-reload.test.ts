// The control plane's reload on 127.0.0.1 (no root), in process and as the
// real `ambit control-plane` process: a configuration that fails a check
// (two nodes sharing a token) is refused with its code while the process
// and every node's stream keep serving the last good state; a node whose
// token is removed from the file has its open stream closed with
// UNAUTHENTICATED while the others stay, and so is one whose TokenReview
// no longer passes (a local stand-in for the API server).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import YAML from 'yaml';
import { ControlPlane } from '../../src/control-plane/server';
import { KubeClient } from '../../src/kube/client';
import { nodeMessage, XdsClient } from '../../src/sources/xds-client';
import { waitExit } from '../helpers/cleanup';
import { FakeKube, fixture } from '../helpers/fake-kube';
import { CLI } from '../helpers/fixture';
import { must } from '../helpers/must';
import { jsonLines, TIME_SCALE, waitFor } from '../helpers/proc';

const log = pino({ level: 'silent' });
let dir: string;
const tokens = new Map<string, string>();
/** The token made for node n in before(). */
const token = (n: string): string => must(tokens.get(n), `the token of ${n}`);
const hash = (t: string): string => createHash('sha256').update(t).digest('hex');

function doc(opts: { tokensFor?: string[]; sameToken?: boolean; capacity?: number } = {}): Record<string, unknown> {
  const nodes = opts.tokensFor ?? ['n1', 'n2'];
  return {
    trustDomain: 'cluster.local',
    ca: { dir: path.join(dir, 'ca') },
    nodes: [
      { name: 'n1', address: '10.0.0.1' },
      { name: 'n2', address: '10.0.0.2' },
    ],
    workloads: [
      {
        uid: 'default/sleep',
        name: 'sleep',
        namespace: 'default',
        serviceAccount: 'sleep',
        node: 'n1',
        addresses: ['10.200.1.11'],
        labels: { app: 'sleep' },
      },
      {
        uid: 'default/echo',
        name: 'echo',
        namespace: 'default',
        serviceAccount: 'echo',
        node: 'n2',
        addresses: ['10.200.2.11'],
        labels: { app: 'echo' },
        capacity: opts.capacity ?? 1,
      },
    ],
    controlPlane: { tokens: nodes.map((n) => ({ node: n, sha256: hash(token(opts.sameToken ? 'n1' : n)) })) },
  };
}

const write = (file: string, d: Record<string, unknown>): void => {
  // Replaced by rename, as editors and ConfigMap mounts do: the watcher never reads half a file.
  fs.writeFileSync(`${file}.tmp`, YAML.stringify(d));
  fs.renameSync(`${file}.tmp`, file);
};

function nodeClient(node: string, port: number): XdsClient {
  return new XdsClient({
    address: `127.0.0.1:${port}`,
    rootsPem: fs.readFileSync(path.join(dir, 'ca', 'root-cert.pem'), 'utf8'),
    serverName: 'localhost',
    tokenFile: path.join(dir, `${node}.token`),
    trustDomain: 'cluster.local',
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    log,
    node: nodeMessage({ nodeName: node, podName: `ambit-${node}`, podNamespace: 'ambit-system', ip: '127.0.0.1' }),
  });
}

const capacityOfEcho = (c: XdsClient): number | undefined => c.state().workloads.find((w) => w.uid === 'default/echo')?.capacity;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-cp-reload-'));
  for (const n of ['n1', 'n2']) {
    tokens.set(n, randomBytes(24).toString('base64url'));
    fs.writeFileSync(path.join(dir, `${n}.token`), `${tokens.get(n)}\n`, { mode: 0o600 });
  }
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test("in process: a configuration with a shared token is refused and serving goes on; a removed token closes that node's stream", async () => {
  const file = path.join(dir, 'inproc.yaml');
  write(file, doc());
  const cp = await ControlPlane.start({ configFile: file, listen: '127.0.0.1:0', log });
  const clients = new Map(['n1', 'n2'].map((n) => [n, nodeClient(n, cp.port)]));
  /** Why each node's stream was lost, in order. */
  const lost = new Map([...clients.keys()].map((n) => [n, [] as string[]]));
  const lostOf = (n: string): string[] => must(lost.get(n), `node ${n}`);
  for (const [n, c] of clients) c.on('disconnected', (why: string) => lostOf(n).push(why));
  try {
    for (const c of clients.values()) c.start();
    for (const c of clients.values()) await c.whenSynced(10_000 * TIME_SCALE);

    // What parseConfig may or may not catch, apply() checks again before touching anything.
    const shared = {
      ...cp.config,
      workloads: cp.config.workloads.map((w) => ({ ...w, capacity: 9 })),
      controlPlane: {
        tokens: [
          { node: 'n1', sha256: hash(token('n1')) },
          { node: 'n2', sha256: hash(token('n1')) },
        ],
      },
    };
    assert.equal(cp.apply(shared), false);
    assert.equal(cp.config.workloads.find((w) => w.uid === 'default/echo')?.capacity, 1, 'the last good state is served');
    assert.ok([...clients.values()].every((c) => c.connected));
    const again = nodeClient('n2', cp.port);
    again.start();
    await again.whenSynced(10_000 * TIME_SCALE).finally(() => again.stop());

    const t0 = Date.now();
    write(file, doc({ tokensFor: ['n2'] }));
    await waitFor("n1's stream to be closed", () => lostOf('n1').length > 0, 5_000);
    console.log(`# removed token: stream closed ${Date.now() - t0} ms after the file changed (file polled every 500 ms)`);
    assert.match(lostOf('n1')[0] ?? '', /^UNAUTHENTICATED: credentials no longer accepted: unknown bearer token/);
    assert.deepEqual(lost.get('n2'), []);
    assert.equal(must(clients.get('n2'), 'client n2').connected, true);
    assert.deepEqual(
      cp.xds.streamStates().map((s) => s.node),
      ['n2'],
    );
  } finally {
    for (const c of clients.values()) c.stop();
    await cp.stop();
  }
});

test('ambit control-plane: a reload with duplicate token hashes leaves the process up and the last good state served', async () => {
  const file = path.join(dir, 'process.yaml');
  write(file, doc());
  const child: ChildProcess = spawn(process.execPath, [CLI, 'control-plane', '--config', file, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  must(child.stderr, "the control plane's stderr pipe").on('data', (d) => {
    stderr += d;
  });
  const lines = jsonLines(child);
  const alive = (): void => assert.equal(child.exitCode, null, `the control plane exited (${child.exitCode}): ${stderr}`);
  const logged = (msg: string): Record<string, unknown> | undefined => {
    alive();
    return lines.find((l) => l.msg === msg);
  };
  const clients: XdsClient[] = [];
  try {
    const serving = await waitFor('the control plane to serve', () => logged('control plane serving xDS and the CA'), 20_000);
    const port = serving.port as number;
    const n1 = nodeClient('n1', port);
    clients.push(n1);
    n1.start();
    await n1.whenSynced(10_000 * TIME_SCALE);

    write(file, doc({ sameToken: true, capacity: 7 }));
    const refused = await waitFor(
      'the reload to be refused',
      () => logged('configuration change rejected; the last good state keeps serving'),
      10_000,
    );
    assert.equal(refused.code, 'AMBIT_E_CONFIG');
    assert.match(String(refused.err), /same token|duplicates controlPlane\.tokens/, 'the error names the shared token');
    alive();
    assert.equal(n1.connected, true, 'the open stream stays');
    const n2 = nodeClient('n2', port);
    clients.push(n2);
    n2.start();
    await n2.whenSynced(10_000 * TIME_SCALE);
    assert.equal(capacityOfEcho(n2), 1, 'a node connecting now gets the last good state');

    // The watcher still works: a valid change after the refused one is served.
    write(file, doc({ capacity: 5 }));
    await waitFor(
      'the valid change to reach both nodes',
      () => {
        alive();
        return capacityOfEcho(n1) === 5 && capacityOfEcho(n2) === 5;
      },
      10_000,
    );
  } finally {
    for (const c of clients) c.stop();
    child.kill('SIGKILL');
    await waitExit(child);
  }
});

test('with TokenReview: a token the API server stops accepting has its stream closed at the next re-check; a review that fails closes nothing', async () => {
  const kube = new FakeKube();
  const kubePort = await new Promise<number>((resolve) =>
    kube.server.listen(0, '127.0.0.1', () => resolve((kube.server.address() as { port: number }).port)),
  );
  const status = fixture<{ status: { user: { username: string; extra: Record<string, string[]> } } }>('tokenreview').status;
  kube.review(token('n1'), { ...status, user: { ...status.user, extra: { 'authentication.kubernetes.io/node-name': ['n1'] } } });
  const file = path.join(dir, 'kube.yaml');
  write(file, doc({ tokensFor: [] }));
  const recheckMs = 300;
  const cp = await ControlPlane.start({
    configFile: file,
    listen: '127.0.0.1:0',
    kube: new KubeClient({ server: `http://127.0.0.1:${kubePort}` }),
    recheckMs,
    log,
  });
  const n1 = nodeClient('n1', cp.port);
  const lost: string[] = [];
  n1.on('disconnected', (why: string) => lost.push(why));
  try {
    n1.start();
    await n1.whenSynced(10_000 * TIME_SCALE);
    // The API server away: reviews fail, the stream stays.
    kube.server.close();
    kube.server.closeAllConnections();
    const unverified = cp.xds.stats.unverified;
    await waitFor('two re-checks that could not be made', () => cp.xds.stats.unverified >= unverified + 2, 10_000);
    assert.equal(n1.connected, true, 'a review that could not be made is no verdict');
    assert.deepEqual(lost, []);
    await new Promise<void>((resolve) => kube.server.listen(kubePort, '127.0.0.1', () => resolve()));

    kube.review(token('n1'), { authenticated: false, error: 'token has been invalidated' });
    const t0 = Date.now();
    await waitFor('the stream to be closed', () => lost.length > 0, 5_000);
    console.log(`# TokenReview revoked: stream closed ${Date.now() - t0} ms later (re-check every ${recheckMs} ms)`);
    assert.match(
      lost[0] ?? '',
      /^UNAUTHENTICATED: credentials no longer accepted: the API server did not accept the token: token has been invalidated/,
    );
  } finally {
    n1.stop();
    await cp.stop();
    kube.server.closeAllConnections();
    kube.server.close();
  }
});
