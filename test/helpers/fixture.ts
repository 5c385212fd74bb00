// Shared set-up for root tests: refuses loudly (never skips) when not root,
// and gives each test file a topology plus per-node datapaths with unique
// pins, all removed in teardown (testBed with a Cleanup).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import YAML from 'yaml';
import { Datapath } from '../../src/datapath/loader';
import { connectFromNetns } from '../../src/datapath/netns';
import { cleanupDatapath } from '../../src/datapath/status';
import type { MeshConfig, Workload } from '../../src/state/types';
import type { Cleanup } from './cleanup';
import { collect, lastJson, TIME_SCALE, waitFor } from './proc';
import type { Outcome } from './refusal';
import { type TestNode, type TestPod, Topology, type TopologyOptions } from './topology';

export const PODAPP = path.resolve(__dirname, 'podapp.js');
export const CLI = path.resolve(__dirname, '../../src/cli/main.js');

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('root tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo make test`; they never skip');
  }
}

export const pinDirFor = (topo: Topology, node: TestNode): string => `/sys/fs/bpf/${topo.prefix}-${node.name}`;

export function openDatapath(topo: Topology, node: TestNode): Datapath {
  return Datapath.open({ pinDir: pinDirFor(topo, node), cgroupPath: node.podsCgroup });
}

export function cleanupPins(topo: Topology): void {
  for (const n of topo.nodes) cleanupDatapath(pinDirFor(topo, n));
}

export interface DialSummary {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  peers: Record<string, number>;
  firstLines: Record<string, number>;
}

/** Runs `podapp dial` in a pod and returns its summary. */
export async function dialFrom(
  topo: Topology,
  pod: TestPod,
  ip: string,
  port: number,
  n = 1,
  concurrency = 1,
  timeoutMs = 5000,
): Promise<DialSummary> {
  // Per connection; stretched like every wait under emulation (AMBIT_TEST_TIME_SCALE).
  const r = await collect(
    topo.spawnInPod(pod, process.execPath, [
      PODAPP,
      'dial',
      ip,
      String(port),
      String(n),
      String(concurrency),
      String(timeoutMs * TIME_SCALE),
    ]),
  );
  assert.equal(r.code, 0, `podapp dial failed: ${r.stderr}`);
  return lastJson<DialSummary>(r.stdout);
}

/** podapp dial's error codes in the outcome vocabulary (see Outcome). */
const DIAL_OUTCOMES: Record<string, Outcome> = { ECLOSED: 'closed', ECONNRESET: 'reset', ECONNREFUSED: 'refused', ETIMEDOUT: 'timeout' };

/**
 * What n connections from pod to ip:port (podapp dial) came to, as one
 * Outcome when they all came to the same: `connected` (the server's first
 * line arrived), `closed`, `reset`, `refused`, or `timeout` after timeoutMs.
 * Otherwise `mixed` with the counts.
 */
export async function dialOutcome(topo: Topology, pod: TestPod, ip: string, port: number, timeoutMs = 5000, n = 1): Promise<Outcome> {
  const r = await dialFrom(topo, pod, ip, port, n, n, timeoutMs);
  const kinds = Object.keys(r.errors);
  if (r.ok === n) return 'connected';
  if (r.failed === n && kinds.length === 1) return DIAL_OUTCOMES[kinds[0] as string] ?? `error ${kinds[0]}`;
  return `mixed ${JSON.stringify({ connected: r.ok, ...r.errors })}`;
}

/**
 * `ambit node` for a test node, in its netns: its name, pods cgroup and pin
 * directory, then more (--config or --xds, --workers, …); env adds to the
 * test's own environment.
 */
export function spawnNodeAgent(topo: Topology, node: TestNode, more: string[], env: Record<string, string> = {}): ChildProcess {
  return topo.spawnInNode(
    node,
    process.execPath,
    [CLI, 'node', '--node', node.name, '--pods-cgroup', node.podsCgroup, '--pin-dir', pinDirFor(topo, node), ...more],
    { env: { ...process.env, ...env } },
  );
}

export function workloadOf(pod: TestPod): Workload {
  return {
    uid: pod.uid,
    name: `${pod.node.name}-${pod.name}`,
    namespace: 'default',
    serviceAccount: 'default',
    node: pod.node.name,
    addresses: [pod.ip],
    protocol: 'HBONE',
    dataplane: 'ambient',
    netns: pod.netnsPath,
    cgroup: pod.cgroup,
    labels: {},
    capacity: 1,
    authorizationPolicies: [],
  };
}

/**
 * The model an in-process agent (PodAgent) starts from: the bed's nodes, a
 * CA under dir, no policies or services; workloads and the rest from over.
 */
export function meshConfig(topo: Topology, dir: string, over: Partial<MeshConfig> = {}): MeshConfig {
  return {
    trustDomain: 'cluster.local',
    ca: { dir: path.join(dir, 'ca') },
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
    nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
    workloads: topo.pods.map(workloadOf),
    services: [],
    ...over,
  };
}

/**
 * Writes dir/mesh.yaml for `ambit node --config`: the bed's nodes, a CA
 * under dir, every pod as a workload; over replaces any of them or adds
 * fields. Returns its path.
 */
export function writeMeshYaml(topo: Topology, dir: string, over: Record<string, unknown> = {}): string {
  const file = path.join(dir, 'mesh.yaml');
  const doc = {
    trustDomain: 'cluster.local',
    ca: { dir: path.join(dir, 'ca') },
    nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
    workloads: topo.pods.map(workloadOf),
    ...over,
  };
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

/** Asserts that nothing of the topology remains: namespaces, cgroups, pins. */
export function assertNothingLeft(topo: Topology): void {
  const netns = fs.existsSync('/var/run/netns') ? fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(topo.prefix)) : [];
  assert.deepEqual(netns, [], 'network namespaces left behind');
  assert.equal(fs.existsSync(topo.cgroupRoot), false, `cgroup ${topo.cgroupRoot} left behind`);
  const pins = fs.readdirSync('/sys/fs/bpf').filter((n) => n.startsWith(topo.prefix));
  assert.deepEqual(pins, [], 'bpffs pins left behind');
}

/**
 * A test bed and a temporary directory named after it, torn down by cleanup
 * in this order: the topology (its processes, namespaces, cgroups), its
 * pins, the directory (nothing writes into it any more), then a check that
 * nothing of it remains. Steps registered later (agents, sessions,
 * datapaths) run before all that.
 */
export async function testBed(cleanup: Cleanup, opts: TopologyOptions): Promise<{ topo: Topology; dir: string }> {
  const topo = await Topology.create(opts);
  cleanup.add(`nothing of ${topo.prefix} left`, () => assertNothingLeft(topo));
  const dir = cleanup.tempDir(topo.prefix);
  cleanup.add(`pins of ${topo.prefix}`, () => cleanupPins(topo));
  cleanup.add(`topology ${topo.prefix}`, () => topo.destroy());
  return { topo, dir };
}

/** A node agent's config dump (its admin API on 127.0.0.1:15000 inside the node's netns). */
export async function configDump<T>(node: { netnsPath: string }): Promise<T> {
  return JSON.parse((await httpInNetns(node, '127.0.0.1', 15000, 'GET', '/config_dump')).body) as T;
}

/** Waits until a node agent answers 200 on /healthz/ready (it may not listen yet). */
export function untilReady(node: { name: string; netnsPath: string }, timeoutMs = 30_000): Promise<unknown> {
  return waitFor(
    `${node.name} ready`,
    async () => (await httpInNetns(node, '127.0.0.1', 15021, 'GET', '/healthz/ready').catch(() => ({ status: 0 }))).status === 200,
    timeoutMs,
    100,
  );
}

/** Admin mutations (POST on :15000) must carry this; see src/observability/admin-guard.ts. */
export const ADMIN_MUTATION = { 'x-ambit-admin': 'true' };

/** An HTTP request made from inside a node's netns. */
export function httpInNetns(
  node: { netnsPath: string },
  host: string,
  port: number,
  method: string,
  urlPath: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // No agent: with one, Node would dial on its own and ignore createConnection.
    const req = http.request(
      {
        method,
        path: urlPath,
        host,
        port,
        headers,
        createConnection: () => connectFromNetns(node.netnsPath, host, port, { allowHalfOpen: false }),
      },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * A plain TCP connection from inside a netns that sends text and reads:
 * `closed` when the peer ends it with nothing sent, `reset`, `refused`,
 * `data <the first bytes, hex>`, or `timeout` after timeoutMs (× TIME_SCALE).
 */
export function tcpAttempt(netnsPath: string, host: string, port: number, text: string, timeoutMs = 5000): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = connectFromNetns(netnsPath, host, port, { allowHalfOpen: false });
    const done = (o: Outcome): void => {
      s.destroy();
      resolve(o);
    };
    s.setTimeout(timeoutMs * TIME_SCALE, () => done('timeout'));
    s.on('connect', () => s.write(text));
    s.once('data', (d: Buffer) => done(`data ${d.subarray(0, 32).toString('hex')}`));
    s.on('end', () => done('closed'));
    s.on('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNRESET' ? 'reset' : err.code === 'ECONNREFUSED' ? 'refused' : `error ${err.code}`),
    );
  });
}

/** The value of one sample of a Prometheus text exposition, matched by name and labels. */
export function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const body = line.includes('{') ? line.slice(name.length + 1, line.lastIndexOf('}')) : '';
    const got = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/** A node agent's ambit_connection_failures_total for one direction and reason (0 before the first). */
export async function connectionFailures(node: { netnsPath: string }, direction: 'inbound' | 'outbound', reason: string): Promise<number> {
  const text = (await httpInNetns(node, '127.0.0.1', 15020, 'GET', '/metrics')).body;
  return sample(text, 'ambit_connection_failures_total', { direction, reason }) ?? 0;
}
