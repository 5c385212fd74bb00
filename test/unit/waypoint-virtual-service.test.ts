// Istio VirtualService http routes into the waypoint's rules (the same as
// an HTTPRoute's), the HTTPRoute RequestMirror filter, and what the proxy
// does with them over real HTTP on 127.0.0.1: fault aborts and delays at
// their percentage under a seeded random, and mirrors that are sent on the
// side, never awaited.
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import pino from 'pino';
import YAML from 'yaml';
import { unpack } from '../../src/protocol/protos';
import { compileWaypointConfig } from '../../src/sources/gateway-api';
import { waypointFromMessage, waypointResources } from '../../src/sources/xds-waypoint';
import { MeshStore } from '../../src/state/store';
import type { MeshConfig, Service } from '../../src/state/types';
import { L7Authorizer } from '../../src/waypoint/authz';
import { RouteTable } from '../../src/waypoint/match';
import { WaypointMetrics } from '../../src/waypoint/metrics';
import { DEFAULT_WAYPOINT_LIMITS, type Downstream, type EndpointTarget, L7Proxy, type WaypointView } from '../../src/waypoint/proxy';
import type { RouteRule } from '../../src/waypoint/types';
import { modelWorkload } from '../helpers/model';
import { must } from '../helpers/must';

const service = (name: string, ports = [80]): Service => ({
  name,
  namespace: 'default',
  hostname: `${name}.default.svc.cluster.local`,
  addresses: ['10.96.0.1'],
  ports: ports.map((port) => ({ port, targetPort: 8080 })),
  selector: { app: name },
});
const SERVICES = [service('web'), service('mirror'), service('multi', [80, 9080])];
const WORKLOADS = [
  modelWorkload('web-1', '10.0.1.1', { labels: { app: 'web' } }),
  modelWorkload('mirror-1', '10.0.2.1', { labels: { app: 'mirror' } }),
];
const WEB = 'default/web.default.svc.cluster.local';

function compile(yaml: string) {
  const docs = YAML.parseAllDocuments(yaml)
    .map((d) => d.toJS() as unknown)
    .filter((d) => d !== null);
  const problems: string[] = [];
  const cfg = compileWaypointConfig(docs, { services: SERVICES, workloads: WORKLOADS }, {}, (at, value, what) =>
    problems.push(`${at}: ${what} (got ${JSON.stringify(value)})`),
  );
  return { ...cfg, problems };
}

const vs = (http: string, name = 'web', hosts = '[web]'): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ${name}, namespace: default }\nspec:\n  hosts: ${hosts}\n  http:\n${http}\n---\n`;

/** mulberry32: a seeded random in [0, 1), so percentages are tested on a known draw. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('a VirtualService becomes the same rules as an HTTPRoute, in written order', () => {
  const c = compile(
    vs(`    - name: canary
      match:
        - uri: { prefix: /api }
          method: { exact: GET }
          headers: { X-User: { exact: ann } }
          queryParams: { debug: { regex: "1|yes" } }
      route:
        - destination: { host: web, subset: v2 }
          weight: 10
        - destination: { host: web.default.svc.cluster.local, port: { number: 80 } }
          weight: 90
      timeout: 3s
      retries: { attempts: 4, perTryTimeout: 500ms, retryOn: "gateway-error,reset,429" }
      fault:
        delay: { fixedDelay: 100ms, percentage: { value: 12.5 } }
        abort: { httpStatus: 503, percentage: { value: 50 } }
      mirror: { host: mirror }
      mirrorPercentage: { value: 25 }
    - route: [{ destination: { host: web } }]`),
  );
  assert.deepEqual(c.problems, []);
  assert.equal(c.routes.length, 1);
  const r = must(c.routes[0], 'routes');
  assert.equal(r.service, WEB);
  assert.equal(r.port, undefined);
  const [first, second] = r.rules as [RouteRule, RouteRule];
  assert.equal(first.origin.kind, 'VirtualService');
  assert.deepEqual(first.matches[0]?.path, { type: 'Prefix', value: '/api' });
  assert.equal(first.matches[0]?.method, 'GET');
  assert.deepEqual(
    first.matches[0]?.headers.map((h) => [h.name, h.type, h.value]),
    [['x-user', 'Exact', 'ann']],
  );
  assert.deepEqual(
    first.matches[0]?.queryParams.map((h) => [h.name, h.type, h.value]),
    [['debug', 'RegularExpression', '1|yes']],
  );
  assert.deepEqual(
    first.backends.map((b) => [b.service, b.port, b.weight, b.subset]),
    [
      [WEB, 80, 10, 'v2'],
      [WEB, 80, 90, undefined],
    ],
  );
  assert.deepEqual(first.timeouts, { requestMs: 3000, backendRequestMs: 500 });
  assert.equal(first.retry?.attempts, 4);
  assert.deepEqual([...(first.retry?.codes ?? [])].sort(), [429, 502, 503, 504]);
  assert.ok(first.retry?.on.includes('reset') && first.retry.on.includes('connect-failure'));
  assert.deepEqual(first.fault, { delay: { ms: 100, percent: 12.5 }, abort: { status: 503, percent: 50 } });
  assert.deepEqual(first.filters, [
    { type: 'RequestMirror', backend: { service: 'default/mirror.default.svc.cluster.local', port: 80 }, percent: 25 },
  ]);
  assert.deepEqual(second.matches, [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] }]);
  assert.equal(second.retry, undefined, "no retries: Istio's default policy");

  // Istio: the first route that matches wins, not the most specific one; a prefix is a string prefix.
  const table = new RouteTable(c.routes);
  const hit = (target: string, headers: Record<string, string> = {}) =>
    table.route(WEB, 80, { method: 'GET', target, headers })?.rule.index;
  assert.equal(hit('/api2?debug=yes', { 'x-user': 'ann' }), 0);
  assert.equal(hit('/api?debug=no', { 'x-user': 'ann' }), 1);
  const ordered = compile(
    vs(
      `    - route: [{ destination: { host: web } }]\n    - match: [{ uri: { exact: /x } }]\n      route: [{ destination: { host: web } }]`,
    ),
  );
  assert.equal(new RouteTable(ordered.routes).route(WEB, 80, { method: 'GET', target: '/x', headers: {} })?.rule.index, 0);
});

test('mirrors: each with its percentage; mirror and mirrors do not go together', () => {
  const c = compile(
    vs(`    - route: [{ destination: { host: web } }]
      mirrors:
        - destination: { host: mirror }
          percentage: { value: 5 }
        - destination: { host: multi, port: { number: 9080 } }`),
  );
  assert.deepEqual(c.problems, []);
  assert.deepEqual(
    c.routes[0]?.rules[0]?.filters.map((f) => (f.type === 'RequestMirror' ? [f.backend.service, f.backend.port, f.percent] : [])),
    [
      ['default/mirror.default.svc.cluster.local', 80, 5],
      ['default/multi.default.svc.cluster.local', 9080, 100],
    ],
  );
  const both = compile(
    vs(`    - route: [{ destination: { host: web } }]\n      mirror: { host: mirror }\n      mirrors: [{ destination: { host: mirror } }]`),
  );
  assert.match(both.problems.join('\n'), /spec\.http\[0\]\.mirrors: cannot go with mirror/);
});

test('unknown keys get a did-you-mean naming the object and field; unsupported fields are refused by name', () => {
  const c = compile(
    vs(`    - route: [{ destination: { host: web } }]
      fautl: { abort: { httpStatus: 500 } }
      rewrite: { uri: /v2 }
      retries: { attempts: 2, retryOn: "5xx,sometimes" }
    - match: [{ uri: { prefix: /a }, sourceLabels: { app: x } }]
      route: [{ destination: { host: multi } }]
      fault: { abort: { httpStatus: 500, percentage: { value: 150 } } }`),
  );
  const text = c.problems.join('\n');
  assert.match(text, /\(VirtualService default\/web\) spec\.http\[0\]\.fautl: unknown field; did you mean `fault`\?/);
  assert.match(text, /spec\.http\[0\]\.rewrite: is not supported by ambit's waypoint/);
  assert.match(text, /spec\.http\[0\]\.retries\.retryOn: is not a retry condition .* \(got "sometimes"\)/);
  assert.match(text, /spec\.http\[1\]\.match\[0\]\.sourceLabels: is not supported/);
  assert.match(text, /spec\.http\[1\]\.route\[0\]\.destination\.port\.number: is required \(the service has several ports\)/);
  assert.match(text, /spec\.http\[1\]\.fault\.abort\.percentage\.value: must be a number 0\.\.100/);
  assert.deepEqual(c.routes, [], 'nothing of a refused object is applied');
  const host = compile(vs('    - route: [{ destination: { host: web } }]', 'web', '[nope]'));
  assert.match(host.problems.join('\n'), /spec\.hosts\[0\]: names no known service/);
});

test('a service with an HTTPRoute and a VirtualService takes the HTTPRoute and warns about the VirtualService', () => {
  const c = compile(
    `${vs('    - route: [{ destination: { host: mirror } }]')}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: web }]
  rules: [{ backendRefs: [{ name: web, port: 80 }] }]`,
  );
  assert.deepEqual(c.problems, []);
  assert.deepEqual(
    c.routes.flatMap((r) => r.rules.map((x) => x.origin.kind)),
    ['HTTPRoute'],
  );
  assert.match(
    c.warnings.join('\n'),
    /VirtualService default\/web\): ignored for service default\/web\.default\.svc\.cluster\.local: HTTPRoutes/,
  );
});

test('HTTPRoute RequestMirror: backendRef and percent or fraction, several allowed', () => {
  const c = compile(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: web }]
  rules:
    - backendRefs: [{ name: web, port: 80 }]
      filters:
        - type: RequestMirror
          requestMirror: { backendRef: { name: mirror, port: 80 }, percent: 30 }
        - type: RequestMirror
          requestMirror: { backendRef: { name: multi, port: 9080 }, fraction: { numerator: 1, denominator: 4 } }`);
  assert.deepEqual(c.problems, []);
  assert.deepEqual(c.routes[0]?.rules[0]?.filters, [
    { type: 'RequestMirror', backend: { service: 'default/mirror.default.svc.cluster.local', port: 80 }, percent: 30 },
    { type: 'RequestMirror', backend: { service: 'default/multi.default.svc.cluster.local', port: 9080 }, percent: 25 },
  ]);
  const bad = compile(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: web }]
  rules:
    - backendRefs: [{ name: web, port: 80 }]
      filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: mirror } } }]`);
  assert.match(bad.problems.join('\n'), /requestMirror\.backendRef\.port: is required/);
});

// ---- the proxy ----

const hits = { web: 0, mirror: 0, mirrorHosts: [] as string[] };
let mirrorHold = 0;
const servers: http.Server[] = [];
const ports = new Map<string, number>();
let front: http.Server;
let frontPort = 0;
let proxy: L7Proxy;
const metrics = new WaypointMetrics();

before(async () => {
  const serve = (ip: string, handler: http.RequestListener) => {
    const s = http.createServer(handler);
    servers.push(s);
    return new Promise<void>((r) =>
      s.listen(0, '127.0.0.1', () => {
        ports.set(ip, (s.address() as net.AddressInfo).port);
        r();
      }),
    );
  };
  await serve('10.0.1.1', (_req, res) => {
    hits.web++;
    res.writeHead(200, { 'x-name': 'web' });
    res.end('primary');
  });
  // The mirror answers late and with an error: neither may reach the client.
  await serve('10.0.2.1', (req, res) => {
    hits.mirror++;
    hits.mirrorHosts.push(String(req.headers.host));
    setTimeout(() => {
      res.writeHead(500);
      res.end('mirror');
    }, mirrorHold);
  });
  const c = compile(
    vs(`    - match: [{ uri: { prefix: /abort } }]
      route: [{ destination: { host: web } }]
      fault: { abort: { httpStatus: 418, percentage: { value: 50 } } }
    - match: [{ uri: { prefix: /delay } }]
      route: [{ destination: { host: web } }]
      fault: { delay: { fixedDelay: 300ms } }
    - match: [{ uri: { prefix: /mirror } }]
      route: [{ destination: { host: web } }]
      mirror: { host: mirror }`),
  );
  assert.deepEqual(c.problems, []);
  const cfg: MeshConfig = {
    trustDomain: 'cluster.local',
    ca: { dir: '' },
    nodes: [],
    workloads: WORKLOADS,
    services: SERVICES,
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
  };
  const view: WaypointView = { store: new MeshStore(cfg), routes: new RouteTable(c.routes), authz: new L7Authorizer([]) };
  const open = async (t: EndpointTarget) => {
    const { connect } = await import('node:net');
    return new Promise<net.Socket>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: must(ports.get(t.ip), `app of ${t.ip}`) });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  };
  proxy = new L7Proxy({
    view: () => view,
    waypoint: 'default/waypoint',
    open,
    metrics,
    log: pino({ level: 'silent' }),
    limits: DEFAULT_WAYPOINT_LIMITS,
    random: seeded(16),
  });
  front = http.createServer((req, res) => {
    const d: Downstream = {
      srcIp: '10.0.0.9',
      srcIdentity: 'spiffe://cluster.local/ns/default/sa/client',
      service: SERVICES[0],
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
  for (const s of [front, ...servers]) {
    s.closeAllConnections();
    s.close();
  }
});

function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: frontPort, path, headers: { connection: 'close', host: 'web' } }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const flagged = async (flag: string): Promise<number> => {
  let n = 0;
  for (const m of (await metrics.text()).matchAll(
    new RegExp(`^istio_requests_total\\{[^}]*response_flags="${flag}"[^}]*\\} (\\d+)$`, 'gm'),
  ))
    n += Number(m[1]);
  return n;
};

test('fault abort at 50%: about half of 200 requests answered 418 FI, never sent; the rest reach the backend', async () => {
  const before = hits.web;
  const answers: number[] = [];
  for (let i = 0; i < 200; i++) answers.push((await get('/abort')).status);
  const aborted = answers.filter((s) => s === 418).length;
  // Binomial(200, 0.5): mean 100, sd ≈ 7.1; ±4 sd.
  assert.ok(aborted >= 72 && aborted <= 128, `aborted ${aborted} of 200`);
  assert.equal(answers.filter((s) => s === 200).length, 200 - aborted);
  assert.equal(hits.web - before, 200 - aborted, 'an aborted request never reaches the backend');
  assert.equal(await flagged('FI'), aborted);
});

test('fault delay at 100% (percentage absent): the answer comes after the delay, flagged DI', async () => {
  const t0 = performance.now();
  const r = await get('/delay');
  const took = performance.now() - t0;
  assert.equal(r.status, 200);
  assert.ok(took >= 290, `took ${took.toFixed(0)} ms`);
  assert.equal(await flagged('DI'), 1);
});

test('mirror: the copy reaches the mirror with a -shadow host, the client gets the primary at once', async () => {
  mirrorHold = 2000;
  const before = hits.mirror;
  const t0 = performance.now();
  const r = await get('/mirror');
  const took = performance.now() - t0;
  assert.deepEqual([r.status, r.body], [200, 'primary']);
  assert.ok(took < 1000, `the original waited for the mirror: ${took.toFixed(0)} ms`);
  const deadline = Date.now() + 5000;
  while (hits.mirror === before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  assert.equal(hits.mirror - before, 1);
  assert.equal(hits.mirrorHosts.at(-1), 'web-shadow');
});

test('over xDS: VirtualService rules (string prefix, fault, mirrors) round-trip field for field; a bad percentage is refused', () => {
  const c = compile(
    vs(`    - match: [{ uri: { prefix: /api } }, { uri: { regex: "/v[0-9]+" } }]
      route: [{ destination: { host: web, subset: v1 }, weight: 100 }]
      fault: { delay: { fixedDelay: 1s, percentage: { value: 0.5 } }, abort: { httpStatus: 503 } }
      mirrors: [{ destination: { host: mirror, subset: canary }, percentage: { value: 12.5 } }]
    - route: [{ destination: { host: web } }]
      fault: { abort: { httpStatus: 500, percentage: { value: 0 } } }`),
  );
  assert.deepEqual(c.problems, []);
  const cfg = { ...c, waypoints: [{ namespace: 'default', name: 'wp', for: 'service' as const }] };
  cfg.bindings = { services: new Map([[WEB, 'default/wp']]), workloads: new Map() };
  const res = must(waypointResources(cfg).get('default/wp'), 'the waypoint resource');
  const back = waypointFromMessage('default/wp', unpack(res.resource));
  assert.deepEqual(back.routes, c.routes);
  const message = unpack(res.resource) as { routes: { rules: { filters: { percent?: number }[] }[] }[] };
  const filter = must(message.routes[0]?.rules[0]?.filters[0], 'the mirror on the wire');
  filter.percent = 101;
  assert.throws(() => waypointFromMessage('default/wp', message as never), /percent.*must be a percentage 0\.\.100/);
});
