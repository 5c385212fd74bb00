// Istio DestinationRule at the waypoint, without sockets: the reader (what
// is accepted becomes the model with Istio's defaults; every refusal names
// the object and field, with did-you-mean for a misspelt one), the wire form
// (round trip, and fields checked on receipt), and the logic the proxy runs
// per destination with a fake clock: balancers, outlier ejection and
// return with growing ejection times, circuit-breaker limits and queue.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { unpack } from '../../src/protocol/protos';
import { compileWaypointConfig, parseWaypointConfig } from '../../src/sources/gateway-api';
import { ResourceError } from '../../src/sources/xds-resources';
import { waypointFromMessage, waypointResources } from '../../src/sources/xds-waypoint';
import type { Service, Workload } from '../../src/state/types';
import { type Endpoint, hash32, pickHashed, RoundRobinBalancer } from '../../src/waypoint/balance';
import { CircuitBreaker, ISTIO_DEFAULT_POOL, UNLIMITED } from '../../src/waypoint/circuit';
import { DestinationState, DestinationTable, hashKey, ISTIO_OUTLIER_DEFAULTS } from '../../src/waypoint/destination';
import { MAX_EJECTION_MS, OutlierDetector, outlierResult } from '../../src/waypoint/outlier';
import { RetryBudget, RetryState } from '../../src/waypoint/retry';
import type { DestinationPolicy, OutlierDetection, WaypointConfig } from '../../src/waypoint/types';
import { must } from '../helpers/must';

const svc = (name: string, namespace = 'default'): Service => ({
  name,
  namespace,
  hostname: `${name}.${namespace}.svc.cluster.local`,
  addresses: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080 }],
  selector: { app: name },
});
const KNOWN = { services: [svc('reviews'), svc('ratings'), svc('reviews', 'other')], workloads: [] as Workload[] };
const REVIEWS = 'default/reviews.default.svc.cluster.local';

const dr = (spec: Record<string, unknown>, name = 'reviews', namespace = 'default', extra: Record<string, unknown> = {}) => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'DestinationRule',
  metadata: { name, namespace, ...extra },
  spec,
});

function problems(docs: unknown[]): string[] {
  const out: string[] = [];
  compileWaypointConfig(docs, KNOWN, { at: 'routes' }, (at, value, what) => out.push(`${at}: ${what} (got ${JSON.stringify(value)})`));
  return out;
}

test('a DestinationRule becomes the model: short host in its namespace, Istio defaults filled in, subsets over the rule', () => {
  const cfg = parseWaypointConfig(
    [
      dr({
        host: 'reviews',
        trafficPolicy: {
          loadBalancer: { simple: 'ROUND_ROBIN' },
          connectionPool: { tcp: { maxConnections: 10 }, http: { http1MaxPendingRequests: 2 } },
          outlierDetection: { consecutive5xxErrors: 3, interval: '1s', baseEjectionTime: '1m30s' },
        },
        subsets: [
          { name: 'v1', labels: { version: 'v1' } },
          {
            name: 'v2',
            labels: { version: 'v2' },
            trafficPolicy: { loadBalancer: { consistentHash: { httpCookie: { name: 'session', ttl: '0s' } } } },
          },
        ],
      }),
    ],
    KNOWN,
  );
  assert.equal(cfg.destinations.length, 1);
  const p = must(cfg.destinations[0], 'one');
  assert.equal(p.service, REVIEWS);
  assert.deepEqual(p.trafficPolicy, {
    loadBalancer: { type: 'ROUND_ROBIN' },
    connectionPool: {
      maxConnections: 10,
      maxPendingRequests: 2,
      maxRequests: UNLIMITED,
      maxRequestsPerConnection: 0,
      maxRetries: UNLIMITED,
    },
    outlierDetection: {
      consecutive5xxErrors: 3,
      consecutiveGatewayErrors: 0,
      intervalMs: 1000,
      baseEjectionMs: 90_000,
      maxEjectionPercent: 10,
    },
  });
  const table = new DestinationTable(cfg.destinations);
  const v2 = must(table.policyFor(REVIEWS, 'v2'), 'v2');
  assert.deepEqual(v2.loadBalancer, { type: 'HASH_COOKIE', name: 'session' }, "the subset's loadBalancer replaces the rule's");
  assert.equal(v2.connectionPool.maxConnections, 10, "what the subset leaves out is the rule's");
  assert.deepEqual(v2.labels, [{ key: 'version', value: 'v2' }]);
  assert.equal(table.policyFor(REVIEWS, 'v3'), undefined, 'an undefined subset has no endpoints');
  const none = must(table.policyFor('default/ratings.default.svc.cluster.local'), 'default');
  assert.deepEqual(
    [none.loadBalancer, none.connectionPool, none.outlierDetection],
    [{ type: 'LEAST_REQUEST' }, ISTIO_DEFAULT_POOL, undefined],
  );
  // The FQDN of a service of another namespace names that one.
  const other = parseWaypointConfig([dr({ host: 'reviews.other.svc.cluster.local' })], KNOWN);
  assert.equal(other.destinations[0]?.service, 'other/reviews.other.svc.cluster.local');
  const od = parseWaypointConfig([dr({ host: 'reviews', trafficPolicy: { outlierDetection: {} } })], KNOWN);
  assert.deepEqual(od.destinations[0]?.trafficPolicy.outlierDetection, ISTIO_OUTLIER_DEFAULTS);
});

test('DestinationRule refusals name the object and field; a misspelt field gets a did-you-mean', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { host: 'reviews', trafficPolicy: { outlierDetection: { consecutive5xxError: 3 } } },
      /routes\[0\] \(DestinationRule default\/reviews\) spec\.trafficPolicy\.outlierDetection\.consecutive5xxError: unknown field; did you mean `consecutive5xxErrors`\?/,
    ],
    [
      { host: 'reviews', trafficPolicy: { connectionPool: { http: { http1MaxPendingRequest: 1 } } } },
      /connectionPool\.http\.http1MaxPendingRequest: unknown field; did you mean `http1MaxPendingRequests`\?/,
    ],
    [{ host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'LEAST_CONNECTIONS' } } }, /loadBalancer\.simple: must be ROUND_ROBIN/],
    [
      { host: 'reviews', trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', useSourceIp: true } } } },
      /consistentHash: must set exactly one of httpHeaderName, httpCookie, useSourceIp/,
    ],
    [
      { host: 'reviews', trafficPolicy: { connectionPool: { tcp: { maxConnections: 0 } } } },
      /connectionPool\.tcp\.maxConnections: must be a whole number 1\.\.4294967295/,
    ],
    [{ host: 'reviews', trafficPolicy: { outlierDetection: { interval: '10 s' } } }, /outlierDetection\.interval: must be a duration/],
    [
      { host: 'reviews', trafficPolicy: { outlierDetection: { maxEjectionPercent: 101 } } },
      /maxEjectionPercent: must be a whole number 0\.\.100/,
    ],
    [{ host: 'reviews', trafficPolicy: { portLevelSettings: [] } }, /trafficPolicy\.portLevelSettings: is not supported/],
    [{ host: 'reviews', trafficPolicy: { tls: { mode: 'SIMPLE' } } }, /trafficPolicy\.tls: must be \{ mode: ISTIO_MUTUAL \}/],
    [{ host: 'reviews', subsets: [{ name: 'v1' }, { name: 'v1' }] }, /subsets\[1\]\.name: names another subset/],
    [{ host: 'reviews', subsets: [{ name: 'v1', labels: { version: 1 } }] }, /subsets\[0\]\.labels\.version: label values must be strings/],
    [{ host: '*.default.svc.cluster.local' }, /spec\.host: wildcard hosts are not supported/],
    [{ hosts: 'reviews' }, /spec\.hosts: unknown field; did you mean `host`\?/],
  ];
  for (const [spec, re] of cases) {
    const got = problems([dr(spec)]);
    assert.ok(
      got.some((p) => re.test(p)),
      `${JSON.stringify(spec)}:\n${got.join('\n')}`,
    );
  }
  // TLS as Istio's mutual TLS is what the waypoint does anyway: accepted.
  assert.deepEqual(problems([dr({ host: 'reviews', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } })]), []);
});

test('a rule for an unknown host applies to nothing (a warning); of two rules for one service the older applies', () => {
  const cfg = parseWaypointConfig(
    [
      dr({ host: 'nope' }, 'nope'),
      dr({ host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, 'newer', 'default', {
        creationTimestamp: '2026-02-01T00:00:00Z',
      }),
      dr({ host: 'reviews.default.svc.cluster.local' }, 'older', 'default', { creationTimestamp: '2026-01-01T00:00:00Z' }),
    ],
    KNOWN,
  );
  assert.deepEqual(
    cfg.destinations.map((d) => d.name),
    ['older'],
  );
  assert.ok(
    cfg.warnings.some((w) => /nope is no known service/.test(w)),
    cfg.warnings.join('\n'),
  );
  assert.ok(
    cfg.warnings.some((w) => /newer\) spec\.host: ignored: the older DestinationRule default\/older/.test(w)),
    cfg.warnings.join('\n'),
  );
});

test('on the wire: the destinations of the services a waypoint serves round-trip; a bad field is refused with its name', () => {
  const parsed = parseWaypointConfig(
    [
      dr({
        host: 'reviews',
        trafficPolicy: {
          loadBalancer: { consistentHash: { httpHeaderName: 'X-User' } },
          connectionPool: { http: { http2MaxRequests: 5, maxRetries: 1, maxRequestsPerConnection: 3 } },
          outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '2s' },
        },
        subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true } } } }],
      }),
      dr({ host: 'ratings' }, 'ratings'),
    ],
    KNOWN,
  );
  const cfg: WaypointConfig = {
    ...parsed,
    waypoints: [{ namespace: 'default', name: 'wp', for: 'service' }],
    bindings: { services: new Map([[REVIEWS, 'default/wp']]), workloads: new Map() },
  };
  const res = must(waypointResources(cfg).get('default/wp'), 'resource');
  const l7 = waypointFromMessage('default/wp', unpack(res.resource));
  assert.deepEqual(
    l7.destinations,
    parsed.destinations.filter((d) => d.service === REVIEWS),
    'only the rule of the service it serves, field for field',
  );
  // biome-ignore lint/suspicious/noExplicitAny: the test breaks the message wherever it likes
  type Any = any;
  const bad = (f: (d: Any) => void, re: RegExp): void => {
    const m = unpack<Any>(res.resource);
    f(must(m.destinations?.[0], 'sent'));
    assert.throws(
      () => waypointFromMessage('default/wp', m as never),
      (err: Error) => err instanceof ResourceError && re.test(err.message),
    );
  };
  bad((d) => {
    d.traffic_policy.load_balancer.type = 'MAGLEV';
  }, /destinations\[0\]\.traffic_policy\.load_balancer\.type "MAGLEV" must be one of/);
  bad((d) => {
    d.traffic_policy.connection_pool.max_connections = 0;
  }, /destinations\[0\]\.traffic_policy\.connection_pool\.max_connections 0 must be a whole number 1\.\./);
  bad((d) => {
    d.traffic_policy.outlier_detection.max_ejection_percent = 150;
  }, /outlier_detection\.max_ejection_percent 150 must be a whole number 0\.\.100/);
  bad((d) => {
    d.subsets.push({ ...d.subsets[0] });
  }, /destinations\[0\]\.subsets\[1\]\.name "v1" names another subset/);
});

// ---- the logic, with a fake clock ----

const eps = (...ids: string[]): Endpoint[] => ids.map((id) => ({ id, weight: 1 }));

test('round robin takes the endpoints in turn, by weight; consistent hash keeps a key on its endpoint and moves only the gone', () => {
  const rr = new RoundRobinBalancer();
  const list = [
    { id: 'a', weight: 2 },
    { id: 'b', weight: 1 },
  ];
  assert.deepEqual(
    Array.from({ length: 6 }, () => rr.pick(list)?.id),
    ['a', 'a', 'b', 'a', 'a', 'b'],
  );
  assert.equal(rr.pick(list, new Set(['a']))?.id, 'b', 'an endpoint already tried is skipped while others remain');
  const all = eps('a', 'b', 'c', 'd');
  const keys = Array.from({ length: 400 }, (_, i) => `user-${i}`);
  const before = new Map(keys.map((k) => [k, pickHashed(all, k)?.id]));
  for (const k of keys) assert.equal(pickHashed(all, k)?.id, before.get(k), 'stable');
  const spread = new Map<string, number>();
  for (const v of before.values()) spread.set(String(v), (spread.get(String(v)) ?? 0) + 1);
  for (const id of ['a', 'b', 'c', 'd']) assert.ok((spread.get(id) ?? 0) > 60, `spread ${JSON.stringify([...spread])}`);
  const without = eps('a', 'b', 'd');
  for (const k of keys) if (before.get(k) !== 'c') assert.equal(pickHashed(without, k)?.id, before.get(k), 'only the keys of c move');
  assert.notEqual(hash32('a'), hash32('b'));
  assert.equal(hashKey({ type: 'HASH_COOKIE', name: 'session' }, { headers: { cookie: 'a=1; session=xyz; b=2' }, srcIp: '' }), 'xyz');
  assert.equal(hashKey({ type: 'HASH_COOKIE', name: 'session' }, { headers: {}, srcIp: '' }), undefined);
  assert.equal(hashKey({ type: 'HASH_HEADER', name: 'x-user' }, { headers: { 'x-user': 'ann' }, srcIp: '' }), 'ann');
  assert.equal(hashKey({ type: 'HASH_SOURCE_IP' }, { headers: {}, srcIp: '10.0.0.7' }), '10.0.0.7');
});

const OD: OutlierDetection = {
  consecutive5xxErrors: 3,
  consecutiveGatewayErrors: 0,
  intervalMs: 1000,
  baseEjectionMs: 10_000,
  maxEjectionPercent: 100,
};

test('outlier detection: ejected after consecutive 5xx, back after baseEjectionTime × ejections; the count decays per interval', () => {
  let now = 0;
  const o = new OutlierDetector(() => now);
  const fail = (id: string): boolean => o.record(id, '5xx', 4, OD);
  assert.equal(fail('a'), false);
  assert.equal(fail('a'), false);
  o.record('a', 'success', 4, OD);
  assert.equal(fail('a') || fail('a'), false, 'a success starts the count afresh');
  assert.equal(fail('a'), true, 'the third in a row ejects');
  assert.equal(o.ejected('a', OD), true);
  now = 9_999;
  assert.equal(o.ejected('a', OD), true);
  now = 10_000;
  assert.equal(o.ejected('a', OD), false, 'back after baseEjectionTime');
  // Ejected again at once: twice as long now.
  fail('a');
  fail('a');
  assert.equal(fail('a'), true);
  assert.equal(o.ejections('a'), 2);
  now = 10_000 + 19_999;
  assert.equal(o.ejected('a', OD), true);
  now = 30_000;
  assert.equal(o.ejected('a', OD), false, 'back after 2 × baseEjectionTime');
  // Two intervals in rotation take the count down by two: forgotten.
  now = 32_000;
  o.ejected('a', OD);
  assert.equal(o.ejections('a'), 0);
  assert.equal(o.size, 0, 'an endpoint with nothing against it leaves no state');
  // Capped at 300 s (Envoy's max_ejection_time).
  const long = { ...OD, baseEjectionMs: 200_000 };
  const o2 = new OutlierDetector(() => now);
  for (let i = 0; i < 3; i++) o2.record('b', '5xx', 4, long);
  now += 200_000;
  for (let i = 0; i < 3; i++) o2.record('b', '5xx', 4, long);
  now += MAX_EJECTION_MS - 1;
  assert.equal(o2.ejected('b', long), true);
  now += 1;
  assert.equal(o2.ejected('b', long), false, 'the second ejection lasts 300 s, not 400');
});

test('outlier detection: gateway errors, the maxEjectionPercent cap (one may always go), forgetting the gone', () => {
  const now = 0;
  assert.deepEqual(
    [outlierResult(503), outlierResult(500), outlierResult(404), outlierResult(200, 14)],
    ['gateway', '5xx', 'success', 'gateway'],
  );
  const gw: OutlierDetection = { ...OD, consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 10 };
  const o = new OutlierDetector(() => now);
  o.record('a', '5xx', 4, gw);
  assert.equal(o.record('a', '5xx', 4, gw), false, 'plain 5xx do not count as gateway errors');
  o.record('a', 'gateway', 4, gw);
  assert.equal(o.record('a', 'gateway', 4, gw), true, 'one endpoint may always be ejected, even past 10 %');
  o.record('b', 'gateway', 4, gw);
  assert.equal(o.record('b', 'gateway', 4, gw), false, 'a second would be 50 % > 10 %');
  assert.equal(o.ejectedCount(gw), 1);
  o.retain(new Set(['b']));
  assert.equal(o.ejected('a', gw), false);
  assert.equal(o.size, 1, 'a gone endpoint is forgotten');
});

test('a destination skips its ejected endpoints; all of them out is no healthy upstream', () => {
  let now = 0;
  const d = new DestinationState(
    () => 0.5,
    () => now,
  );
  const policy = {
    loadBalancer: { type: 'ROUND_ROBIN' } as const,
    connectionPool: ISTIO_DEFAULT_POOL,
    outlierDetection: { ...OD, consecutive5xxErrors: 1, maxEjectionPercent: 100 },
    labels: [],
  };
  const list = eps('a', 'b');
  d.outlier.record('a', '5xx', 2, policy.outlierDetection);
  const input = { headers: {}, srcIp: '10.0.0.1' };
  assert.deepEqual(
    Array.from({ length: 4 }, () => d.pick(policy, list, new Set(), input)?.id),
    ['b', 'b', 'b', 'b'],
  );
  d.outlier.record('b', '5xx', 2, policy.outlierDetection);
  assert.equal(d.pick(policy, list, new Set(), input), undefined);
  now = 10_000;
  assert.ok(d.pick(policy, list, new Set(), input), 'back after baseEjectionTime');
  // Gone endpoints' state goes once more are kept than there are endpoints.
  for (const id of ['x', 'y', 'z']) d.outlier.record(id, '5xx', 5, { ...policy.outlierDetection, consecutive5xxErrors: 5 });
  d.pick(policy, eps('a'), new Set(), input);
  assert.ok(d.outlier.size <= 1, `state kept for ${d.outlier.size} endpoints`);
});

test('circuit breaker: maxRequests, maxConnections with a queue of maxPendingRequests (in order, cancellable), maxRetries', async () => {
  const cb = new CircuitBreaker();
  const pool = { ...ISTIO_DEFAULT_POOL, maxRequests: 2, maxConnections: 1, maxPendingRequests: 2, maxRetries: 1 };
  const r1 = must(cb.request(pool), 'first');
  const r2 = must(cb.request(pool), 'second');
  assert.equal(cb.request(pool), undefined, 'a third request overflows');
  r1();
  r1();
  const r3 = must(cb.request(pool), 'released once, however often called');
  assert.equal(cb.request(pool), undefined);

  const c1 = cb.connection(pool);
  assert.notEqual(c1, 'overflow');
  const w1 = cb.connection(pool);
  const w2 = cb.connection(pool);
  assert.equal(cb.connection(pool), 'overflow', 'a third waiting one overflows');
  if (c1 === 'overflow' || w1 === 'overflow' || w2 === 'overflow') return assert.fail('queued');
  w1.cancel();
  assert.equal(await w1.ready, undefined, 'a cancelled wait gets nothing');
  assert.deepEqual(cb.stats().pending, 1);
  (await c1.ready)?.();
  const second = await w2.ready;
  assert.ok(second, 'the freed connection goes to the one waiting');
  assert.deepEqual([cb.stats().connections, cb.stats().pending], [1, 0]);
  second?.();
  assert.equal(cb.stats().connections, 0);

  const held = must(cb.retry(pool), 'one retry');
  assert.equal(cb.retry(pool), undefined);
  // A retry the budget allows is still refused at maxRetries.
  const state = new RetryState(
    { attempts: 3, on: ['connect-failure'], codes: [], backoffBaseMs: 1, backoffMaxMs: 1 },
    new RetryBudget(),
    () => 0,
    () => 0,
    undefined,
    () => cb.retry(pool),
  );
  assert.deepEqual(state.next({ kind: 'connect-failure' }), { retry: false, reason: 'overflow' });
  held();
  assert.equal(state.next({ kind: 'connect-failure' }).retry, true);
  state.finish();
  assert.equal(cb.stats().retries, 0);
  r2();
  r3();
  assert.ok(cb.idle);
});

test('DestinationTable: the first rule for a service stands', () => {
  const mk = (name: string): DestinationPolicy => ({ namespace: 'default', name, service: REVIEWS, trafficPolicy: {}, subsets: [] });
  assert.equal(new DestinationTable([mk('a'), mk('b')]).policyFor(REVIEWS)?.rule, 'default/a');
});
