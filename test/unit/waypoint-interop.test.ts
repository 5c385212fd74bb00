// What Istio's ztunnel sends a waypoint, played against WaypointServer over
// real TLS 1.3 with ALPN h2 and certificates from the built-in CA: a CONNECT
// whose authority is the original destination, with baggage, forwarded and
// traceparent, from a client certificate that carries the SOURCE workload's
// identity. Also the protocol of pod-addressed CONNECTs (the pod's service
// ports decide; the services' routes do not apply) and whom a forwarded
// client address is believed for.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import pino from 'pino';
import YAML from 'yaml';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { CertificateManager, requestCertificate } from '../../src/identity/cert-manager';
import { workloadIdentity } from '../../src/identity/spiffe';
import { clientTlsOptions } from '../../src/identity/tls';
import { RateLimitedLog } from '../../src/observability/rate-limited';
import { compileWaypointConfig } from '../../src/sources/gateway-api';
import { MeshStore } from '../../src/state/store';
import type { MeshConfig, Service } from '../../src/state/types';
import { tunnelLimits } from '../../src/tunnel/limits';
import { L7Authorizer } from '../../src/waypoint/authz';
import { RouteTable } from '../../src/waypoint/match';
import { WaypointMetrics } from '../../src/waypoint/metrics';
import { DEFAULT_WAYPOINT_LIMITS, type EndpointTarget, L7Proxy } from '../../src/waypoint/proxy';
import { clientAddress, DEFAULT_SERVER_LIMITS, podPortSpeaksHttp, WaypointServer } from '../../src/waypoint/server';
import { type L7Policy, l7Match } from '../../src/waypoint/types';
import { modelWorkload } from '../helpers/model';

const TD = 'cluster.local';
const WAYPOINT_ID = `spiffe://${TD}/ns/default/sa/waypoint`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;

const service = (name: string, vip: string, ports: Service['ports']): Service => ({
  name,
  namespace: 'default',
  hostname: `${name}.default.svc.cluster.local`,
  addresses: [vip],
  ports,
  selector: { app: name },
});

const SERVICES = [
  service('reviews', '10.96.0.10', [{ port: 80, targetPort: 9080, name: 'http' }]),
  service('reviews-v2', '10.96.0.11', [{ port: 80, targetPort: 9080, name: 'http' }]),
  service('db', '10.96.0.12', [{ port: 5432, targetPort: 5432, name: 'tcp-pg' }]),
  service('legacy', '10.96.0.13', [{ port: 9080, targetPort: 9080, name: 'tcp-legacy' }]),
];
const WORKLOADS = [
  modelWorkload('client', '10.0.0.5', { labels: { app: 'client', version: 'v1' } }),
  modelWorkload('other', '10.0.0.6'),
  modelWorkload('reviews-1', '10.0.1.1', { labels: { app: 'reviews' } }),
  modelWorkload('reviews-v2-1', '10.0.1.2', { labels: { app: 'reviews-v2' } }),
  modelWorkload('db-1', '10.0.1.3', { labels: { app: 'db' } }),
  // An endpoint of two services that disagree on the protocol of its port 9080.
  modelWorkload('mixed-1', '10.0.1.4', { labels: { app: 'legacy' }, services: ['default/reviews.default.svc.cluster.local'] }),
];

const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, sectionName: http }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ name: reviews-v2, port: 80 }]
`;

const DENY_ADMIN: L7Policy = {
  namespace: 'default',
  name: 'no-admin',
  action: 'DENY',
  targets: [{ kind: 'Gateway', namespace: 'default', name: 'waypoint' }],
  rules: [{ clauses: [[l7Match({ paths: [{ prefix: '/admin' }] })]] }],
  dryRun: false,
};

let dir: string;
let ca: BuiltinCa;
let bed: Awaited<ReturnType<typeof startBed>>;

/** The endpoints' app: says who it is and what it was asked. */
function startApp(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ path: req.url, host: req.headers.host }));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as net.AddressInfo).port })),
  );
}

async function startBed() {
  const problems: string[] = [];
  const routes = compileWaypointConfig(
    YAML.parseAllDocuments(ROUTE).map((d) => d.toJS() as unknown),
    { services: SERVICES, workloads: WORKLOADS },
    {},
    (at, v, what) => problems.push(`${at}: ${what} (${JSON.stringify(v)})`),
  );
  assert.deepEqual(problems, []);
  const cfg: MeshConfig = {
    trustDomain: TD,
    ca: { dir: path.join(dir, 'ca') },
    nodes: [],
    workloads: WORKLOADS,
    services: SERVICES,
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
  };
  const view = { store: new MeshStore(cfg), routes: new RouteTable(routes.routes), authz: new L7Authorizer([DENY_ADMIN]) };
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  );
  const app = await startApp();
  const targets: EndpointTarget[] = [];
  // The endpoints are all the one local app; what matters is which one the waypoint chose.
  const open = (t: EndpointTarget) => {
    targets.push(t);
    return Promise.resolve(net.connect({ host: '127.0.0.1', port: app.port }));
  };
  const certs = new CertificateManager(ca, { log });
  const metrics = new WaypointMetrics();
  const limits = tunnelLimits({});
  const proxy = new L7Proxy({ view: () => view, waypoint: 'default/waypoint', open, metrics, log, limits: DEFAULT_WAYPOINT_LIMITS });
  const server = new WaypointServer({
    identity: WAYPOINT_ID,
    cert: await certs.fetch(WAYPOINT_ID),
    certs,
    view: () => view,
    proxy,
    open,
    limits,
    serverLimits: DEFAULT_SERVER_LIMITS,
    metrics,
    log,
    warn: new RateLimitedLog(log),
  });
  const port = await server.listen('127.0.0.1', 0);
  return {
    view,
    port,
    targets,
    lines,
    metrics,
    close: () => {
      server.close();
      proxy.h1.close();
      app.server.closeAllConnections();
      app.server.close();
    },
  };
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-wp-interop-'));
  ca = await BuiltinCa.open(path.join(dir, 'ca'));
  bed = await startBed();
});
after(() => {
  bed?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** An HBONE session as ztunnel opens it: TLS 1.3, ALPN h2, the source workload's certificate, the waypoint's identity checked. */
async function ztunnelSession(identity = CLIENT_ID): Promise<http2.ClientHttp2Session> {
  const cert = await requestCertificate(ca, identity, 3600);
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${bed.port}`, {
      createConnection: () => tls.connect({ host: '127.0.0.1', port: bed.port, ...clientTlsOptions(cert, [WAYPOINT_ID]) }),
    });
    session.once('connect', () => {
      const s = session.socket as tls.TLSSocket;
      assert.equal(s.getProtocol(), 'TLSv1.3');
      assert.equal(s.alpnProtocol, 'h2');
      resolve(session);
    });
    session.once('error', reject);
  });
}

/** CONNECT with ztunnel's headers; resolves with the status and the tunnel stream. */
function connect(
  session: http2.ClientHttp2Session,
  authority: string,
  headers: Record<string, string>,
): Promise<{ status: number; stream: http2.ClientHttp2Stream }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...headers });
    stream.once('response', (h) => resolve({ status: Number(h[':status']), stream }));
    stream.once('error', reject);
  });
}

/** One HTTP/1.1 request through the tunnel; resolves with the raw answer once the body is in. */
function httpOver(stream: http2.ClientHttp2Stream, target: string, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    stream.on('data', (c: Buffer) => {
      got += c.toString();
      const [head = '', body = ''] = got.split('\r\n\r\n');
      const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? Number.NaN);
      if (body.length >= len) resolve(got);
    });
    stream.once('error', reject);
    stream.once('end', () => resolve(got));
    stream.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`);
  });
}

const ztunnelHeaders = (forwardedFor: string, host?: string): Record<string, string> => ({
  baggage: 'k8s.namespace.name=default,k8s.pod.name=client,service.name=client,service.version=v1',
  forwarded: `for="${forwardedFor}"${host ? `;host=${host}` : ''}`,
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
});

const requestLine = (path: string) => async (): Promise<Record<string, unknown>> => {
  for (let i = 0; i < 200; i++) {
    const l = bed.lines.find((x) => x.msg === 'request complete' && x.path === path);
    if (l) return l;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no access log line for ${path}: ${JSON.stringify(bed.lines)}`);
};

test("ztunnel's CONNECT to a service VIP: 200, routed, source principal from the certificate, client address from forwarded", async () => {
  const session = await ztunnelSession();
  try {
    const { status, stream } = await connect(
      session,
      '10.96.0.10:80',
      ztunnelHeaders('10.0.0.5:41234', 'reviews.default.svc.cluster.local'),
    );
    assert.equal(status, 200);
    const answer = await httpOver(stream, '/api/ratings', 'reviews');
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, /"path":"\/api\/ratings"/);
    assert.equal(bed.targets.at(-1)?.service?.name, 'reviews-v2', 'the HTTPRoute sent /api to reviews-v2');
    assert.equal(bed.targets.at(-1)?.port, 9080);
    stream.close();
    const line = await requestLine('/api/ratings')();
    assert.equal(line['src.addr'], '10.0.0.5:41234');
    assert.equal(line['src.identity'], CLIENT_ID);
    assert.equal(line['src.workload'], 'client');
    assert.equal(line.route, 'HTTPRoute default/reviews rule 0');
    assert.equal(line.response_code, 200);
    const text = await bed.metrics.text();
    const sample = text
      .split('\n')
      .find((l) => l.startsWith('istio_requests_total{') && l.includes('destination_service_name="reviews-v2"'));
    assert.ok(sample, text);
    assert.match(sample, new RegExp(`source_principal="${CLIENT_ID}"`));
    assert.match(sample, /source_workload="client"/);
    assert.match(sample, /source_version="v1"/);
  } finally {
    session.close();
  }
});

test('a forwarded address of a workload with another identity is not believed: the peer address stands', async () => {
  const session = await ztunnelSession();
  try {
    const { status, stream } = await connect(session, '10.96.0.10:80', ztunnelHeaders('10.0.0.6:5555'));
    assert.equal(status, 200);
    await httpOver(stream, '/api/spoofed', 'reviews');
    stream.close();
    const line = await requestLine('/api/spoofed')();
    assert.equal(line['src.addr'], '127.0.0.1');
    assert.equal(line['src.identity'], CLIENT_ID);
    // The peer's address is no workload's: the baggage names the source, and the mesh confirms it runs as the certificate's identity.
    assert.equal(line['src.workload'], 'client');
  } finally {
    session.close();
  }
});

test('a CONNECT to a pod IP: HTTP when its service port says so, to that pod only, without the service routes; L7 policy applies', async () => {
  const session = await ztunnelSession();
  try {
    const a = await connect(session, '10.0.1.1:9080', ztunnelHeaders('10.0.0.5:41235'));
    assert.equal(a.status, 200);
    const answer = await httpOver(a.stream, '/api/direct', '10.0.1.1:9080');
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.equal(bed.targets.at(-1)?.workload.name, 'reviews-1', 'the HTTPRoute of reviews does not apply to its pod');
    assert.equal(bed.targets.at(-1)?.port, 9080);
    const line = await requestLine('/api/direct')();
    assert.equal(line['dst.workload'], 'reviews-1');
    assert.equal(line.route, undefined);
    assert.equal(line['src.addr'], '10.0.0.5:41235');

    const denied = await httpOver(a.stream, '/admin/x', '10.0.1.1:9080');
    assert.match(denied, /^HTTP\/1\.1 403/, 'the waypoint policy sees the pod-addressed request');
    a.stream.close();

    const n = bed.targets.length;
    const b = await connect(session, '10.0.1.3:5432', ztunnelHeaders('10.0.0.5:41236'));
    assert.equal(b.status, 200, 'a tcp- port is forwarded as bytes');
    const raw = await httpOver(b.stream, '/bytes', 'db');
    assert.match(raw, /"path":"\/bytes"/);
    assert.equal(bed.targets.length, n + 1);
    assert.equal(bed.targets.at(-1)?.workload.name, 'db-1');
    b.stream.close();
    assert.equal(
      bed.lines.some((l) => l.path === '/bytes'),
      false,
      'no HTTP access log line for TCP',
    );
  } finally {
    session.close();
  }
});

test('podPortSpeaksHttp: every service port that targets the pod port must say HTTP', () => {
  const { store } = bed.view;
  const w = (name: string) => WORKLOADS.find((x) => x.name === name) ?? assert.fail(name);
  assert.equal(podPortSpeaksHttp(store, w('reviews-1'), 9080), true);
  assert.equal(podPortSpeaksHttp(store, w('reviews-1'), 9081), false, 'no service port targets it');
  assert.equal(podPortSpeaksHttp(store, w('db-1'), 5432), false);
  assert.equal(podPortSpeaksHttp(store, w('client'), 9080), false, 'an endpoint of no service');
  assert.equal(podPortSpeaksHttp(store, w('mixed-1'), 9080), false, 'reviews says http, legacy says tcp: bytes are safe, parsing is not');
});

test('clientAddress: the peer address, or what it forwarded for itself or for a workload that runs as its identity', () => {
  const { store } = bed.view;
  assert.deepEqual(clientAddress(store, 'for="10.0.0.5:1234"', '192.168.1.1', CLIENT_ID), { srcIp: '10.0.0.5', srcPort: 1234 });
  assert.deepEqual(clientAddress(store, 'for=10.0.0.5:1234;host=a.b', '192.168.1.1', CLIENT_ID), { srcIp: '10.0.0.5', srcPort: 1234 });
  assert.deepEqual(clientAddress(store, 'for="10.0.0.6:1234"', '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1' }, 'not its identity');
  assert.deepEqual(clientAddress(store, 'for="10.9.9.9:1234"', '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1' }, 'no workload');
  assert.deepEqual(clientAddress(store, 'for="192.168.1.1:7"', '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1', srcPort: 7 });
  assert.deepEqual(clientAddress(store, 'for="10.0.0.5:0"', '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1' });
  assert.deepEqual(clientAddress(store, 'for="999.0.0.5:80"', '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1' });
  assert.deepEqual(clientAddress(store, undefined, '192.168.1.1', CLIENT_ID), { srcIp: '192.168.1.1' });
  assert.equal(workloadIdentity(TD, WORKLOADS[0] ?? assert.fail()), CLIENT_ID);
});
