// `make demo`: ambit's main job on its embedded default topology — two
// nodes × two pods built from network namespaces and cgroups on this
// machine, one `ambit node` per node, a small HTTP app in every pod, and
// requests same-node, cross-node and through a service VIP. Prints what
// each side saw (the identity comes from the destination node's log), shows
// from a capture on the wire between the nodes that the payload travelled
// encrypted. Then L7: an `ambit waypoint` in a pod of its own fronts the
// services that opt in, and three short runs show a canary split, a retry
// and an L7 deny. Tears everything down.
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
const GATEWAY_NAME = 'gateway.networking.k8s.io/gateway-name';
const USE_WAYPOINT = { 'istio.io/use-waypoint': 'waypoint' };
/** The services behind the waypoint: their VIPs and the app ports their pods serve. */
const L7 = {
  web: '10.96.0.20',
  webV2: '10.96.0.21',
  flaky: '10.96.0.22',
  flakyNoRetry: '10.96.0.23',
  webPort: 8090,
  flakyPort: 8091,
};

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
  console.log('building 2 nodes × 3 pods (network namespaces, veths, cgroup v2 directories)…');
  const topo = await Topology.create({ nodes: 2, podsPerNode: 3 });
  // The third pods: n1's runs the waypoint (never enrolled: its traffic must not be captured), n2's the canary version.
  const waypointPod = topo.pod(1, 3);
  const canaryPod = topo.pod(2, 3);
  const l4Pods = topo.pods.filter((p) => p !== waypointPod && p !== canaryPod);
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
        workloads: [
          ...topo.pods
            .filter((p) => p !== waypointPod)
            .map((p) => ({
              ...workloadOf(p),
              name: label(p),
              serviceAccount: `${label(p)}-sa`,
              labels: { app: p === canaryPod ? 'web-v2' : p.node.index === 2 ? 'echo' : 'sleep' },
            })),
          // No netns or cgroup: the node knows the waypoint's pod (to send it traffic) but does not capture it.
          {
            uid: waypointPod.uid,
            name: 'waypoint',
            namespace: 'default',
            serviceAccount: 'waypoint',
            node: waypointPod.node.name,
            addresses: [waypointPod.ip],
            labels: { [GATEWAY_NAME]: 'waypoint' },
          },
        ],
        services: [
          {
            name: 'echo',
            namespace: 'default',
            hostname: 'echo.default.svc.cluster.local',
            addresses: [VIP],
            ports: [{ port: 80, targetPort: APP_PORT }],
            selector: { app: 'echo' },
          },
          ...l7Services(),
        ],
        routes: l7Routes(),
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
    for (const pod of l4Pods) {
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

    if (!(await showL7(topo, config, client, waypointPod, canaryPod, agents))) process.exitCode = 1;
  } finally {
    await teardown();
  }
}

/** Services that opt in to the waypoint (their label), and the canary's second version (a backend only). */
function l7Services(): Record<string, unknown>[] {
  const svc = (name: string, vip: string, targetPort: number, app: string, labels?: Record<string, string>) => ({
    name,
    namespace: 'default',
    hostname: `${name}.default.svc.cluster.local`,
    addresses: [vip],
    // The port's name tells the waypoint to speak HTTP on it, as Istio's name prefix does.
    ports: [{ port: 80, targetPort, name: 'http' }],
    selector: { app },
    ...(labels ? { labels } : {}),
  });
  return [
    svc('web', L7.web, L7.webPort, 'echo', USE_WAYPOINT),
    svc('web-v2', L7.webV2, L7.webPort, 'web-v2'),
    svc('flaky', L7.flaky, L7.flakyPort, 'echo', USE_WAYPOINT),
    svc('flaky-noretry', L7.flakyNoRetry, L7.flakyPort, 'echo', USE_WAYPOINT),
  ];
}

/** The waypoint (a Gateway of class istio-waypoint), its routes and an L7 policy, as a user writes them. */
function l7Routes(): Record<string, unknown>[] {
  const route = (name: string, rule: Record<string, unknown>) => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'default' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name, port: 80 }], rules: [rule] },
  });
  return [
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
      spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    },
    route('web', {
      backendRefs: [
        { name: 'web', port: 80, weight: 90 },
        { name: 'web-v2', port: 80, weight: 10 },
      ],
      timeouts: { request: '2s' },
    }),
    route('flaky', { backendRefs: [{ name: 'flaky', port: 80 }], retry: { attempts: 3, codes: [503], backoff: '10ms' } }),
    // No retry stanza: Istio's default retries connection failures, not a 503.
    route('flaky-noretry', { backendRefs: [{ name: 'flaky-noretry', port: 80 }] }),
    {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'no-admin-writes', namespace: 'default' },
      spec: {
        targetRefs: [{ group: '', kind: 'Service', name: 'web' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { methods: ['POST'], paths: ['/admin/*'] } }] }],
      },
    },
  ];
}

interface LoadResult {
  sent: number;
  statuses: Record<string, number>;
  servedBy: Record<string, number>;
  bodies: Record<string, string>;
}

/**
 * Starts the waypoint and the L7 backends, then sends plain HTTP from the client pod to the opted-in
 * services: n1's node tunnel hands it to the waypoint over HBONE, which routes, retries and
 * authorizes, then reaches the pods over HBONE with its own identity. Returns whether all looked right.
 */
async function showL7(
  topo: Topology,
  config: string,
  client: TestPod,
  waypointPod: TestPod,
  canaryPod: TestPod,
  processes: ChildProcess[],
): Promise<boolean> {
  console.log(`\n== L7: an ambit waypoint in ${label(waypointPod)} fronts the services labelled istio.io/use-waypoint ==`);
  const apps: [TestPod, string[]][] = [
    [topo.pod(2, 1), ['serve', String(L7.webPort), 'web-v1']],
    [topo.pod(2, 2), ['serve', String(L7.webPort), 'web-v1']],
    [canaryPod, ['serve', String(L7.webPort), 'web-v2']],
    [topo.pod(2, 1), ['serve', String(L7.flakyPort), 'flaky', '30']],
    [topo.pod(2, 2), ['serve', String(L7.flakyPort), 'flaky', '30']],
  ];
  for (const [pod, args] of apps) {
    const app = topo.spawnInPod(pod, process.execPath, [APP, ...args]);
    await waitForLine(app, (l) => l.includes('listening'), `${args.join(' ')} in ${label(pod)}`);
  }
  const waypoint = topo.spawnInPod(waypointPod, process.execPath, [
    CLI,
    'waypoint',
    '--config',
    config,
    '--name',
    'waypoint',
    '--namespace',
    'default',
  ]);
  processes.push(waypoint);
  const wpLog = jsonLines(waypoint);
  await waitFor('waypoint ready', () => wpLog.some((l) => l.msg === 'waypoint ready'), 30_000);
  console.log(
    '$ ambit waypoint --config mesh.yaml --name waypoint --namespace default   # ready, identity spiffe://cluster.local/ns/default/sa/waypoint',
  );

  const load = async (method: string, url: string, n: number, c: number): Promise<LoadResult> => {
    const run = await collect(topo.spawnInPod(client, process.execPath, [APP, 'load', method, url, String(n), String(c)]));
    return JSON.parse(run.stdout.trim()) as LoadResult;
  };
  const pct = (x: number, of: number): string => `${((100 * x) / (of || 1)).toFixed(1)} %`;
  let ok = true;

  // Canary: 90/10 by weight, chosen per request.
  const canary = await load('GET', `http://${L7.web}/`, 500, 10);
  const v1 = canary.servedBy['web-v1'] ?? 0;
  const v2 = canary.servedBy['web-v2'] ?? 0;
  console.log(`\ncanary split: HTTPRoute web, backendRefs web (v1) weight 90, web-v2 weight 10; ${canary.sent} GETs from ${label(client)}`);
  printTable([
    ['version', 'weight', 'requests', 'share'],
    ['web-v1', '90', String(v1), pct(v1, canary.sent)],
    ['web-v2', '10', String(v2), pct(v2, canary.sent)],
  ]);
  // Binomial(500, 0.1): sd 1.3 points; 5–15 % is 3.7 sd either side.
  if (v1 + v2 !== canary.sent || v2 < canary.sent * 0.05 || v2 > canary.sent * 0.15) ok = false;

  // Retry: the same backends fail 30 % of requests with 503; one route retries 503, the other has no retry stanza.
  const N = 300;
  const withRetry = await load('GET', `http://${L7.flaky}/`, N, 3);
  const without = await load('GET', `http://${L7.flakyNoRetry}/`, N, 3);
  const retried = await waitFor(
    "the waypoint's access-log lines",
    () => {
      const lines = wpLog.filter((l) => l.msg === 'request complete' && l['dst.service'] === 'flaky.default.svc.cluster.local');
      return lines.length >= N && lines.filter((l) => Number(l.attempts) > 1).length;
    },
    5000,
  ).catch(() => undefined);
  console.log('\nretry: both services are backed by apps answering 503 to 30 % of requests');
  printTable([
    ['route', 'retry', 'requests', '200', '503', 'success', 'retried (access log)'],
    [
      'flaky',
      'attempts 3 on 503, backoff 10ms',
      String(N),
      String(withRetry.statuses['200'] ?? 0),
      String(withRetry.statuses['503'] ?? 0),
      pct(withRetry.statuses['200'] ?? 0, N),
      retried === undefined ? '-' : String(retried),
    ],
    [
      'flaky-noretry',
      "none (Istio's default: 503 is not retried)",
      String(N),
      String(without.statuses['200'] ?? 0),
      String(without.statuses['503'] ?? 0),
      pct(without.statuses['200'] ?? 0, N),
      '-',
    ],
  ]);
  const withOk = (withRetry.statuses['200'] ?? 0) / N;
  const withoutOk = (without.statuses['200'] ?? 0) / N;
  if (withOk < 0.97 || withoutOk < 0.6 || withoutOk > 0.8) ok = false;

  // L7 deny: the policy names a method and a path; only requests with both are refused.
  console.log('\nL7 deny: AuthorizationPolicy no-admin-writes, targetRefs Service web, DENY POST on /admin/*');
  const rows = [['request', 'status', 'answer']];
  const expected: [string, string, number][] = [
    ['POST', '/admin/users', 403],
    ['GET', '/admin/users', 200],
    ['POST', '/items', 200],
  ];
  for (const [method, p, want] of expected) {
    const r = await load(method, `http://${L7.web}${p}`, 1, 1);
    const [status = 'none'] = Object.keys(r.statuses);
    const body = r.bodies[status] ?? '';
    const server = Object.keys(r.servedBy).find((s) => s !== '-');
    rows.push([`${method} ${p}`, status, server ? `served by ${server}` : body]);
    if (status !== String(want) || (want === 403 && body !== 'RBAC: access denied')) ok = false;
  }
  printTable(rows);
  const denied = await waitFor(
    'the access-log line of the denial',
    () => wpLog.find((l) => l.msg === 'request complete' && l.response_code === 403),
    5000,
  ).catch(() => undefined);
  if (denied) {
    const fields = ['method', 'path', 'response_code', 'response_flags', 'policy', 'src.identity', 'dst.service'];
    console.log(`  waypoint access log: ${JSON.stringify(Object.fromEntries(fields.map((f) => [f, denied[f]])))}`);
  } else ok = false;
  return ok;
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
