// Long-running hygiene of `ambit node`: does anything grow across many short
// connections? Two nodes, one pod each, the agents with their default
// workers; after a warm-up, the process metrics of each node (agent and
// workers summed: open fds, resident memory, heap, active handles and
// resources (ref'd timers, sockets…), HBONE pool sessions) are
// scraped before and after N connections (connect, read a line, close;
// BENCH_CONNECTIONS, default 100,000), once every connection has closed.
//
//   node dist/bench/hygiene.js   (root)
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { connectFromNetns } from '../src/datapath/netns';
import { CLI, cleanupPins, dialFrom, PODAPP, pinDirFor, workloadOf } from '../test/helpers/fixture';
import { collect, waitFor, waitForLine } from '../test/helpers/proc';
import { type TestNode, Topology } from '../test/helpers/topology';
import { fmt, lastJson, stop } from './util';

const N = Number(process.env.BENCH_CONNECTIONS ?? 100_000);
const WATCH = {
  fds: 'process_open_fds',
  rss_bytes: 'process_resident_memory_bytes',
  heap_used_bytes: 'nodejs_heap_size_used_bytes',
  active_handles: 'nodejs_active_handles_total',
  active_resources: 'nodejs_active_resources_total',
  pool_sessions: 'ambit_pool_sessions',
} as const;

function scrape(node: TestNode): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: 15020,
        path: '/metrics',
        createConnection: () => connectFromNetns(node.netnsPath, '127.0.0.1', 15020, { allowHalfOpen: false }),
      },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve(body));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const opened = (t: string): number =>
  t
    .split('\n')
    .filter((l) => l.startsWith('istio_tcp_connections_opened_total{'))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
const closed = (t: string): number =>
  t
    .split('\n')
    .filter((l) => l.startsWith('istio_tcp_connections_closed_total{'))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root: sudo make hygiene');
  const topo = await Topology.create({ nodes: 2, podsPerNode: 1 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-`));
  const agents = [];
  try {
    const config = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(
      config,
      YAML.stringify({
        trustDomain: 'cluster.local',
        ca: { dir: path.join(dir, 'ca') },
        nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
        workloads: topo.pods.map(workloadOf),
      }),
    );
    for (const node of topo.nodes) {
      const a = topo.spawnInNode(
        node,
        process.execPath,
        [CLI, 'node', '--config', config, '--node', node.name, '--pods-cgroup', node.podsCgroup, '--pin-dir', pinDirFor(topo, node)],
        { env: { ...process.env, AMBIT_LOG_LEVEL: 'warn' } },
      );
      agents.push(a);
      a.stderr?.resume();
      await waitFor(`${node.name} ready`, async () => (await scrape(node).catch(() => '')).includes('ambit_pool_sessions'), 20_000, 200);
    }
    const app = topo.spawnInPod(topo.pod(2, 1), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami');
    await dialFrom(topo, topo.pod(1, 1), topo.pod(2, 1).ip, 8080, 2000, 32);
    const settled = async (): Promise<Map<TestNode, string>> =>
      waitFor(
        'every connection closed on both nodes',
        async () => {
          const t = new Map(await Promise.all(topo.nodes.map(async (node) => [node, await scrape(node)] as const)));
          return [...t.values()].every((x) => opened(x) === closed(x)) ? t : undefined;
        },
        30_000,
        200,
      );
    global.gc?.();
    const before = await settled();
    const started = Date.now();
    const run = await collect(
      topo.spawnInPod(topo.pod(1, 1), process.execPath, [PODAPP, 'dial', topo.pod(2, 1).ip, '8080', String(N), '32', '10000']),
    );
    const r = lastJson<{ ok: number; failed: number; errors: Record<string, number> }>(run.stdout, 'the dialling pod');
    const seconds = (Date.now() - started) / 1000;
    const after = await settled();

    console.log(`machine: ${os.cpus()[0]?.model}, ${os.cpus().length} cores, kernel ${os.release()}, node ${process.version}`);
    console.log(`${r.ok} of ${N} connections ok (${r.failed} failed ${JSON.stringify(r.errors)}) in ${seconds.toFixed(0)} s\n`);
    const rows = topo.nodes.flatMap((node) =>
      Object.entries(WATCH).map(([name, series]) => {
        const b = value(before.get(node) ?? '', series);
        const a = value(after.get(node) ?? '', series);
        return { node: node.name, metric: name, before: b, after: a, delta: a - b };
      }),
    );
    console.log('| node | metric (agent + workers) | before | after | change |');
    console.log('|---|---|---:|---:|---:|');
    for (const row of rows) {
      const mib = row.metric.endsWith('bytes');
      const f = (v: number): string => (mib ? `${fmt(v / 1048576)} MiB` : fmt(v));
      console.log(`| ${row.node} | ${row.metric} | ${f(row.before)} | ${f(row.after)} | ${row.delta >= 0 ? '+' : ''}${f(row.delta)} |`);
    }
    const out = path.resolve(__dirname, '../../bench/results');
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, `hygiene-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ benchmark: 'hygiene', connections: N, result: r, seconds, rows }, null, 2)}\n`);
    console.log(`\nresults: ${file}`);
  } finally {
    await Promise.all(agents.map((a) => stop(a, 'SIGTERM', 10_000)));
    await topo.destroy();
    cleanupPins(topo);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
