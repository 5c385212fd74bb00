// The L7 comparison of `make compare`: HTTP/1.1 keep-alive from the client
// pod of pair 1 to its server pod (bench/server.ts's HTTP port), a 1 KiB
// POST answered with 1 KiB, at a fixed 1,000 req/s, latency from each
// request's intended send time (bench/load.ts `http`), through
//   nomesh    the client dials the server pod directly
//   ambient   the node tunnels (L4: HBONE between the nodes' agents)
//   waypoint  ambient + waypoint: the client dials the service VIP, whose
//             `istio.io/use-waypoint` label makes the client's node tunnel
//             hand the request to an `ambit waypoint` in pod 2 of n2, which
//             routes it (an HTTPRoute) and dials the endpoint's :15008
// Added latency is over no mesh; CPU is the mesh processes' (both agents,
// and the waypoint in its mode) per 1,000 requests, warm-up included.
import { CLI, httpInNetns } from '../test/helpers/fixture';
import { waitFor } from '../test/helpers/proc';
import type { Raw, Testbed } from './modes';
import { HTTP_PORT } from './server';
import { CLOCK_TICKS, cpuTicks, fmt, median } from './util';

export type HttpMode = 'nomesh' | 'ambient' | 'waypoint';
export const HTTP_MODES: HttpMode[] = ['nomesh', 'ambient', 'waypoint'];
export const HTTP_LABEL: Record<HttpMode, string> = { nomesh: 'no mesh', ambient: 'ambient L4', waypoint: 'ambient + waypoint' };
/** BENCH_HTTP_RATE changes the rate (the goal is stated at 1,000 req/s; a lower one shows an unsaturated waypoint). */
export const HTTP_RUN = { rate: Number(process.env.BENCH_HTTP_RATE ?? 1000), warmupS: 0.5, seconds: 5 };
/** Pods per node the phase needs: pair 1, and the waypoint's pod (pod 2 of n2). */
export const HTTP_MIN_PODS = 2;

const GW = 'gateway.networking.k8s.io/gateway-name';
const VIP = '10.96.0.100';
const SERVICE = 'bench-http';
const HOST = `${SERVICE}.default.svc.cluster.local`;
const QUIET = { ...process.env, AMBIT_LOG_LEVEL: 'warn' };

export type HttpRaw = Record<HttpMode, Raw[]>;

/** The service, its waypoint's pod and the Gateway and HTTPRoute the waypoint serves, added to the mesh file. */
function withWaypoint(bed: Testbed): NonNullable<Testbed['meshExtras']> {
  const wp = bed.topology.pod(2, 2);
  const server = bed.pair(1).server;
  return (mesh) => {
    mesh.workloads = mesh.workloads.map((w) => {
      // The waypoint's pod is declared without netns: no node captures it (it dials :15008 itself).
      if (w.uid === wp.uid)
        return {
          uid: wp.uid,
          name: 'waypoint',
          namespace: 'default',
          serviceAccount: 'waypoint',
          node: wp.node.name,
          addresses: [wp.ip],
          labels: { [GW]: 'waypoint' },
        };
      return w.uid === server.uid ? { ...w, labels: { app: SERVICE } } : w;
    });
    mesh.services = [
      {
        name: SERVICE,
        namespace: 'default',
        hostname: HOST,
        addresses: [VIP],
        ports: [{ port: 80, targetPort: HTTP_PORT, name: 'http' }],
        selector: { app: SERVICE },
        labels: { 'istio.io/use-waypoint': 'waypoint' },
      },
    ];
    mesh.routes = [
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'Gateway',
        metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
        spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
      },
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: SERVICE, namespace: 'default' },
        spec: {
          parentRefs: [{ group: '', kind: 'Service', name: SERVICE, port: 80 }],
          rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [{ name: SERVICE, port: 80 }] }],
        },
      },
    ];
  };
}

/** Where the client dials, and the Host it sends. */
function target(bed: Testbed, mode: HttpMode): { ip: string; port: number; host: string } {
  const server = bed.pair(1).server;
  return mode === 'waypoint'
    ? { ip: VIP, port: 80, host: `${VIP}:80` }
    : { ip: server.ip, port: HTTP_PORT, host: `${server.ip}:${HTTP_PORT}` };
}

const waypointRequests = async (bed: Testbed): Promise<number> => {
  const text = (await httpInNetns(bed.topology.pod(2, 2), '127.0.0.1', 15020, 'GET', '/metrics').catch(() => ({ body: '' }))).body;
  let sum = 0;
  for (const line of text.split('\n'))
    if (line.startsWith('istio_requests_total{') && line.includes('reporter="waypoint"')) sum += Number(line.split(' ').at(-1)) || 0;
  return sum;
};

/** Starts a mode for pair 1; in waypoint mode, ready once requests to the VIP are counted by the waypoint. */
export async function startHttpMode(bed: Testbed, mode: HttpMode): Promise<void> {
  if (mode !== 'waypoint') return bed.start(mode, 1);
  bed.meshExtras = withWaypoint(bed);
  try {
    await bed.start('ambient', 1);
  } finally {
    bed.meshExtras = undefined;
  }
  const wp = bed.topology.pod(2, 2);
  const args = [CLI, 'waypoint', '--config', bed.configFile('ambient', 1), '--name', 'waypoint', '--namespace', 'default'];
  bed.spawn('waypoint', bed.topology.spawnInPod(wp, process.execPath, args, { env: QUIET }));
  const { ip, port, host } = target(bed, mode);
  let last = 'nothing';
  await waitFor(
    'requests to the service through the waypoint',
    async () => {
      const dead = bed.deaths();
      if (dead.length) throw new Error(dead.join('; '));
      const before = await waypointRequests(bed);
      try {
        await bed.load(bed.pair(1).client, ['http', ip, String(port), host, '100', '0', '0.1'], 10_000);
      } catch (err) {
        last = (err as Error).message;
        return false;
      }
      const after = await waypointRequests(bed);
      last = `the waypoint counted ${after - before} of 10 requests`;
      return after - before >= 10;
    },
    60_000,
    200,
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${last}`);
  });
}

/** Every selected mode in turn, `repeats` times (interleaved, so drift hits all alike). */
export async function httpPhase(bed: Testbed, modes: HttpMode[], repeats: number, warnings: string[]): Promise<HttpRaw> {
  const raw: HttpRaw = { nomesh: [], ambient: [], waypoint: [] };
  const { rate, warmupS, seconds } = HTTP_RUN;
  for (let rep = 1; rep <= repeats; rep++) {
    for (const mode of modes) {
      await startHttpMode(bed, mode);
      const ticks = (label?: string): number =>
        bed.procs.filter((p) => label === undefined || p.label === label).reduce((a, p) => a + cpuTicks(p.child.pid ?? -1), 0);
      const pids = bed.meshPids();
      const before = pids.reduce((a, pid) => a + cpuTicks(pid), 0);
      const wpBefore = ticks('waypoint');
      const { ip, port, host } = target(bed, mode);
      const r = await bed.load(
        bed.pair(1).client,
        ['http', ip, String(port), host, String(rate), String(warmupS), String(seconds)],
        (warmupS + seconds + 40) * 1000,
      );
      const cpuS = (pids.reduce((a, pid) => a + cpuTicks(pid), 0) - before) / CLOCK_TICKS;
      const per1k = (s: number): number => s / ((rate * (warmupS + seconds)) / 1000);
      const waypointCpuS = (ticks('waypoint') - wpBefore) / CLOCK_TICKS;
      const row = { ...r, cpu_s: cpuS, cpu_s_per_1k: per1k(cpuS), waypoint_cpu_s_per_1k: per1k(waypointCpuS) };
      raw[mode].push(row);
      console.error(
        `repeat ${rep}/${repeats} http ${HTTP_LABEL[mode].padEnd(18)} p50 ${fmt(r.p50_us)} µs, p99 ${fmt(r.p99_us)} µs, mesh CPU ${fmt(cpuS)} s`,
      );
      warnings.push(...bed.deaths().map((d) => `repeat ${rep} http ${mode}: ${d}`));
      await bed.stopMode();
    }
  }
  return raw;
}

export interface HttpSummary {
  modes: HttpMode[];
  median: Record<string, Partial<Record<HttpMode, number>>>;
  spread: Record<string, Partial<Record<HttpMode, [number, number]>>>;
  goal?: { text: string; measured: string; met: boolean };
}

const FIELDS = ['p50_us', 'p99_us', 'cpu_s_per_1k', 'waypoint_cpu_s_per_1k', 'sendLag_p99_us'];

export function summariseHttp(raw: HttpRaw, modes: HttpMode[]): HttpSummary {
  const out: HttpSummary = { modes, median: {}, spread: {} };
  for (const f of FIELDS) {
    const med: Partial<Record<HttpMode, number>> = {};
    const spread: Partial<Record<HttpMode, [number, number]>> = {};
    for (const m of modes) {
      const xs = raw[m].map((r) => Number(r[f]));
      med[m] = median(xs);
      spread[m] = [Math.min(...xs), Math.max(...xs)];
    }
    out.median[f] = med;
    out.spread[f] = spread;
  }
  const p50 = out.median.p50_us ?? {};
  if (p50.nomesh !== undefined && p50.ambient !== undefined && p50.waypoint !== undefined) {
    const l4 = p50.ambient - p50.nomesh;
    const wp = p50.waypoint - p50.nomesh;
    out.goal = {
      text: `waypoint's added p50 ≤ 2× ambient L4's added p50${HTTP_RUN.rate === 1000 ? '' : ` (goal stated at 1,000 req/s, measured at ${HTTP_RUN.rate})`}`,
      measured: `+${fmt(wp)} µs vs +${fmt(l4)} µs (${(wp / l4).toFixed(2)}×)`,
      met: wp <= 2 * l4,
    };
  }
  return out;
}

export function httpTable(s: HttpSummary): string {
  const v = (f: string, m: HttpMode): number => s.median[f]?.[m] ?? NaN;
  const added = (f: string, m: HttpMode): string => {
    if (m === 'nomesh' || !s.modes.includes('nomesh')) return '–';
    const d = v(f, m) - v(f, 'nomesh');
    return `${d >= 0 ? '+' : '−'}${fmt(Math.abs(d))}`;
  };
  const spread = (f: string, m: HttpMode): string => {
    const r = s.spread[f]?.[m];
    return r ? `${fmt(r[0])}–${fmt(r[1])}` : '–';
  };
  const row = (label: string, cell: (m: HttpMode) => string): string => `| ${label} | ${s.modes.map(cell).join(' | ')} |`;
  const lines = [
    `| HTTP/1.1, 1 KiB each way, ${HTTP_RUN.rate.toLocaleString('en-US')} req/s | ${s.modes.map((m) => HTTP_LABEL[m]).join(' | ')} |`,
    `|---|${s.modes.map(() => '---:').join('|')}|`,
    row('latency p50 (µs)', (m) => `${fmt(v('p50_us', m))} (${spread('p50_us', m)})`),
    row('latency p99 (µs)', (m) => `${fmt(v('p99_us', m))} (${spread('p99_us', m)})`),
    row('added p50 (µs)', (m) => added('p50_us', m)),
    row('added p99 (µs)', (m) => added('p99_us', m)),
    row('mesh CPU s per 1,000 requests', (m) => (m === 'nomesh' ? '–' : fmt(v('cpu_s_per_1k', m)))),
    row('… of which the waypoint', (m) => (m === 'waypoint' ? fmt(v('waypoint_cpu_s_per_1k', m)) : '–')),
  ];
  if (s.goal) lines.push('', `goal: ${s.goal.met ? 'PASS' : 'FAIL'}: ${s.goal.text}; ${s.goal.measured}`);
  return lines.join('\n');
}
