// A stand-in for the Kubernetes API server (no real one can run here): it
// serves the paths and watch streams ambit uses — pods (optionally by
// spec.nodeName), namespaces, services, EndpointSlices, Gateway API
// gateways, httproutes and grpcroutes, Istio authorizationpolicies, destinationrules and virtualservices, Linkerd's
// httplocalratelimitpolicies, and
// TokenReview (a kind in `absent` answers 404, as a CRD not installed) —
// with objects shaped like the recorded ones in test/fixtures/kube/.
// Run as a process (`node fake-kube.js HOST PORT`), it is driven over stdin
// with one JSON command per line:
//   { "put": <object> }                      create or update (by kind/namespace/name)
//   { "delete": { "kind", "namespace", "name" } }
//   { "token": "<bearer>", "review": <TokenReview status> }   what a TokenReview of it answers
//   { "expire": true }                       end every watch with 410 Gone (clients must relist)
// and prints {"listening": port} once serving.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';

type Obj = {
  kind: string;
  apiVersion?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string };
  spec?: { nodeName?: string };
};
interface Watcher {
  res: http.ServerResponse;
  kind: string;
  node?: string;
}

const PATHS: Record<string, string> = {
  '/api/v1/pods': 'Pod',
  '/api/v1/namespaces': 'Namespace',
  '/api/v1/services': 'Service',
  '/apis/discovery.k8s.io/v1/endpointslices': 'EndpointSlice',
  '/apis/gateway.networking.k8s.io/v1/gateways': 'Gateway',
  '/apis/gateway.networking.k8s.io/v1/httproutes': 'HTTPRoute',
  '/apis/gateway.networking.k8s.io/v1/grpcroutes': 'GRPCRoute',
  '/apis/security.istio.io/v1/authorizationpolicies': 'AuthorizationPolicy',
  '/apis/networking.istio.io/v1/destinationrules': 'DestinationRule',
  '/apis/networking.istio.io/v1/virtualservices': 'VirtualService',
  '/apis/policy.linkerd.io/v1alpha1/httplocalratelimitpolicies': 'HTTPLocalRateLimitPolicy',
};
const LIST_KIND: Record<string, string> = {
  Pod: 'PodList',
  Namespace: 'NamespaceList',
  Service: 'ServiceList',
  EndpointSlice: 'EndpointSliceList',
  Gateway: 'GatewayList',
  HTTPRoute: 'HTTPRouteList',
  GRPCRoute: 'GRPCRouteList',
  AuthorizationPolicy: 'AuthorizationPolicyList',
  DestinationRule: 'DestinationRuleList',
  VirtualService: 'VirtualServiceList',
  HTTPLocalRateLimitPolicy: 'HTTPLocalRateLimitPolicyList',
};

export const FIXTURES = path.resolve(__dirname, '../../../test/fixtures/kube');
/** A recorded object, deep-copied, to be adapted by a test. */
export function fixture<T>(
  name:
    | 'pod'
    | 'namespace'
    | 'service'
    | 'endpointslice'
    | 'tokenreview'
    | 'gateway'
    | 'gateway-ingress'
    | 'waypoint-pod'
    | 'waypoint-service',
): T {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as T;
}

export class FakeKube {
  private readonly objects = new Map<string, Obj>();
  private readonly watchers = new Set<Watcher>();
  private readonly reviews = new Map<string, unknown>();
  private rv = 1000;
  readonly server = http.createServer((req, res) => this.handle(req, res));
  /** Requests served, by "METHOD path" (tests check what the clients asked). */
  readonly requests: string[] = [];
  /** Kinds whose CRD is "not installed": their paths answer 404. */
  readonly absent = new Set<string>();

  put(o: Obj): void {
    o.metadata.resourceVersion = String(++this.rv);
    const key = keyOf(o.kind, o.metadata.namespace, o.metadata.name);
    const type = this.objects.has(key) ? 'MODIFIED' : 'ADDED';
    this.objects.set(key, o);
    this.notify(type, o);
  }

  delete(kind: string, namespace: string | undefined, name: string): void {
    const key = keyOf(kind, namespace, name);
    const o = this.objects.get(key);
    if (!o) return;
    this.objects.delete(key);
    o.metadata.resourceVersion = String(++this.rv);
    this.notify('DELETED', o);
  }

  review(token: string, status: unknown): void {
    this.reviews.set(token, status);
  }

  expireWatches(): void {
    for (const w of this.watchers) {
      w.res.end(
        `${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 } })}\n`,
      );
    }
    this.watchers.clear();
  }

  private notify(type: string, o: Obj): void {
    for (const w of this.watchers) {
      if (w.kind !== o.kind || (w.node && o.spec?.nodeName !== w.node)) continue;
      w.res.write(`${JSON.stringify({ type, object: o })}\n`);
    }
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (req.method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') return void this.tokenReview(req, res);
    const kind = PATHS[url.pathname];
    if (req.method !== 'GET' || !kind || this.absent.has(kind)) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      return void res.end(
        JSON.stringify({
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Failure',
          reason: 'NotFound',
          code: 404,
          message: `the server could not find the requested resource (${req.method} ${url.pathname})`,
        }),
      );
    }
    const selector = url.searchParams.get('fieldSelector') ?? '';
    const node = /^spec\.nodeName=(.+)$/.exec(selector)?.[1];
    if (selector && !node) {
      res.writeHead(400);
      return void res.end(JSON.stringify({ kind: 'Status', code: 400, message: `unsupported field selector ${selector}` }));
    }
    const items = [...this.objects.values()].filter((o) => o.kind === kind && (!node || o.spec?.nodeName === node));
    res.setHeader('Content-Type', 'application/json');
    if (url.searchParams.get('watch') !== '1' && url.searchParams.get('watch') !== 'true') {
      return void res.end(
        JSON.stringify({ kind: LIST_KIND[kind], apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items }),
      );
    }
    // A watch from resourceVersion: objects changed since then, then live events (a history of deletes is not kept: tests start watches first).
    const from = Number(url.searchParams.get('resourceVersion') ?? 0);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    for (const o of items) if (Number(o.metadata.resourceVersion) > from) res.write(`${JSON.stringify({ type: 'MODIFIED', object: o })}\n`);
    const w: Watcher = { res, kind, node };
    this.watchers.add(w);
    req.on('close', () => this.watchers.delete(w));
  }

  private tokenReview(req: http.IncomingMessage, res: http.ServerResponse): void {
    let body = '';
    req.on('data', (d) => {
      body += d;
    });
    req.on('end', () => {
      const review = JSON.parse(body) as { spec: { token: string; audiences?: string[] } };
      const known = this.reviews.get(review.spec.token);
      const status = known ?? { authenticated: false, error: 'invalid bearer token' };
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: 'TokenReview',
          apiVersion: 'authentication.k8s.io/v1',
          metadata: { creationTimestamp: null },
          spec: review.spec,
          status,
        }),
      );
    });
  }
}

const keyOf = (kind: string, ns: string | undefined, name: string): string => `${kind}/${ns ?? ''}/${name}`;

if (require.main === module) {
  const [host, port] = process.argv.slice(2);
  const kube = new FakeKube();
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line) as {
      put?: Obj;
      delete?: { kind: string; namespace?: string; name: string };
      token?: string;
      review?: unknown;
      expire?: boolean;
    };
    if (cmd.put) kube.put(cmd.put);
    if (cmd.delete) kube.delete(cmd.delete.kind, cmd.delete.namespace, cmd.delete.name);
    if (cmd.token) kube.review(cmd.token, cmd.review);
    if (cmd.expire) kube.expireWatches();
    console.log(JSON.stringify({ done: line.slice(0, 80) }));
  });
  kube.server.listen(Number(port), host, () =>
    console.log(JSON.stringify({ listening: (kube.server.address() as { port: number }).port })),
  );
}
