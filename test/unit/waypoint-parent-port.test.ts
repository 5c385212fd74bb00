// parentRefs[].sectionName and port on a Service parent (Gateway API's mesh
// pattern: the section is a service port's name): the route applies to that
// service port only, the service's other ports stay unrouted, and a name
// that is no port's is refused with the route, the field and the names.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { compileWaypointConfig } from '../../src/sources/gateway-api';
import type { Service } from '../../src/state/types';
import { RouteTable } from '../../src/waypoint/match';

const REVIEWS: Service = {
  name: 'reviews',
  namespace: 'default',
  hostname: 'reviews.default.svc.cluster.local',
  addresses: ['10.96.0.10'],
  ports: [
    { port: 80, targetPort: 9080, name: 'http' },
    { port: 9090, targetPort: 9090, name: 'grpc-admin' },
    { port: 5432, targetPort: 5432 },
  ],
  selector: { app: 'reviews' },
};
const UNNAMED: Service = { ...REVIEWS, name: 'bare', hostname: 'bare.default.svc.cluster.local', ports: [{ port: 80, targetPort: 80 }] };
const KEY = 'default/reviews.default.svc.cluster.local';

function compile(parentRef: string, service = 'reviews') {
  const yaml = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: ${service}${parentRef} }]
  rules: [{ backendRefs: [{ name: ${service}, port: 80 }] }]
`;
  const problems: string[] = [];
  const cfg = compileWaypointConfig(
    YAML.parseAllDocuments(yaml).map((d) => d.toJS() as unknown),
    { services: [REVIEWS, UNNAMED], workloads: [] },
    {},
    (at, value, what) => problems.push(`${at}: ${what} (got ${JSON.stringify(value)})`),
  );
  return { ...cfg, problems };
}

function oneProblem(problems: string[], ...fragments: string[]): void {
  assert.equal(problems.length, 1, `expected one problem, got:\n${problems.join('\n')}`);
  for (const f of fragments) assert.ok(problems[0]?.includes(f), `"${f}" not in: ${problems[0]}`);
}

test('sectionName names a service port by its name: the route applies to that port only', () => {
  const r = compile(', sectionName: grpc-admin');
  assert.deepEqual(r.problems, []);
  assert.equal(r.routes.length, 1);
  assert.equal(r.routes[0]?.port, 9090);
  const table = new RouteTable(r.routes);
  assert.equal(table.has(KEY, 9090), true);
  assert.equal(table.has(KEY, 80), false, 'the other ports are not routed');
  assert.equal(table.has(KEY), true);
});

test('sectionName and port together must name the same port', () => {
  const ok = compile(', sectionName: http, port: 80');
  assert.deepEqual(ok.problems, []);
  assert.equal(ok.routes[0]?.port, 80);
  oneProblem(
    compile(', sectionName: http, port: 9090').problems,
    'HTTPRoute default/r',
    'spec.parentRefs[0].port',
    'sectionName http (port 80)',
  );
});

test('without sectionName or port the route applies to every port of the service', () => {
  const r = compile('');
  assert.deepEqual(r.problems, []);
  assert.equal(r.routes[0]?.port, undefined);
  const table = new RouteTable(r.routes);
  for (const p of [80, 9090, 5432]) assert.equal(table.has(KEY, p), true, String(p));
});

test('a port-only route and a whole-service route: the whole one still covers every port', () => {
  const yaml = (name: string, ref: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: default }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews${ref} }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /${name} } }], backendRefs: [{ name: reviews, port: 80 }] }]
---
`;
  const problems: string[] = [];
  const cfg = compileWaypointConfig(
    YAML.parseAllDocuments(yaml('a', ', sectionName: http') + yaml('b', ''))
      .map((d) => d.toJS() as unknown)
      .filter((d) => d !== null),
    { services: [REVIEWS], workloads: [] },
    {},
    (at, v, what) => problems.push(`${at}: ${what} (${JSON.stringify(v)})`),
  );
  assert.deepEqual(problems, []);
  const table = new RouteTable(cfg.routes);
  const req = (target: string) => ({ method: 'GET', target, headers: {} });
  assert.equal(table.route(KEY, 80, req('/a'))?.rule.origin.name, 'a');
  assert.equal(table.route(KEY, 80, req('/b'))?.rule.origin.name, 'b');
  assert.equal(table.route(KEY, 9090, req('/a')), undefined, 'route a is on port 80 only');
  assert.equal(table.route(KEY, 9090, req('/b'))?.rule.origin.name, 'b');
});

test('an unknown sectionName is refused naming the route, the field and the port names, with a guess when one is close', () => {
  oneProblem(
    compile(', sectionName: htpp').problems,
    'HTTPRoute default/r',
    'spec.parentRefs[0].sectionName',
    'service default/reviews: http (80), grpc-admin (9090)',
    'did you mean http?',
    '"htpp"',
  );
  const far = compile(', sectionName: metrics').problems;
  oneProblem(far, 'spec.parentRefs[0].sectionName', 'http (80), grpc-admin (9090)');
  assert.ok(!far[0]?.includes('did you mean'), far[0]);
  oneProblem(compile(', sectionName: http', 'bare').problems, 'service default/bare', 'ports have no names', 'use port: instead');
  oneProblem(compile(', sectionName: 80').problems, 'spec.parentRefs[0].sectionName', '(got 80)');
});

test('parentRefs naming one port twice, or a port of a service also taken whole, attach the rules once', () => {
  const twice = compile(', port: 80 }, { group: "", kind: Service, name: reviews, sectionName: http');
  assert.deepEqual(twice.problems, []);
  assert.deepEqual(
    twice.routes.map((r) => [r.port, r.rules.length]),
    [[80, 1]],
  );
  assert.deepEqual(twice.warnings, []);
  const whole = compile(', sectionName: http }, { group: "", kind: Service, name: reviews');
  assert.deepEqual(whole.problems, []);
  assert.deepEqual(
    whole.routes.map((r) => [r.port, r.rules.length]),
    [[undefined, 1]],
  );
  assert.equal(new RouteTable(whole.routes).candidates(KEY, 80).length, 1);
});
