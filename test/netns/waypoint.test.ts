// Root: a real `ambit waypoint` process in a pod's netns between a test
// client (an HBONE peer with its own certificate) and backend pods served
// by a real `ambit node`. The client sends HTTP over CONNECT streams whose
// authority is a service VIP:port, as a node tunnel does when it hands
// traffic to a waypoint; the waypoint routes, balances, retries, times out,
// authorizes, and reaches each endpoint over HBONE with its own identity.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { Cleanup } from '../helpers/cleanup';
import { CLI, httpInNetns, PODAPP, pinDirFor, requireRoot, sample, testBed, workloadOf } from '../helpers/fixture';
import { certFor, connect, firstLine, openSession } from '../helpers/hbone-client';
import { must } from '../helpers/must';
import { jsonLines, TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import type { TestPod, Topology } from '../helpers/topology';

const GW = 'gateway.networking.k8s.io/gateway-name';
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;
const host = (name: string): string => `${name}.default.svc.cluster.local`;
const VIP = {
  echo: '10.96.0.10',
  echoV2: '10.96.0.11',
  flaky: '10.96.0.12',
  flakyNoRetry: '10.96.0.13',
  slow: '10.96.0.14',
  grpc: '10.96.0.15',
  tcp: '10.96.0.16',
  resilient: '10.96.0.17',
  limited: '10.96.0.18',
  rated: '10.96.0.19',
};

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request over its own CONNECT stream to the waypoint, authority VIP:port. */
async function request(
  session: http2.ClientHttp2Session,
  authority: string,
  opts: { method?: string; path?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const { outcome, stream } = await connect(session, authority);
  assert.ok(stream, `CONNECT ${authority}: ${outcome}`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        method: opts.method ?? 'GET',
        path: opts.path ?? '/',
        headers: { host: authority, connection: 'close', ...opts.headers },
        createConnection: () => stream as unknown as net.Socket,
        timeout: 10_000 * TIME_SCALE,
      },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from the waypoint for ${authority}${opts.path ?? '/'}`)));
    req.on('error', reject);
    req.end();
  });
}

/** n requests, c at a time; the answers in completion order. */
async function many(n: number, c: number, one: () => Promise<Answer>): Promise<Answer[]> {
  const out: Answer[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++;
        out.push(await one());
      }
    }),
  );
  return out;
}

const nameOf = (a: Answer): string => String(a.headers['x-name'] ?? `status ${a.status}`);
function count(xs: string[]): Record<string, number> {
  const m: Record<string, number> = {};
  for (const x of xs) m[x] = (m[x] ?? 0) + 1;
  return m;
}

describe('ambit waypoint: L7 routing, retries, timeouts, authorization, telemetry', () => {
  let topo: Topology;
  let wpPod: TestPod;
  let session: http2.ClientHttp2Session;
  /** A client running as another service account than session's. */
  let other: http2.ClientHttp2Session;
  let wpLog: Record<string, unknown>[];
  let config: string;
  /** The mesh file as written; tests that reload change a copy. */
  let mesh: { routes: Record<string, unknown>[] } & Record<string, unknown>;
  let waypoint: ChildProcess;
  const cleanup = new Cleanup();
  const metrics = async (): Promise<string> => (await httpInNetns(wpPod, '127.0.0.1', 15020, 'GET', '/metrics')).body;
  /** istio_requests_total summed over every series with these labels (sample() reads one). */
  const requestsTotal = (text: string, labels: Record<string, string>): number => {
    let sum = 0;
    for (const line of text.split('\n').filter((l) => l.startsWith('istio_requests_total{')))
      sum += sample(line, 'istio_requests_total', { reporter: 'waypoint', ...labels }) ?? 0;
    return sum;
  };

  before(async () => {
    requireRoot();
    let dir: string;
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    wpPod = topo.pod(1, 1);
    const client = topo.pod(1, 2);
    const [a, b, v2] = [topo.pod(2, 1), topo.pod(2, 2), topo.pod(2, 3)];
    const caDir = path.join(dir, 'ca');
    const backend = (p: TestPod, name: string, labels: Record<string, string>) => ({
      ...workloadOf(p),
      name,
      serviceAccount: name,
      labels,
    });
    const svc = (name: string, vip: string, port: number, targetPort: number, selector: Record<string, string>, extra = {}) => ({
      name,
      namespace: 'default',
      hostname: host(name),
      addresses: [vip],
      ports: [{ port, targetPort, ...extra }],
      selector,
    });
    const parent = (name: string) => [{ group: '', kind: 'Service', name, port: 80 }];
    const route = (name: string, rules: unknown[]) => ({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name, namespace: 'default' },
      spec: { parentRefs: parent(name), rules },
    });
    config = path.join(dir, 'mesh.yaml');
    mesh = {
      trustDomain: 'cluster.local',
      ca: { dir: caDir },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: [
        // The waypoint's pod: declared (the node tunnel finds waypoints through it), without netns: never captured.
        {
          uid: wpPod.uid,
          name: 'waypoint',
          namespace: 'default',
          serviceAccount: 'waypoint',
          node: wpPod.node.name,
          addresses: [wpPod.ip],
          labels: { [GW]: 'waypoint' },
        },
        backend(a, 'echo-a', { app: 'echo', grpc: 'yes' }),
        backend(b, 'echo-b', { app: 'echo', grpc: 'yes' }),
        backend(v2, 'echo-v2', { app: 'echo-v2', grpc: 'yes' }),
      ],
      services: [
        svc('echo', VIP.echo, 80, 8080, { app: 'echo' }, { name: 'http-web' }),
        svc('echo-v2', VIP.echoV2, 80, 8080, { app: 'echo-v2' }, { name: 'http' }),
        svc('flaky', VIP.flaky, 80, 8081, { app: 'echo' }, { name: 'http' }),
        svc('flaky-noretry', VIP.flakyNoRetry, 80, 8081, { app: 'echo' }, { name: 'http' }),
        svc('slow', VIP.slow, 80, 8080, { app: 'echo' }, { name: 'http' }),
        svc('grpc', VIP.grpc, 9090, 8080, { grpc: 'yes' }, { appProtocol: 'grpc' }),
        svc('tcp', VIP.tcp, 7000, 7000, { app: 'echo-v2' }),
        // Three endpoints (port 8082), one of which always answers 503; and one endpoint behind tight limits.
        svc('resilient', VIP.resilient, 80, 8082, { grpc: 'yes' }, { name: 'http' }),
        svc('limited', VIP.limited, 80, 8080, { app: 'echo-v2' }, { name: 'http' }),
        svc('rated', VIP.rated, 80, 8080, { app: 'echo-v2' }, { name: 'http' }),
      ],
      routes: [
        {
          apiVersion: 'gateway.networking.k8s.io/v1',
          kind: 'Gateway',
          metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
          spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
        },
        route('echo', [
          { matches: [{ headers: [{ name: 'x-canary', value: 'true' }] }], backendRefs: [{ name: 'echo-v2', port: 80 }] },
          {
            backendRefs: [
              { name: 'echo', port: 80, weight: 90 },
              { name: 'echo-v2', port: 80, weight: 10 },
            ],
          },
        ]),
        route('flaky', [{ backendRefs: [{ name: 'flaky', port: 80 }], retry: { attempts: 3, codes: [503], backoff: '1ms' } }]),
        route('flaky-noretry', [{ backendRefs: [{ name: 'flaky-noretry', port: 80 }], retry: { attempts: 0 } }]),
        route('slow', [{ backendRefs: [{ name: 'slow', port: 80 }], timeouts: { request: '300ms' } }]),
        // Routed, so that a waypoint on xDS (whose Address resources carry no port names) serves it as HTTP too.
        route('limited', [{ backendRefs: [{ name: 'limited', port: 80 }] }]),
        route('rated', [{ backendRefs: [{ name: 'rated', port: 80 }] }]),
        {
          apiVersion: 'policy.linkerd.io/v1alpha1',
          kind: 'HTTPLocalRateLimitPolicy',
          metadata: { name: 'rated', namespace: 'default' },
          spec: { targetRef: { group: '', kind: 'Service', name: 'rated' }, identity: { requestsPerSecond: 3 } },
        },
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'DestinationRule',
          metadata: { name: 'resilient', namespace: 'default' },
          spec: {
            host: 'resilient',
            trafficPolicy: {
              loadBalancer: { simple: 'ROUND_ROBIN' },
              outlierDetection: { consecutive5xxErrors: 2, interval: '1s', baseEjectionTime: '3s', maxEjectionPercent: 50 },
            },
          },
        },
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'DestinationRule',
          metadata: { name: 'limited', namespace: 'default' },
          spec: {
            host: 'limited.default.svc.cluster.local',
            trafficPolicy: { connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } },
          },
        },
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'deny-grpc-admin', namespace: 'default' },
          spec: {
            targetRefs: [{ group: '', kind: 'Service', name: 'grpc' }],
            action: 'DENY',
            rules: [{ to: [{ operation: { paths: ['/echo.Admin/*'] } }] }],
          },
        },
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'deny-admin', namespace: 'default' },
          spec: {
            targetRefs: [{ group: '', kind: 'Service', name: 'echo' }],
            action: 'DENY',
            rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }, { to: [{ operation: { methods: ['DELETE'] } }] }],
          },
        },
      ],
    };
    fs.writeFileSync(config, YAML.stringify(mesh));
    const n2 = topo.node(2);
    const agent = topo.spawnInNode(n2, process.execPath, [
      CLI,
      'node',
      '--config',
      config,
      '--node',
      n2.name,
      '--pods-cgroup',
      n2.podsCgroup,
      '--pin-dir',
      pinDirFor(topo, n2),
      '--workers',
      '0',
    ]);
    await waitForLine(agent, (l) => l.includes('"node ready"'), 'node agent n2');
    const apps: [TestPod, string[]][] = [
      [a, ['http', '8080', 'echo-a']],
      [a, ['http', '8081', 'flaky-a', '30']],
      [b, ['http', '8080', 'echo-b']],
      [b, ['http', '8081', 'flaky-b', '30']],
      [v2, ['http', '8080', 'echo-v2']],
      [v2, ['whoami', '7000']],
      [a, ['http', '8082', 'res-a', '100']],
      [b, ['http', '8082', 'res-b']],
      [v2, ['http', '8082', 'res-v2']],
    ];
    for (const [pod, args] of apps) {
      const app = topo.spawnInPod(pod, process.execPath, [PODAPP, ...args]);
      await waitForLine(app, (l) => l.includes('listening'), `${pod.name} ${args.join(' ')}`);
    }
    waypoint = topo.spawnInPod(wpPod, process.execPath, [
      CLI,
      'waypoint',
      '--config',
      config,
      '--name',
      'waypoint',
      '--namespace',
      'default',
    ]);
    wpLog = jsonLines(waypoint);
    await waitFor('waypoint ready', () => wpLog.some((l) => l.msg === 'waypoint ready'), 30_000);
    const ca = await BuiltinCa.open(caDir);
    session = await openSession(client.netnsPath, wpPod.ip, await certFor(ca, id('sleep')));
    cleanup.add('client session', () => session.destroy());
    other = await openSession(client.netnsPath, wpPod.ip, await certFor(ca, id('other')));
    cleanup.add('other client session', () => other.destroy());
  });

  after(() => {
    // AMBIT_TEST_DUMP=FILE keeps the waypoint's log for a look after a failure.
    if (process.env.AMBIT_TEST_DUMP) fs.writeFileSync(process.env.AMBIT_TEST_DUMP, wpLog.map((l) => JSON.stringify(l)).join('\n'));
    return cleanup.run();
  });

  test('canary: 90/10 over 1,000 requests, within 4.7 standard deviations', async () => {
    const answers = await many(1000, 20, () => request(session, `${VIP.echo}:80`));
    const names = count(answers.map(nameOf));
    const v2 = names['echo-v2'] ?? 0;
    assert.equal((names['echo-a'] ?? 0) + (names['echo-b'] ?? 0) + v2, 1000, JSON.stringify(names));
    // Binomial(1000, 0.1): mean 100, sd 9.5.
    assert.ok(v2 >= 55 && v2 <= 145, `canary got ${v2} of 1000: ${JSON.stringify(names)}`);
    // Least request spreads the stable share over both of its endpoints.
    assert.ok((names['echo-a'] ?? 0) > 200 && (names['echo-b'] ?? 0) > 200, JSON.stringify(names));
  });

  test('header match: x-canary: true always goes to the canary', async () => {
    const answers = await many(40, 8, () => request(session, `${VIP.echo}:80`, { headers: { 'x-canary': 'true' } }));
    assert.deepEqual(count(answers.map(nameOf)), { 'echo-v2': 40 });
    const body = JSON.parse(answers[0]?.body ?? '{}') as { host?: string; path?: string };
    assert.equal(body.host, `${VIP.echo}:80`, 'the Host header reaches the app as sent');
  });

  test('retries hide a backend failing 30 % of requests; without them it shows', async () => {
    const without = await many(300, 10, () => request(session, `${VIP.flakyNoRetry}:80`));
    // Three at a time: Envoy's budget always allows three retries in flight, so none is refused for budget here.
    const withRetries = await many(300, 3, () => request(session, `${VIP.flaky}:80`));
    const ok = (xs: Answer[]): number => xs.filter((x) => x.status === 200).length / xs.length;
    assert.ok(ok(without) > 0.6 && ok(without) < 0.8, `success without retries ${ok(without)}`);
    assert.ok(ok(withRetries) >= 0.98, `success with 3 retries on 503: ${ok(withRetries)}`);
    const retried = wpLog.filter((l) => l.msg === 'request complete' && (l.attempts as number) > 1 && l['dst.service'] === host('flaky'));
    assert.ok(retried.length > 30, `${retried.length} requests took more than one attempt`);
  });

  test('timeouts.request: a slow backend is answered 504 with UT in time; a quick one 200', async () => {
    const started = Date.now();
    const slow = await request(session, `${VIP.slow}:80`, { path: '/?sleep=3000' });
    const took = Date.now() - started;
    assert.equal(slow.status, 504);
    assert.equal(slow.body, 'upstream request timeout');
    assert.ok(took < 2000 * TIME_SCALE, `504 after ${took} ms (timeout 300 ms)`);
    assert.equal((await request(session, `${VIP.slow}:80`, { path: '/?sleep=0' })).status, 200);
    await waitFor('the access-log line of the 504', () =>
      wpLog.find((l) => l.msg === 'request complete' && l.response_code === 504 && l.response_flags === 'UT'),
    );
  });

  test('L7 deny by path and by method: 403 RBAC: access denied; the rest passes', async () => {
    const admin = await request(session, `${VIP.echo}:80`, { path: '/admin/users' });
    assert.deepEqual([admin.status, admin.body], [403, 'RBAC: access denied']);
    const del = await request(session, `${VIP.echo}:80`, { method: 'DELETE', path: '/items/1' });
    assert.deepEqual([del.status, del.body], [403, 'RBAC: access denied']);
    assert.equal((await request(session, `${VIP.echo}:80`, { path: '/administrator' })).status, 200, '/admin/* is not /administrator');
    assert.equal((await request(session, `${VIP.echo}:80`, { method: 'POST', path: '/items' })).status, 200);
  });

  test('a backend answering garbage gets 502 UPE; the waypoint keeps serving', async () => {
    const r = await request(session, `${VIP.echo}:80`, { path: '/garbage', headers: { 'x-canary': 'true' } });
    assert.equal(r.status, 502);
    assert.equal((await request(session, `${VIP.echo}:80`)).status, 200);
    await waitFor('UPE in the access log', () => wpLog.find((l) => l.msg === 'request complete' && l.response_flags === 'UPE'));
  });

  test('outlier detection: a backend answering 503 is ejected, the others keep answering, and it is back after baseEjectionTime', async () => {
    const one = () => request(session, `${VIP.resilient}:80`);
    // Round robin over three endpoints: res-a's second 503 in a row, within its first two turns, ejects it.
    const first: { a: Answer; at: number }[] = [];
    for (let i = 0; i < 6; i++) first.push({ a: await one(), at: Date.now() });
    const failed = first.filter((x) => x.a.status !== 200);
    assert.equal(failed.length, 2, `two 503 from res-a before it is out: ${JSON.stringify(first.map((x) => nameOf(x.a)))}`);
    assert.ok(
      failed.every((x) => x.a.status === 503 && nameOf(x.a) === 'res-a'),
      JSON.stringify(failed.map((x) => x.a.status)),
    );
    const ejectedAt = must(failed[1], 'second').at;
    // While it is out (3 s), every request succeeds on the two others.
    const during = await many(60, 3, one);
    assert.deepEqual(
      [...new Set(during.map((x) => `${x.status} ${nameOf(x)}`))].sort(),
      ['200 res-b', '200 res-v2'],
      'only the healthy endpoints answer while res-a is ejected',
    );
    assert.ok(Date.now() - ejectedAt < 3000, 'the requests above ran within the ejection');
    // Then it comes back: the first request it takes is its 503 again, not before baseEjectionTime.
    const back = await waitFor(
      'res-a back in rotation',
      async () => {
        const a = await one();
        return nameOf(a) === 'res-a' ? Date.now() : undefined;
      },
      15_000,
    );
    assert.ok(back - ejectedAt >= 2900, `back ${back - ejectedAt} ms after its ejection (baseEjectionTime 3 s)`);
    assert.ok(back - ejectedAt < 3000 + 4000 * TIME_SCALE, `back ${back - ejectedAt} ms after its ejection (baseEjectionTime 3 s)`);
    const log = wpLog.filter((l) => l.msg === 'request complete' && l['dst.service'] === host('resilient'));
    assert.ok(
      log.every((l) => l.destination_rule === 'default/resilient'),
      'the access log names the DestinationRule',
    );
  });

  test('connectionPool: a burst past maxConnections 1 + http1MaxPendingRequests 1 is answered 503 UO; the backend sees one at a time', async () => {
    const burst = await Promise.all(Array.from({ length: 8 }, () => request(session, `${VIP.limited}:80`, { path: '/?sleep=400' })));
    const ok = burst.filter((a) => a.status === 200);
    const overflow = burst.filter((a) => a.status === 503);
    assert.equal(ok.length + overflow.length, 8, JSON.stringify(burst.map((a) => a.status)));
    assert.ok(ok.length >= 1 && ok.length <= 2, `one in flight and one waiting get through: ${ok.length} answered 200`);
    assert.ok(
      overflow.every((a) => /overflow/.test(a.body)),
      JSON.stringify(overflow.map((a) => a.body)),
    );
    assert.deepEqual(
      ok.map((a) => a.headers['x-in-flight']),
      ok.map(() => '1'),
      'the backend never had more than one request at once',
    );
    await waitFor('UO in the access log', () =>
      wpLog.find((l) => l.msg === 'request complete' && l['dst.service'] === host('limited') && l.response_flags === 'UO'),
    );
    const text = await metrics();
    assert.ok(requestsTotal(text, { destination_service: host('limited'), response_code: '503', response_flags: 'UO' }) >= 6);
    // Once the burst is over, the destination serves again.
    assert.equal((await request(session, `${VIP.limited}:80`)).status, 200);
  });

  test('HTTPLocalRateLimitPolicy: an identity limited to 3 rps is answered 429 RL beyond it; another identity is unaffected', async () => {
    const burst = await Promise.all(Array.from({ length: 12 }, () => request(session, `${VIP.rated}:80`)));
    const statuses = burst.map((a) => a.status);
    const ok = burst.filter((a) => a.status === 200);
    const limited = burst.filter((a) => a.status === 429);
    assert.equal(ok.length + limited.length, 12, JSON.stringify(statuses));
    // A burst of one second's worth (3), and at most a token or two refilled while the burst is sent.
    assert.ok(ok.length >= 3 && ok.length <= 5, `3 rps let ${ok.length} of a burst of 12 through: ${JSON.stringify(statuses)}`);
    assert.ok(
      limited.every((a) => a.body === 'local_rate_limited'),
      JSON.stringify(limited.map((a) => a.body)),
    );
    // The other identity has a bucket of its own: its burst of 3 all goes through while sleep's is empty.
    const theirs = await Promise.all(Array.from({ length: 3 }, () => request(other, `${VIP.rated}:80`)));
    assert.deepEqual(
      theirs.map((a) => a.status),
      [200, 200, 200],
    );
    const line = await waitFor('RL in the access log', () =>
      wpLog.find((l) => l.msg === 'request complete' && l['dst.service'] === host('rated') && l.response_flags === 'RL'),
    );
    assert.equal(line.response_code, 429);
    assert.equal(line['src.identity'], id('sleep'));
    assert.match(String(line.detail), /^local_rate_limited: default\/rated identity 3\/s$/);
    const rl = { destination_service: host('rated'), source_principal: id('sleep'), response_code: '429', response_flags: 'RL' };
    // A request is counted when its stream closes, which may be just after the client read the answer.
    const text = await waitFor('every 429 counted', async () => {
      const t = await metrics();
      return requestsTotal(t, rl) === limited.length ? t : undefined;
    });
    assert.equal(requestsTotal(text, { destination_service: host('rated'), source_principal: id('other'), response_code: '429' }), 0);
    assert.equal(
      sample(text, 'ambit_waypoint_rate_limited_total', { destination_service: host('rated'), policy: 'default/rated', limit: 'identity' }),
      limited.length,
    );
    // The admin dump names the policy and the buckets held (sleep's and other's at least).
    const dump = JSON.parse((await httpInNetns(wpPod, '127.0.0.1', 15000, 'GET', '/config_dump')).body);
    assert.ok(dump.rateLimits.includes(`default/rated → default/${host('rated')}`), JSON.stringify(dump.rateLimits));
    assert.ok(dump.rateLimitBuckets >= 2, `buckets held: ${dump.rateLimitBuckets}`);
    // The bucket refills at the rate: sleep is served again within a second or so.
    await waitFor(
      'sleep served again as its bucket refills',
      async () => (await request(session, `${VIP.rated}:80`)).status === 200,
      3000,
      100,
    );
  });

  test('gRPC: one client connection, every request balanced on its own over 3 endpoints', async () => {
    const { outcome, stream } = await connect(session, `${VIP.grpc}:9090`);
    assert.ok(stream, outcome);
    const h2 = http2.connect(`http://${VIP.grpc}:9090`, { createConnection: () => stream as unknown as net.Socket });
    h2.on('error', () => undefined);
    // grpc-status comes in the trailers, or in the headers of a trailers-only answer.
    const call = (method = '/echo.Echo/Say'): Promise<{ name: string; grpcStatus: string; status: number }> =>
      new Promise((resolve, reject) => {
        const s = h2.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers' });
        let name = '';
        let status = 0;
        let grpcStatus = '';
        s.on('response', (h) => {
          name = String(h['x-name']);
          status = Number(h[':status']);
          grpcStatus = String(h['grpc-status'] ?? '');
        });
        s.on('trailers', (t) => {
          grpcStatus = String(t['grpc-status']);
        });
        s.on('end', () => resolve({ name, grpcStatus, status }));
        s.on('error', reject);
        s.resume();
        s.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    const results: { name: string; grpcStatus: string }[] = [];
    for (let i = 0; i < 60; i++) results.push(await call());
    const denied = await call('/echo.Admin/Drop');
    assert.deepEqual([denied.status, denied.grpcStatus], [200, '7'], 'an L7 denial is PERMISSION_DENIED to a gRPC client');
    h2.close();
    const names = count(results.map((r) => r.name));
    assert.deepEqual(Object.keys(names).sort(), ['echo-a', 'echo-b', 'echo-v2'], JSON.stringify(names));
    for (const [n, c] of Object.entries(names)) assert.ok(c >= 8, `${n} got ${c} of 60`);
    assert.ok(
      results.every((r) => r.grpcStatus === '0'),
      'trailers carried back',
    );
    await waitFor(
      'grpc metrics',
      async () => requestsTotal(await metrics(), { request_protocol: 'grpc', grpc_response_status: '0' }) >= 60,
    );
  });

  test('a service port that is not HTTP is forwarded as TCP to an endpoint', async () => {
    const { outcome, stream } = await connect(session, `${VIP.tcp}:7000`);
    assert.ok(stream, outcome);
    const line = JSON.parse(await firstLine(stream)) as { local: string };
    assert.equal(line.local, `${topo.pod(2, 3).ip}:7000`);
    stream.close();
  });

  test("a CONNECT to a pod IP: HTTP as its services' ports say, to that pod only, the services' routes not applied", async () => {
    const pod = topo.pod(2, 1);
    // The HTTPRoute of echo would send x-canary: true to echo-v2; addressed to the pod, it stays with the pod.
    const answers = await many(10, 5, () => request(session, `${pod.ip}:8080`, { path: '/direct', headers: { 'x-canary': 'true' } }));
    assert.deepEqual(count(answers.map(nameOf)), { 'echo-a': 10 });
    const line = await waitFor('the access-log line of a pod-addressed request', () =>
      wpLog.find((l) => l.msg === 'request complete' && l.path === '/direct'),
    );
    assert.equal(line['dst.workload'], 'echo-a');
    assert.equal(line['dst.addr'], `${pod.ip}:8080`);
    assert.equal(line.route, undefined);
    assert.equal(line['src.identity'], id('sleep'));
  });

  test("Istio's HTTP metrics with reporter waypoint, and one access-log line per request", async () => {
    const text = await metrics();
    const base = {
      source_principal: id('sleep'),
      source_workload_namespace: 'default',
      destination_service: host('echo'),
      destination_service_name: 'echo',
      destination_service_namespace: 'default',
      request_protocol: 'http',
      connection_security_policy: 'mutual_tls',
    };
    const ok = (dst: string) =>
      requestsTotal(text, {
        ...base,
        destination_workload: dst,
        destination_principal: id(dst),
        response_code: '200',
        response_flags: '-',
      });
    assert.ok(ok('echo-a') + ok('echo-b') >= 800, `stable answers counted: ${ok('echo-a') + ok('echo-b')}`);
    assert.ok(requestsTotal(text, { ...base, response_code: '403', response_flags: '-' }) >= 2, 'denials counted');
    assert.ok(requestsTotal(text, { destination_service: host('slow'), response_code: '504', response_flags: 'UT' }) >= 1);
    assert.ok(requestsTotal(text, { destination_service: host('echo-v2'), response_code: '502', response_flags: 'UPE' }) >= 1);
    assert.ok(requestsTotal(text, { destination_service: host('flaky-noretry'), response_code: '503' }) >= 60);
    assert.match(text, /^istio_request_duration_milliseconds_bucket\{.*le="0\.5".*\} \d+/m);
    assert.match(text, /^istio_request_bytes_sum\{/m);
    assert.match(text, /^istio_response_bytes_sum\{/m);
    const line = wpLog.find((l) => l.msg === 'request complete' && l.path === '/admin/users');
    assert.ok(line, 'the denial has its line');
    for (const f of ['src.addr', 'src.identity', 'method', 'path', 'authority', 'protocol', 'response_code', 'response_flags', 'duration'])
      assert.ok(f in line, `access-log field ${f} in ${JSON.stringify(line)}`);
    assert.equal(line['src.identity'], id('sleep'));
    assert.equal(line.response_code, 403);
    const lines = wpLog.filter((l) => l.msg === 'request complete').length;
    assert.ok(lines >= 1000 + 40 + 600, `${lines} access-log lines`);
    assert.equal(waypoint.exitCode, null, 'the waypoint is still running');
  });

  test('reload: a route to a missing service is refused and the last good routes serve; a valid change applies', async () => {
    const echoRoute = (backendRefs: unknown[]) => ({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'echo', namespace: 'default' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }], rules: [{ backendRefs }] },
    });
    const withEcho = (r: unknown) => ({
      ...mesh,
      routes: mesh.routes.map((x) => ((x.metadata as { name?: string }).name === 'echo' && x.kind === 'HTTPRoute' ? r : x)),
    });
    const rejected = (): number => wpLog.filter((l) => l.msg === 'configuration change rejected; the last good one keeps serving').length;
    const before = rejected();
    fs.writeFileSync(config, YAML.stringify(withEcho(echoRoute([{ name: 'echo-v3', port: 80 }]))));
    const line = await waitFor('the rejection', () =>
      rejected() > before ? wpLog.findLast((l) => l.msg === 'configuration change rejected; the last good one keeps serving') : undefined,
    );
    assert.match(String(line.err), /routes\[\d+\] \(HTTPRoute default\/echo\).*backendRefs\[0\]\.name.*echo-v3/);
    const still = await many(40, 8, () => request(session, `${VIP.echo}:80`));
    assert.ok(
      still.filter((a) => nameOf(a) !== 'echo-v2').length > 20,
      `the 90/10 split still serves: ${JSON.stringify(count(still.map(nameOf)))}`,
    );
    const applied = wpLog.filter((l) => l.msg === 'configuration applied').length;
    fs.writeFileSync(config, YAML.stringify(withEcho(echoRoute([{ name: 'echo-v2', port: 80 }]))));
    await waitFor('the change applied', () => wpLog.filter((l) => l.msg === 'configuration applied').length > applied);
    const after = await many(40, 8, () => request(session, `${VIP.echo}:80`));
    assert.deepEqual(count(after.map(nameOf)), { 'echo-v2': 40 });
  });

  test('SIGTERM: GOAWAY to the clients, then the waypoint exits 0 once their sessions are gone', async () => {
    const exited = new Promise<number | null>((resolve) => waypoint.once('exit', (code) => resolve(code)));
    waypoint.kill('SIGTERM');
    await waitFor('GOAWAY on the client session', () => session.closed || session.destroyed);
    assert.equal(await exited, 0);
    assert.ok(wpLog.some((l) => l.msg === 'stopped'));
  });

  test('on xDS: a waypoint started with --xds takes routes, policies and its certificate from `ambit control-plane`', async () => {
    // The file as first written (the reload test changed the waypoint's copy), with a token for the waypoint.
    const dir = path.dirname(config);
    const token = randomBytes(24).toString('base64url');
    const tokenFile = path.join(dir, 'waypoint.token');
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const cpConfig = path.join(dir, 'control-plane.yaml');
    const sha256 = createHash('sha256').update(token).digest('hex');
    // A waypoint is sent the routes and policies of the services that use it: here every service does.
    const services = (mesh.services as { labels?: Record<string, string> }[]).map((x) => ({
      ...x,
      labels: { ...x.labels, 'istio.io/use-waypoint': 'waypoint' },
    }));
    fs.writeFileSync(cpConfig, YAML.stringify({ ...mesh, services, controlPlane: { tokens: [{ waypoint: 'default/waypoint', sha256 }] } }));
    // In the waypoint pod's node, which routes to its pods (the switch does not).
    const cpIp = wpPod.node.wireIp;
    const address = `${cpIp}:15112`;
    const cp = topo.spawnInNode(wpPod.node, process.execPath, [
      CLI,
      'control-plane',
      '--config',
      cpConfig,
      '--listen',
      address,
      '--server-ip',
      cpIp,
    ]);
    const cpLog = jsonLines(cp);
    await waitFor('control plane serving', () => cpLog.some((l) => l.msg === 'control plane serving xDS and the CA'), 30_000);
    const onXds = topo.spawnInPod(wpPod, process.execPath, [
      CLI,
      'waypoint',
      '--xds',
      address,
      '--xds-root',
      path.join(dir, 'ca', 'root-cert.pem'),
      '--xds-token',
      tokenFile,
      '--name',
      'waypoint',
      '--namespace',
      'default',
    ]);
    const xdsLog = jsonLines(onXds);
    await waitFor('waypoint on xDS ready', () => xdsLog.some((l) => l.msg === 'waypoint ready'), 30_000).catch((err: Error) => {
      throw new Error(
        `${err.message}; its last lines: ${xdsLog
          .slice(-5)
          .map((l) => JSON.stringify(l))
          .join(' ')}; control plane: ${cpLog
          .slice(-3)
          .map((l) => JSON.stringify(l))
          .join(' ')}`,
      );
    });
    const ready = await httpInNetns(wpPod, '127.0.0.1', 15021, 'GET', '/healthz/ready');
    assert.equal(ready.status, 200);
    const s = await openSession(topo.pod(1, 2).netnsPath, wpPod.ip, await certFor(await BuiltinCa.open(path.join(dir, 'ca')), id('sleep')));
    cleanup.add('xDS waypoint session', () => s.destroy());
    // The routes of the first file, as the control plane serves them: the header match goes to the canary only
    // (without the route the service's own endpoints, echo-a and echo-b, would answer).
    const canary = await many(20, 5, () => request(s, `${VIP.echo}:80`, { headers: { 'x-canary': 'true' } }));
    assert.deepEqual(count(canary.map(nameOf)), { 'echo-v2': 20 });
    const names = count((await many(100, 10, () => request(s, `${VIP.echo}:80`))).map(nameOf));
    assert.equal((names['echo-a'] ?? 0) + (names['echo-b'] ?? 0) + (names['echo-v2'] ?? 0), 100, JSON.stringify(names));
    // The service's L7 policy came along.
    const denied = await request(s, `${VIP.echo}:80`, { path: '/admin/users' });
    assert.equal(denied.status, 403);
    // And the DestinationRules: the connection pool's limits answer a burst with 503 UO here too.
    const burst = await Promise.all(Array.from({ length: 6 }, () => request(s, `${VIP.limited}:80`, { path: '/?sleep=300' })));
    assert.ok(burst.filter((a) => a.status === 503 && /overflow/.test(a.body)).length >= 3, JSON.stringify(burst.map((a) => a.status)));
    // And the rate limits: sleep's bucket for rated starts full on this waypoint and holds 3.
    const rated = await Promise.all(Array.from({ length: 10 }, () => request(s, `${VIP.rated}:80`)));
    assert.ok(
      rated.filter((a) => a.status === 429 && a.body === 'local_rate_limited').length >= 5,
      JSON.stringify(rated.map((a) => a.status)),
    );
    // Its certificate is its own, issued by the control plane's CA on its token.
    assert.ok(cpLog.some((l) => l.msg === 'certificate issued' && l.waypoint === 'default/waypoint' && l.identity === id('waypoint')));
    onXds.kill('SIGTERM');
    cp.kill('SIGTERM');
  });
});
