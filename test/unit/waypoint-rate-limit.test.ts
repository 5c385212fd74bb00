// Local rate limits at the waypoint, without sockets: the reader of Linkerd's
// HTTPLocalRateLimitPolicy (targetRef a Service; did-you-mean for misspelt
// fields and service names), and the token buckets with a fake clock: burst
// then refill, per-identity buckets, overrides shared by their clients, the
// total over everyone, refused requests spending nothing, and the bound on
// the number of buckets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { unpack } from '../../src/protocol/protos';
import { compileWaypointConfig, parseWaypointConfig } from '../../src/sources/gateway-api';
import { ResourceError } from '../../src/sources/xds-resources';
import { waypointFromMessage, waypointResources } from '../../src/sources/xds-waypoint';
import type { Service, Workload } from '../../src/state/types';
import { RateLimiter, RateLimitTable } from '../../src/waypoint/rate-limit';
import type { RateLimitPolicy, WaypointConfig } from '../../src/waypoint/types';
import { must } from '../helpers/must';

const svc = (name: string, namespace = 'default'): Service => ({
  name,
  namespace,
  hostname: `${name}.${namespace}.svc.cluster.local`,
  addresses: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080 }],
  selector: { app: name },
});
const KNOWN = { services: [svc('reviews'), svc('ratings')], workloads: [] as Workload[] };
const REVIEWS = 'default/reviews.default.svc.cluster.local';
const id = (sa: string, ns = 'default'): string => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

const rl = (spec: Record<string, unknown>, name = 'reviews-limit') => ({
  apiVersion: 'policy.linkerd.io/v1alpha1',
  kind: 'HTTPLocalRateLimitPolicy',
  metadata: { name, namespace: 'default' },
  spec,
});

function problems(docs: unknown[]): string[] {
  const out: string[] = [];
  compileWaypointConfig(docs, KNOWN, { at: 'routes' }, (at, value, what) => out.push(`${at}: ${what} (got ${JSON.stringify(value)})`));
  return out;
}

test('an HTTPLocalRateLimitPolicy becomes the model: the service key, total, identity and overrides by service account', () => {
  const cfg = parseWaypointConfig(
    [
      rl({
        targetRef: { group: '', kind: 'Service', name: 'reviews' },
        total: { requestsPerSecond: 100 },
        identity: { requestsPerSecond: 20 },
        overrides: [
          {
            requestsPerSecond: 50,
            clientRefs: [
              { kind: 'ServiceAccount', name: 'web' },
              { kind: 'ServiceAccount', name: 'batch', namespace: 'jobs' },
            ],
          },
        ],
      }),
    ],
    KNOWN,
  );
  assert.deepEqual(cfg.rateLimits, [
    {
      namespace: 'default',
      name: 'reviews-limit',
      service: REVIEWS,
      total: 100,
      identity: 20,
      overrides: [
        {
          requestsPerSecond: 50,
          clients: [
            { namespace: 'default', name: 'web' },
            { namespace: 'jobs', name: 'batch' },
          ],
        },
      ],
    },
  ]);
});

test('the reader refuses what it cannot honour, naming the field, with did-you-mean', () => {
  const got = problems([
    rl({ targetRef: { kind: 'Service', name: 'reviews' }, identity: { requestPerSecond: 5 } }, 'a'),
    rl({ targetRef: { kind: 'Service', name: 'review' }, total: { requestsPerSecond: 5 } }, 'b'),
    rl({ targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'reviews' }, total: { requestsPerSecond: 5 } }, 'c'),
    rl({ targetRef: { kind: 'Service', name: 'ratings' }, total: { requestsPerSecond: 0 }, overides: [] }, 'd'),
    rl({ targetRef: { kind: 'Service', name: 'ratings' } }, 'e'),
    rl(
      { targetRef: { kind: 'Service', name: 'ratings' }, overrides: [{ requestsPerSecond: 5, clientRefs: [{ kind: 'User', name: 'x' }] }] },
      'f',
    ),
  ]).join('\n');
  assert.match(got, /a\) spec\.identity\.requestPerSecond: .*did you mean `requestsPerSecond`/);
  assert.match(got, /b\) spec\.targetRef\.name: names no known service \(did you mean reviews\?\)/);
  assert.match(got, /c\) spec\.targetRef\.kind: .*not a Linkerd Server: write kind: Service/);
  assert.match(got, /c\) spec\.targetRef\.group/);
  assert.match(got, /d\) spec\.total\.requestsPerSecond: must be a whole number 1\.\./);
  assert.match(got, /d\) spec\.overides: .*did you mean `overrides`/);
  assert.match(got, /e\) spec: limits nothing/);
  assert.match(got, /f\) spec\.overrides\[0\]\.clientRefs\[0\]\.kind: must be ServiceAccount/);
  assert.throws(() => parseWaypointConfig([rl({ targetRef: { kind: 'Service', name: 'review' } })], KNOWN), { code: 'AMBIT_E_CONFIG' });
});

test('two policies on one service: the first applies, the other is a warning', () => {
  const cfg = parseWaypointConfig(
    [
      rl({ targetRef: { kind: 'Service', name: 'reviews' }, total: { requestsPerSecond: 1 } }, 'one'),
      rl({ targetRef: { kind: 'Service', name: 'reviews' }, total: { requestsPerSecond: 2 } }, 'two'),
    ],
    KNOWN,
  );
  assert.deepEqual(
    cfg.rateLimits?.map((p) => p.name),
    ['one'],
  );
  assert.ok(cfg.warnings.some((w) => w.includes('two') && w.includes('ignored')));
});

test('on the wire: the policies of the services a waypoint serves round-trip; a bad field is refused with its name', () => {
  const parsed = parseWaypointConfig(
    [
      rl({
        targetRef: { kind: 'Service', name: 'reviews' },
        identity: { requestsPerSecond: 20 },
        overrides: [{ requestsPerSecond: 50, clientRefs: [{ kind: 'ServiceAccount', name: 'web' }] }],
      }),
      rl({ targetRef: { kind: 'Service', name: 'ratings' }, total: { requestsPerSecond: 7 } }, 'ratings-limit'),
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
    l7.rateLimits,
    parsed.rateLimits?.filter((p) => p.service === REVIEWS),
    'only the policy of the service it serves, field for field',
  );
  // biome-ignore lint/suspicious/noExplicitAny: the test breaks the message wherever it likes
  type Any = any;
  const bad = (f: (p: Any) => void, re: RegExp): void => {
    const m = unpack<Any>(res.resource);
    f(must(m.rate_limits?.[0], 'sent'));
    assert.throws(
      () => waypointFromMessage('default/wp', m as never),
      (err: Error) => err instanceof ResourceError && re.test(err.message),
    );
  };
  bad((p) => {
    p.identity = 0;
  }, /rate_limits\[0\]\.identity 0 must be a whole number 1\.\./);
  bad((p) => {
    p.overrides[0].clients = [];
  }, /rate_limits\[0\]\.overrides\[0\]\.clients \[\] must not be empty/);
  bad((p) => {
    p.overrides[0].clients[0].name = 'Not/A/Name';
  }, /clients\[0\]\.name "Not\/A\/Name" is not a service account/);
  bad((p) => {
    p.overrides[0].requests_per_second = 0;
  }, /overrides\[0\]\.requests_per_second 0 must be a whole number/);
});

const policy = (p: Partial<RateLimitPolicy>): RateLimitTable =>
  new RateLimitTable([{ namespace: 'default', name: 'p', service: REVIEWS, overrides: [], ...p }]);

/** How many of n requests at the current time are let through. */
const admitted = (l: RateLimiter, t: RateLimitTable | undefined, who: string, n: number, service = REVIEWS): number =>
  Array.from({ length: n }, () => l.take(t, service, who)).filter((r) => r === undefined).length;

test('identity buckets: a burst of one second, then the rate; each identity on its own; other services unlimited', () => {
  let now = 0;
  const l = new RateLimiter(() => now);
  const t = policy({ identity: 5 });
  assert.equal(admitted(l, t, id('a'), 8), 5);
  const refused = l.take(t, REVIEWS, id('a'));
  assert.deepEqual(refused, { policy: 'default/p', limit: 'identity', requestsPerSecond: 5 });
  assert.equal(admitted(l, t, id('b'), 5), 5, 'another identity has a bucket of its own');
  now += 200; // one token per 200 ms at 5/s
  assert.equal(admitted(l, t, id('a'), 3), 1);
  now += 10_000; // refilled, never beyond one second's worth
  assert.equal(admitted(l, t, id('a'), 9), 5);
  assert.equal(admitted(l, t, id('a'), 50, 'default/ratings.default.svc.cluster.local'), 50);
  assert.equal(admitted(l, undefined, id('a'), 50), 50);
});

test('total over everyone; overrides shared by their clients; a refused request spends nothing', () => {
  let now = 0;
  const l = new RateLimiter(() => now);
  const t = policy({
    total: 10,
    identity: 2,
    overrides: [
      {
        requestsPerSecond: 6,
        clients: [
          { namespace: 'default', name: 'web' },
          { namespace: 'jobs', name: 'batch' },
        ],
      },
    ],
  });
  assert.equal(admitted(l, t, id('web'), 4), 4);
  assert.equal(admitted(l, t, id('batch', 'jobs'), 4), 2, 'the override bucket is shared: 6 between web and batch');
  assert.equal(l.take(t, REVIEWS, id('web'))?.limit, 'override');
  assert.equal(admitted(l, t, id('x'), 3), 2);
  assert.equal(admitted(l, t, id('y'), 3), 2, 'total 10 = 6 + 2 + 2');
  assert.deepEqual(l.take(t, REVIEWS, id('z')), { policy: 'default/p', limit: 'total', requestsPerSecond: 10 });
  // The refusals above took no identity token: after the total refills, z still has its full 2.
  now += 1000;
  assert.equal(admitted(l, t, id('z'), 5), 2);
});

test('the number of buckets is bounded: an identity per request keeps at most maxBuckets, the least recently used evicted', () => {
  const l = new RateLimiter(() => 0, 100);
  const t = policy({ identity: 1 });
  assert.equal(admitted(l, t, id('kept'), 2), 1);
  for (let i = 0; i < 10_000; i++) {
    if (i % 50 === 0) assert.ok(l.take(t, REVIEWS, id('kept')), 'a bucket in use is not evicted');
    assert.equal(l.take(t, REVIEWS, id(`rotating-${i}`)), undefined);
    assert.ok(l.size <= 100);
  }
  assert.equal(l.size, 100);
});
