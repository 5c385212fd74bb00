// `make demo`: ambit's main job on its embedded default topology — two
// nodes × two pods built from network namespaces and cgroups on this
// machine, one `ambit node` per node, a small HTTP app in every pod, and
// requests same-node and cross-node. Prints what each side saw, then the
// datapath's counters, and tears everything down.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { cleanupPins, CLI, pinDirFor, workloadOf } from '../test/helpers/fixture';
import { collect, sh, waitForLine } from '../test/helpers/proc';
import { Topology, type TestPod } from '../test/helpers/topology';

const APP = path.resolve(__dirname, 'podhttp.js');
const APP_PORT = 8080;

interface GetResult { url: string; status: number; ms?: number; peer?: string; error?: string; body?: { servedBy: string; sawPeer: string } }

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds namespaces and loads eBPF: run it as root (sudo make demo)');
  console.log('building 2 nodes × 2 pods (network namespaces, veths, cgroup v2 directories)…');
  const topo = await Topology.create({ nodes: 2, podsPerNode: 2 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-demo-`));
  const agents: ChildProcess[] = [];
  try {
    const config = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(config, YAML.stringify({
      trustDomain: 'cluster.local',
      ca: { dir: path.join(dir, 'ca') },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: topo.pods.map(workloadOf),
    }));
    for (const node of topo.nodes) {
      const agent = topo.spawnInNode(node, process.execPath, [CLI, 'node', '--config', config, '--node', node.name, '--pods-cgroup', node.podsCgroup, '--pin-dir', pinDirFor(topo, node)]);
      agents.push(agent);
      await waitForLine(agent, (l) => l.includes('"node ready"'), `ambit node ${node.name}`);
    }
    console.log(`ambit node running on ${topo.nodes.map((n) => n.name).join(' and ')}; every pod enrolled`);

    for (const pod of topo.pods) {
      const app = topo.spawnInPod(pod, process.execPath, [APP, 'serve', String(APP_PORT), label(pod)]);
      await waitForLine(app, (l) => l.includes('listening'), `app in ${label(pod)}`);
    }

    const client = topo.pod(1, 1);
    const targets: [string, TestPod][] = [['same node', topo.pod(1, 2)], ['cross node', topo.pod(2, 1)], ['cross node', topo.pod(2, 2)]];
    const run = await collect(topo.spawnInPod(client, process.execPath, [APP, 'get', ...targets.map(([, t]) => `http://${t.ip}:${APP_PORT}/`)]));
    const results = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as GetResult);

    console.log('');
    const rows = [['path', 'client', 'server', 'status', 'latency', 'client saw peer', 'app saw peer']];
    targets.forEach(([kind, t], i) => {
      const r = results[i];
      rows.push([kind, `${label(client)} ${client.ip}`, `${label(t)} ${t.ip}:${APP_PORT}`, String(r.status || r.error), r.ms ? `${r.ms.toFixed(2)} ms` : '-', r.peer ?? '-', r.body?.sawPeer ?? '-']);
    });
    printTable(rows);
    console.log('\nclient saw peer: getpeername() in the client pod — the address it dialed, although connect4 sent it to');
    console.log('  its node tunnel on 127.0.0.1:15001. app saw peer: the server pod\'s own address, because its node');
    console.log('  tunnel took the connection on :15006 (sk_lookup) and delivered it from inside the pod.');

    for (const node of topo.nodes) {
      console.log(`\n$ ambit datapath status   # ${node.name}`);
      process.stdout.write(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, node)]));
    }
    if (results.some((r) => r.status !== 200)) process.exitCode = 1;
  } finally {
    for (const a of agents) a.kill('SIGTERM');
    await topo.destroy();
    cleanupPins(topo);
    fs.rmSync(dir, { recursive: true, force: true });
    console.log('\ntorn down: namespaces, cgroups, pins and processes removed');
  }
}

const label = (p: TestPod): string => `${p.node.name}-${p.name}`;

function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => cell.padEnd(widths[c])).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});
