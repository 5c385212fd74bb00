// The waypoint's proxy with DestinationRules, over real HTTP on 127.0.0.1:
// a front server hands each request to L7Proxy as the HBONE layer would,
// and the endpoints are local apps (the CONNECT to a pod is a plain TCP
// connection to the app standing for it). A route to a subset reaches only
// the subset's endpoints; a service's maxRequests answers 503 UO past the
// limit while the others pass; a failing endpoint is ejected and comes back;
// a hash on a header keeps a user on one endpoint; the config dump reports
// each destination.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { compileWaypointConfig } from '../../src/sources/gateway-api';
import { MeshStore } from '../../src/state/store';
import type { MeshConfig, Service } from '../../src/state/types';
import { L7Authorizer } from '../../src/waypoint/authz';
import { DestinationTable } from '../../src/waypoint/destination';
import { RouteTable } from '../../src/waypoint/match';
import { WaypointMetrics } from '../../src/waypoint/metrics';
import { DEFAULT_WAYPOINT_LIMITS, type Downstream, type EndpointTarget, L7Proxy, type WaypointView } from '../../src/waypoint/proxy';
import type { ServiceRoutes } from '../../src/waypoint/types';
import { modelWorkload } from '../helpers/model';
import { must } from '../helpers/must';

const service = (name: string, vip: string): Service => ({
  name,
  namespace: 'default',
  hostname: `${name}.default.svc.cluster.local`,
  addresses: [vip],
  ports: [{ port: 80, targetPort: 8080, name: 'http' }],
  selector: { app: name },
});
const WEB = service('web', '10.96.0.1');
const BUSY = service('busy', '10.96.0.2');
const WEB_KEY = 'default/web.default.svc.cluster.local';
const WORKLOADS = [
  modelWorkload('web-1', '10.0.1.1', { labels: { app: 'web', version: 'v1' } }),
  modelWorkload('web-2', '10.0.1.2', { labels: { app: 'web', version: 'v1' } }),
  modelWorkload('web-3', '10.0.1.3', { labels: { app: 'web', version: 'v2' } }),
  modelWorkload('busy-1', '10.0.2.1', { labels: { app: 'busy' } }),
];

const rule = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'DestinationRule',
  metadata: { name, namespace: 'default' },
  spec,
});

/** One app per endpoint address: answers its name, 503 while `failing`, after ?sleep=MS. */
const apps = new Map<string, { server: http.Server; port: number; hits: number }>();
const failing = new Set<string>();
let front: http.Server;
let frontPort = 0;
let proxy: L7Proxy;
let now = 0;
const metrics = new WaypointMetrics();

before(async () => {
  for (const w of WORKLOADS) {
    const ip = must(w.addresses[0], 'ip');
    const app = { server: http.createServer(), port: 0, hits: 0 };
    app.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      app.hits++;
      const sleep = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('sleep') ?? 0);
      setTimeout(() => {
        res.writeHead(failing.has(w.name) ? 503 : 200, { 'x-name': w.name });
        res.end();
      }, sleep);
    });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', () => r()));
    app.port = (app.server.address() as net.AddressInfo).port;
    apps.set(ip, app);
  }
  const problems: string[] = [];
  const compiled = compileWaypointConfig(
    [
      rule('web', {
        host: 'web',
        trafficPolicy: {
          loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } },
          outlierDetection: { consecutive5xxErrors: 2, interval: '1s', baseEjectionTime: '5s', maxEjectionPercent: 50 },
        },
        subsets: [
          { name: 'v1', labels: { version: 'v1' } },
          { name: 'v2', labels: { version: 'v2' } },
        ],
      }),
      rule('busy', { host: 'busy', trafficPolicy: { connectionPool: { http: { http2MaxRequests: 2 } } } }),
    ],
    { services: [WEB, BUSY], workloads: WORKLOADS },
    {},
    (at, v, what) => problems.push(`${at}: ${what} (${JSON.stringify(v)})`),
  );
  assert.deepEqual(problems, []);
  // A route to subsets, as a VirtualService reader will write them.
  const origin = { kind: 'HTTPRoute' as const, namespace: 'default', name: 'web', created: '', order: 0 };
  const backend = (subset: string) => ({ namespace: 'default', name: 'web', service: WEB_KEY, port: 80, weight: 1, subset });
  const routes: ServiceRoutes[] = [
    {
      service: WEB_KEY,
      rules: [
        {
          origin,
          index: 0,
          matches: [{ path: { type: 'PathPrefix', value: '/v2' }, headers: [], queryParams: [] }],
          filters: [],
          backends: [backend('v2')],
          timeouts: {},
        },
        {
          origin,
          index: 1,
          matches: [{ path: { type: 'PathPrefix', value: '/v1' }, headers: [], queryParams: [] }],
          filters: [],
          backends: [backend('v1')],
          timeouts: {},
        },
        {
          origin,
          index: 2,
          matches: [{ path: { type: 'PathPrefix', value: '/v3' }, headers: [], queryParams: [] }],
          filters: [],
          backends: [backend('v3')],
          timeouts: {},
        },
      ],
    },
  ];
  const cfg: MeshConfig = {
    trustDomain: 'cluster.local',
    ca: { dir: '' },
    nodes: [],
    workloads: WORKLOADS,
    services: [WEB, BUSY],
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
  };
  const view: WaypointView = {
    store: new MeshStore(cfg),
    routes: new RouteTable(routes),
    authz: new L7Authorizer([]),
    destinations: new DestinationTable(compiled.destinations),
  };
  const open = (t: EndpointTarget) =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: must(apps.get(t.ip), `app of ${t.ip}`).port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  proxy = new L7Proxy({
    view: () => view,
    waypoint: 'default/waypoint',
    open,
    metrics,
    log: pino({ level: 'silent' }),
    limits: DEFAULT_WAYPOINT_LIMITS,
    clock: () => now,
  });
  front = http.createServer((req, res) => {
    const svc = req.headers['x-service'] === 'busy' ? BUSY : WEB;
    const d: Downstream = {
      srcIp: '10.0.0.9',
      srcIdentity: 'spiffe://cluster.local/ns/default/sa/client',
      service: svc,
      port: 80,
      h2: false,
    };
    proxy.handle(req, res, d);
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  frontPort = (front.address() as net.AddressInfo).port;
});

after(() => {
  proxy.h1.close();
  front.closeAllConnections();
  front.close();
  for (const a of apps.values()) {
    a.server.closeAllConnections();
    a.server.close();
  }
});

function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; name: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: frontPort, path, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, name: String(res.headers['x-name'] ?? ''), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a route to a subset reaches only the endpoints with its labels; an undefined subset is no healthy upstream', async () => {
  const v2 = await Promise.all(Array.from({ length: 10 }, (_, i) => get('/v2', { 'x-user': `u${i}` })));
  assert.deepEqual([...new Set(v2.map((a) => a.name))], ['web-3']);
  const v1 = await Promise.all(Array.from({ length: 40 }, (_, i) => get('/v1', { 'x-user': `u${i}` })));
  assert.deepEqual([...new Set(v1.map((a) => a.name))].sort(), ['web-1', 'web-2'], 'the hash spreads users over the subset');
  const v3 = await get('/v3');
  assert.deepEqual([v3.status, v3.body], [503, 'no healthy upstream']);
});

test('consistentHash on a header: one user, one endpoint', async () => {
  for (const user of ['ann', 'bob', 'cyd']) {
    const names = await Promise.all(Array.from({ length: 8 }, () => get('/v1', { 'x-user': user })));
    assert.equal(new Set(names.map((a) => a.name)).size, 1, `${user}: ${names.map((a) => a.name).join(' ')}`);
  }
});

test('http2MaxRequests: past the limit the answer is 503 UO at once, and the backend never sees more', async () => {
  const before = must(apps.get('10.0.2.1'), 'busy app').hits;
  const answers = await Promise.all(Array.from({ length: 6 }, () => get('/?sleep=200', { 'x-service': 'busy' })));
  const statuses = answers.map((a) => a.status).sort();
  assert.deepEqual(statuses, [200, 200, 503, 503, 503, 503]);
  assert.ok(answers.filter((a) => a.status === 503).every((a) => /overflow/.test(a.body)));
  assert.equal(must(apps.get('10.0.2.1'), 'busy app').hits - before, 2);
  const stats = proxy.destinationStats()['default/busy.default.svc.cluster.local|80|'];
  assert.deepEqual(stats, { requests: 0, connections: 0, pending: 0, retries: 0, ejected: 0 }, 'everything released');
  assert.match(
    await metrics.text(),
    /^envoy_cluster_upstream_rq_pending_overflow\{cluster_name="outbound\|80\|\|busy\.default\.svc\.cluster\.local"\} 4$/m,
  );
});

test('outlier detection: an endpoint answering 503 is ejected, its users move, and it returns after baseEjectionTime', async () => {
  // The user whose hash lands on web-1.
  let user = '';
  for (let i = 0; i < 100 && !user; i++) if ((await get('/v1', { 'x-user': `p${i}` })).name === 'web-1') user = `p${i}`;
  assert.ok(user, 'some user hashes to web-1');
  failing.add('web-1');
  try {
    assert.equal((await get('/v1', { 'x-user': user })).status, 503);
    assert.equal((await get('/v1', { 'x-user': user })).status, 503, 'the second 503 in a row ejects');
    const moved = await get('/v1', { 'x-user': user });
    assert.deepEqual([moved.status, moved.name], [200, 'web-2'], 'the user goes to the next best while web-1 is out');
    assert.equal(proxy.destinationStats()[`${WEB_KEY}|80|v1`]?.ejected, 1);
    assert.match(
      await metrics.text(),
      /^envoy_cluster_outlier_detection_ejections_enforced_total\{cluster_name="outbound\|80\|v1\|web\.default\.svc\.cluster\.local"\} 1$/m,
    );
    now += 4_999;
    assert.equal((await get('/v1', { 'x-user': user })).name, 'web-2');
    now += 1;
    failing.delete('web-1');
    assert.deepEqual(await get('/v1', { 'x-user': user }), { status: 200, name: 'web-1', body: '' }, 'back after 5 s');
  } finally {
    failing.delete('web-1');
  }
});
