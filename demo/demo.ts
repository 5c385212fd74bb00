// `make demo`: ambit's main job on its embedded default topology — two
// nodes × two pods built from network namespaces and cgroups on this
// machine, one `ambit node` per node, a small HTTP app in every pod, and
// requests same-node, cross-node and through a service VIP. Prints what
// each side saw (the identity comes from the destination node's log), shows
// from a capture on the wire between the nodes that the payload travelled
// encrypted, and tears everything down.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { CLI, cleanupPins, pinDirFor, workloadOf } from '../test/helpers/fixture';
import { collect, jsonLines, sh, waitFor, waitForLine } from '../test/helpers/proc';
import { type TestPod, Topology } from '../test/helpers/topology';

const APP = path.resolve(__dirname, 'podhttp.js');
const APP_PORT = 8080;
const VIP = '10.96.0.10';

interface GetResult {
  url: string;
  status: number;
  ms?: number;
  peer?: string;
  error?: string;
  body?: { servedBy: string; sawPeer: string };
}
type LogLine = Record<string, unknown>;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds namespaces and loads eBPF: run it as root (sudo make demo)');
  console.log('building 2 nodes × 2 pods (network namespaces, veths, cgroup v2 directories)…');
  const topo = await Topology.create({ nodes: 2, podsPerNode: 2 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${topo.prefix}-demo-`));
  const agents: ChildProcess[] = [];
  const logs = new Map<string, LogLine[]>();
  // Interrupted (Ctrl-C, closed pipe): still tear down, then leave.
  const interrupted = (): void => {
    teardown().finally(() => process.exit(130));
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, interrupted);
  process.stdout.on('error', interrupted);
  let tornDown = false;
  const teardown = async (): Promise<void> => {
    if (tornDown) return;
    tornDown = true;
    for (const a of agents) a.kill('SIGTERM');
    await topo.destroy();
    cleanupPins(topo);
    fs.rmSync(dir, { recursive: true, force: true });
    console.error('torn down: namespaces, cgroups, pins and processes removed');
  };
  try {
    const config = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(
      config,
      YAML.stringify({
        trustDomain: 'cluster.local',
        ca: { dir: path.join(dir, 'ca') },
        nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
        workloads: topo.pods.map((p) => ({
          ...workloadOf(p),
          name: label(p),
          serviceAccount: `${label(p)}-sa`,
          labels: { app: p.node.index === 2 ? 'echo' : 'sleep' },
        })),
        services: [
          {
            name: 'echo',
            namespace: 'default',
            hostname: 'echo.default.svc.cluster.local',
            addresses: [VIP],
            ports: [{ port: 80, targetPort: APP_PORT }],
            selector: { app: 'echo' },
          },
        ],
      }),
    );
    for (const node of topo.nodes) {
      const agent = topo.spawnInNode(node, process.execPath, [
        CLI,
        'node',
        '--config',
        config,
        '--node',
        node.name,
        '--pods-cgroup',
        node.podsCgroup,
        '--pin-dir',
        pinDirFor(topo, node),
      ]);
      agents.push(agent);
      logs.set(node.name, jsonLines(agent));
      await waitForLine(agent, (l) => l.includes('"node ready"'), `ambit node ${node.name}`);
    }
    console.log(`ambit node running on ${topo.nodes.map((n) => n.name).join(' and ')}; every pod enrolled with its own SPIFFE identity`);
    for (const pod of topo.pods) {
      const app = topo.spawnInPod(pod, process.execPath, [APP, 'serve', String(APP_PORT), label(pod)]);
      await waitForLine(app, (l) => l.includes('listening'), `app in ${label(pod)}`);
    }

    const capture = await startCapture(topo, path.join(dir, 'wire.pcap'));
    const client = topo.pod(1, 1);
    const targets: { path: string; dialed: string; node: string }[] = [
      { path: 'same node', dialed: `${topo.pod(1, 2).ip}:${APP_PORT}`, node: 'n1' },
      { path: 'cross node', dialed: `${topo.pod(2, 1).ip}:${APP_PORT}`, node: 'n2' },
      { path: 'service VIP', dialed: `${VIP}:80`, node: 'n2' },
    ];
    const run = await collect(topo.spawnInPod(client, process.execPath, [APP, 'get', ...targets.map((t) => `http://${t.dialed}/`)]));
    const results = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as GetResult);
    const wire = await capture.stop();

    // The destination node logs each connection when it closes, with the peer identity it verified.
    const shown = new Set<LogLine>();
    const logOf = (node: string): LogLine[] => {
      const lines = logs.get(node);
      if (!lines) throw new Error(`no log of node ${node}`);
      return lines;
    };
    const inboundOf = async (t: (typeof targets)[number], r: GetResult): Promise<LogLine | undefined> => {
      const { body } = r;
      if (!body) return undefined;
      const dst = `${topo.pods.find((p) => label(p) === body.servedBy)?.ip}:${APP_PORT}`;
      const lines = logOf(t.node);
      const line = await waitFor(
        "the destination node's log line",
        () => lines.find((l) => l.direction === 'inbound' && l['dst.addr'] === dst && !shown.has(l)),
        5000,
      ).catch(() => undefined);
      if (line) shown.add(line);
      return line;
    };
    const rows = [['path', 'client', 'dialed', 'served by', 'status', 'latency', 'identity the server saw', 'connection id (traceparent)']];
    for (const [i, t] of targets.entries()) {
      // The client prints one line per URL; a missing one means it died on the way.
      const r = results[i] ?? { url: `http://${t.dialed}/`, status: 0, error: 'no answer from the client' };
      const seen = await inboundOf(t, r);
      // The source node logged the same connection id for its side.
      const id = seen?.conn_id;
      const sourceSide =
        id &&
        (await waitFor(
          "the source node's log line",
          () => logOf('n1').some((l) => l.direction === 'outbound' && l.conn_id === id),
          5000,
        ).catch(() => false));
      rows.push([
        t.path,
        label(client),
        t.dialed,
        r.body?.servedBy ?? '-',
        String(r.status || r.error),
        r.ms ? `${r.ms.toFixed(2)} ms` : '-',
        String(seen?.['src.identity'] ?? '-'),
        id ? `${String(id).slice(0, 16)}… ${sourceSide ? 'on both' : 'destination only'}` : '-',
      ]);
    }
    console.log('');
    printTable(rows);

    console.log(
      `\nwire between the nodes (tcpdump on n1's wire0): ${wire.packets} packets, ${wire.hbonePackets} of them to or from port 15008 (HBONE)`,
    );
    console.log(
      '  plaintext HTTP on the wire ("GET /", "servedBy"): ' +
        (wire.plaintextFound ? 'FOUND — not encrypted!' : 'not found — the payload travelled inside mutual TLS'),
    );

    for (const node of topo.nodes) {
      console.log(`\n$ ambit datapath status   # ${node.name}`);
      process.stdout.write(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, node)]));
    }
    if (results.length < targets.length || results.some((r) => r.status !== 200) || wire.plaintextFound || wire.hbonePackets === 0)
      process.exitCode = 1;
  } finally {
    await teardown();
  }
}

/** tcpdump on the wire between the nodes; stop() reads the capture back. */
async function startCapture(
  topo: Topology,
  file: string,
): Promise<{ stop: () => Promise<{ packets: number; hbonePackets: number; plaintextFound: boolean }> }> {
  // Node 1's end of the wire: every cross-node packet passes it.
  const dump = topo.spawnInNode(topo.node(1), 'tcpdump', ['-i', 'wire0', '--immediate-mode', '-U', '-s', '0', '-w', file, 'tcp']);
  const { stderr } = dump;
  if (!stderr) throw new Error('tcpdump was started without a stderr pipe');
  await new Promise<void>((resolve, reject) => {
    stderr.on('data', (d) => {
      if (String(d).includes('listening on')) resolve();
    });
    dump.once('exit', (code) => reject(new Error(`tcpdump exited (${code})`)));
  });
  return {
    stop: async () => {
      dump.kill('SIGINT');
      await new Promise((r) => dump.once('exit', r));
      const count = async (filter: string[]): Promise<number> =>
        (await sh('tcpdump', ['-r', file, '-nn', ...filter])).split('\n').filter(Boolean).length;
      const raw = fs.readFileSync(file);
      return {
        packets: await count([]),
        hbonePackets: await count(['tcp port 15008']),
        plaintextFound: raw.includes('GET /') || raw.includes('servedBy'),
      };
    },
  };
}

const label = (p: TestPod): string => `${p.node.name}-${p.name}`;

function printTable(rows: string[][]): void {
  const [header = []] = rows;
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});
