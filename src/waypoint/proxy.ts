// The waypoint's handling of one HTTP request, HTTP/1.1 or HTTP/2 alike:
// L7 authorization (Istio's AuthorizationPolicy; Envoy runs its RBAC filter
// before the router, so policies see the request as the client sent it),
// then the route (RouteTable), its filters, a backend by weight, an
// endpoint by least request, and attempts over HBONE with retries under
// the budget and the route's timeouts. Every outcome is an answer with
// Envoy's response flags and one metric sample and access-log line; a
// fault in here costs this request (500), never the process.
import type http from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { Logger } from '../observability/log';
import type { MeshStore } from '../state/store';
import { type Service, serviceKey, type Workload } from '../state/types';
import { type Claim, verifiedSource } from '../tunnel/source';
import type { L7Authorizer } from './authz';
import { pickWeighted, type Random } from './balance';
import { DEFAULT_POLICY, DestinationState, type DestinationTable, type EffectivePolicy, inSubset } from './destination';
import { applyRewrite, modifyHeaders, redirect } from './filters';
import { formatFlags, grpcStatusLabel, RBAC_DENIED_BODY, RESPONSE_FLAGS, type ResponseFlag } from './flags';
import { KeepAlivePool } from './keepalive';
import type { RouteTable } from './match';
import { httpLabels, type WaypointMetrics } from './metrics';
import { outlierResult } from './outlier';
import { RateLimiter, type RateLimitTable } from './rate-limit';
import { type Clock, ISTIO_DEFAULT_RETRY, RetryBudget, RetryState } from './retry';
import type { HeaderModifier, MirrorBackend, RouteFilter, RouteRule } from './types';
import {
  type AttemptResult,
  endToEnd,
  grpcStatusFrom,
  type Headers,
  type OutgoingRequest,
  sendOver,
  type UpstreamResponse,
} from './upstream';

/** The configuration a request is decided on; replaced as a whole on reload. */
export interface WaypointView {
  store: MeshStore;
  routes: RouteTable;
  authz: L7Authorizer;
  /** DestinationRules; absent: Istio's defaults for every destination. */
  destinations?: DestinationTable;
  /** HTTPLocalRateLimitPolicies; absent: no limits. */
  rateLimits?: RateLimitTable;
}

/** Where an attempt goes: an endpoint pod and the port its app listens on. */
export interface EndpointTarget {
  ip: string;
  port: number;
  workload: Workload;
  identity: string;
  service?: Service;
}

export interface WaypointLimits {
  /** Request bodies are held for retries; a larger one is refused with 413. */
  maxRequestBodyBytes: number;
  /** timeouts.request of requests whose route sets none (0: none, as Istio). */
  defaultRequestMs: number;
  /** Retry budgets kept (one per destination service), and destination states (one per service port and subset). */
  maxBudgets: number;
}

export const DEFAULT_WAYPOINT_LIMITS: WaypointLimits = {
  maxRequestBodyBytes: 4 << 20,
  defaultRequestMs: 0,
  maxBudgets: 4096,
};

export interface ProxyDeps {
  view: () => WaypointView;
  /** "<namespace>/<name>" of this waypoint (policies target its Gateway). */
  waypoint: string;
  /** Opens a CONNECT stream to the endpoint over HBONE; rejects with a ClientFailure. */
  open: (t: EndpointTarget) => Promise<Duplex>;
  metrics: WaypointMetrics;
  log: Logger;
  limits: WaypointLimits;
  random?: Random;
  clock?: Clock;
}

/** What the HBONE layer verified about the stream a request came on. */
export interface Downstream {
  /** The client's address: the peer's, or what it forwarded for its own pod (server.ts clientAddress). */
  srcIp: string;
  /** The client's port, when the peer forwarded it. */
  srcPort?: number;
  srcIdentity: string;
  /** The source workload the peer's baggage names: believed only if it runs as srcIdentity. */
  claim?: Claim;
  /** The service the CONNECT addressed, or undefined when it named a pod. */
  service?: Service;
  /** The workload the CONNECT addressed (pod IP:port). */
  workload?: Workload;
  port: number;
  h2: boolean;
}

/** The part of node's ServerResponse and Http2ServerResponse the proxy uses. */
interface Res {
  headersSent: boolean;
  writableFinished: boolean;
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: string | Buffer): unknown;
  addTrailers(h: OutgoingHttpHeaders): void;
  destroy(err?: Error): unknown;
  once(ev: 'close' | 'drain', f: () => void): unknown;
}

type Req = Readable & { method?: string; url?: string; headers: http.IncomingHttpHeaders };

/** One request's record, filled as it goes and reported once when it ends. */
interface Exchange {
  started: number;
  method: string;
  target: string;
  host: string;
  grpc: boolean;
  flags: ResponseFlag[];
  status: number;
  grpcStatus?: number;
  requestBytes: number;
  responseBytes: number;
  attempts: number;
  rule?: RouteRule;
  upstream?: EndpointTarget;
  backend?: string;
  detail?: string;
  policy?: string;
  /** The DestinationRule the destination was served with. */
  destinationRule?: string;
  /** How long a fault delay held the request. */
  delayedMs?: number;
}

const now: Clock = () => performance.now();

export class L7Proxy {
  private readonly budgets = new Map<string, RetryBudget>();
  private readonly destinations = new Map<string, DestinationState>();
  private readonly random: Random;
  private readonly clock: Clock;
  /** HTTP/1.1 connections to endpoints, kept between requests. */
  readonly h1: KeepAlivePool;
  /** Token buckets of the rate limits; kept across reloads, so a reload does not hand out fresh bursts. */
  readonly limiter: RateLimiter;

  constructor(private readonly deps: ProxyDeps) {
    this.h1 = new KeepAlivePool((t) => deps.open(t as EndpointTarget));
    this.random = deps.random ?? Math.random;
    this.clock = deps.clock ?? now;
    this.limiter = new RateLimiter(this.clock);
  }

  /** Serves one request; never throws. */
  handle(req: Req, rawRes: unknown, d: Downstream): void {
    const res = rawRes as Res;
    const x: Exchange = {
      started: this.clock(),
      method: req.method ?? 'GET',
      target: req.url ?? '/',
      host: String(req.headers[':authority'] ?? req.headers.host ?? ''),
      grpc: String(req.headers['content-type'] ?? '').startsWith('application/grpc'),
      flags: [],
      status: 0,
      requestBytes: 0,
      responseBytes: 0,
      attempts: 0,
    };
    req.on('error', () => undefined);
    res.once('close', () => this.report(x, req, res, d));
    this.serve(req, res, d, x).catch((err: Error) => {
      this.deps.log.warn({ err: err.stack ?? String(err) }, 'waypoint request handler failed');
      local(res, x, 500, 'internal error\n');
    });
  }

  private async serve(req: Req, res: Res, d: Downstream, x: Exchange): Promise<void> {
    const view = this.deps.view();
    const svcKey = d.service ? serviceKey(d.service) : undefined;
    const verdict = view.authz.check({
      srcIdentity: d.srcIdentity,
      srcIp: d.srcIp,
      host: x.host,
      port: d.port,
      method: x.method,
      target: x.target,
      headers: req.headers,
      waypoint: this.deps.waypoint,
      ...(svcKey === undefined ? {} : { service: svcKey }),
    });
    x.policy = verdict.policy;
    if (!verdict.allow) {
      x.detail = `rbac_access_denied: ${verdict.reason}`;
      return void local(res, x, 403, RBAC_DENIED_BODY);
    }
    // After authorization, as Envoy's local rate limit filter runs after RBAC: a denied request spends no token.
    const limited = svcKey === undefined ? undefined : this.limiter.take(view.rateLimits, svcKey, d.srcIdentity);
    if (limited) {
      x.flags.push(RESPONSE_FLAGS.RL);
      x.detail = `local_rate_limited: ${limited.policy} ${limited.limit} ${limited.requestsPerSecond}/s`;
      this.deps.metrics.rateLimited(d.service?.hostname ?? '', limited.policy, limited.limit);
      return void local(res, x, 429, 'local_rate_limited');
    }

    let headers: Headers = { ...req.headers };
    let target = x.target;
    let host = x.host;
    let responseModifier: HeaderModifier | undefined;
    const mirrors: Extract<RouteFilter, { type: 'RequestMirror' }>[] = [];
    let backends: { service: string; port: number; weight: number; subset?: string }[];
    if (svcKey !== undefined && view.routes.has(svcKey, d.port)) {
      const c = view.routes.route(svcKey, d.port, { method: x.method, target, headers: req.headers });
      if (!c) {
        x.flags.push(RESPONSE_FLAGS.NR);
        return void local(res, x, 404, '');
      }
      x.rule = c.rule;
      for (const f of c.rule.filters) {
        if (f.type === 'RequestRedirect') {
          const r = redirect({ scheme: 'http', host, port: d.port, target }, c.match.path, f);
          return void local(res, x, r.status, '', { location: r.location });
        }
        if (f.type === 'RequestHeaderModifier') headers = modifyHeaders(headers, f.modifier);
        else if (f.type === 'ResponseHeaderModifier') responseModifier = f.modifier;
        else if (f.type === 'RequestMirror') mirrors.push(f);
        else if (f.type === 'URLRewrite') {
          const r = applyRewrite(target, c.match.path, f);
          target = r.target;
          if (r.host) host = r.host;
        }
      }
      backends = c.rule.backends;
      if (c.rule.fault) {
        // Envoy's fault filter runs before the router: a delayed request is held, an aborted one never leaves.
        const { delay, abort } = c.rule.fault;
        if (delay && this.random() * 100 < delay.percent) {
          x.flags.push(RESPONSE_FLAGS.DI);
          x.delayedMs = delay.ms;
          await sleep(delay.ms);
        }
        if (abort && this.random() * 100 < abort.percent) {
          x.flags.push(RESPONSE_FLAGS.FI);
          x.detail = 'fault_filter_abort';
          return void local(res, x, abort.status, 'fault filter abort');
        }
      }
    } else if (svcKey !== undefined) {
      backends = [{ service: svcKey, port: d.port, weight: 1 }];
    } else {
      backends = [];
    }

    const body = await readBody(req, this.deps.limits.maxRequestBodyBytes);
    if (body === 'aborted') {
      x.flags.push(RESPONSE_FLAGS.DC);
      return;
    }
    if (body === 'too_large') return void local(res, x, 413, 'request body too large\n');
    x.requestBytes = body.length;
    const out: OutgoingRequest = { method: x.method, target, host, headers, body, h2: d.h2 };
    for (const m of mirrors) if (this.random() * 100 < m.percent) this.mirror(view, m.backend, out);

    // The backend is chosen once per request (Envoy's weighted clusters); retries go to its other endpoints.
    const backend = backends.length > 0 ? pickWeighted(backends, this.random) : undefined;
    let endpoints: EndpointTarget[];
    // A destination as Envoy's cluster: a service port, or a subset of it; a pod addressed directly is one of its own.
    let destination: string;
    let cluster = '';
    let policy: EffectivePolicy = DEFAULT_POLICY;
    if (backend) {
      x.backend = backend.subset === undefined ? backend.service : `${backend.service} subset ${backend.subset}`;
      destination = `${backend.service}|${backend.port}|${backend.subset ?? ''}`;
      cluster = `outbound|${backend.port}|${backend.subset ?? ''}|${backend.service.slice(backend.service.indexOf('/') + 1)}`;
      const found = view.destinations ? view.destinations.policyFor(backend.service, backend.subset) : DEFAULT_POLICY;
      policy = found ?? DEFAULT_POLICY;
      // A subset no DestinationRule defines has no endpoints (Envoy has no such cluster): no healthy upstream.
      endpoints =
        found === undefined || (backend.subset !== undefined && !view.destinations)
          ? []
          : this.endpointsOf(view, backend.service, backend.port, policy);
      x.destinationRule = policy.rule;
    } else if (d.workload) {
      const ip = d.workload.addresses[0];
      destination = `${d.workload.namespace}/${d.workload.name}`;
      endpoints = ip === undefined ? [] : [{ ip, port: d.port, workload: d.workload, identity: view.store.identityOf(d.workload) }];
    } else {
      destination = '';
      endpoints = [];
    }
    await this.attempts(
      res,
      x,
      out,
      endpoints,
      backend?.service ?? destination,
      { key: destination, cluster },
      policy,
      d,
      responseModifier,
    );
  }

  /**
   * Sends a copy of the request to a mirror's service on the side (Envoy's
   * shadow: Host gets "-shadow"). Never awaited: its answer is read and
   * dropped, and its failure or slowness never touches the original.
   */
  mirror(view: WaypointView, m: MirrorBackend, out: OutgoingRequest): void {
    const found = view.destinations ? view.destinations.policyFor(m.service, m.subset) : DEFAULT_POLICY;
    const endpoints = found === undefined ? [] : this.endpointsOf(view, m.service, m.port, found);
    const ep = endpoints[Math.floor(this.random() * endpoints.length)];
    if (!ep) return;
    const host = out.host.replace(/^([^:]*)(.*)$/, '$1-shadow$2');
    const copy: OutgoingRequest = { ...out, host, headers: { ...out.headers, host, ...(out.h2 ? { ':authority': host } : {}) } };
    const cancel: { fire?: () => void } = {};
    void this.attempt(ep, copy, MIRROR_TIMEOUT_MS, cancel).then(
      (r) => {
        if (r.kind === 'response') {
          r.response.body.on('error', () => undefined);
          r.response.body.resume();
        }
      },
      () => undefined,
    );
  }

  private endpointsOf(view: WaypointView, key: string, port: number, policy: EffectivePolicy): EndpointTarget[] {
    const service = view.store.config.services.find((s) => serviceKey(s) === key);
    const sp = service?.ports.find((p) => p.port === port);
    if (!service || !sp) return [];
    return view.store.endpoints(service).flatMap((w) => {
      const ip = w.addresses[0];
      return ip === undefined || w.capacity <= 0 || !inSubset(w.labels, policy.labels)
        ? []
        : [{ ip, port: sp.targetPort, workload: w, identity: view.store.identityOf(w), service }];
    });
  }

  private destination(key: string): DestinationState {
    let s = this.destinations.get(key);
    if (s) return s;
    // Destinations come and go with the configuration: past the cap, an idle one goes (the oldest first).
    if (this.destinations.size >= this.deps.limits.maxBudgets) {
      for (const [k, v] of this.destinations)
        if (v.breaker.idle) {
          this.destinations.delete(k);
          break;
        }
    }
    s = new DestinationState(this.random, this.clock);
    this.destinations.set(key, s);
    return s;
  }

  /** Destination states kept (for tests and the config dump). */
  destinationStats(): Record<string, ReturnType<DestinationState['breaker']['stats']> & { ejected: number }> {
    const view = this.deps.view();
    const out: Record<string, ReturnType<DestinationState['breaker']['stats']> & { ejected: number }> = {};
    for (const [k, v] of this.destinations) {
      const [service = '', , subset] = k.split('|');
      const od = view.destinations?.policyFor(service, subset || undefined)?.outlierDetection;
      out[k] = { ...v.breaker.stats(), ejected: od ? v.outlier.ejectedCount(od) : 0 };
    }
    return out;
  }

  private budget(key: string): RetryBudget {
    let b = this.budgets.get(key);
    if (!b) {
      // Services come and go with the configuration: the oldest budget goes first past the cap.
      if (this.budgets.size >= this.deps.limits.maxBudgets) {
        const [oldest] = this.budgets.keys();
        if (oldest !== undefined) this.budgets.delete(oldest);
      }
      b = new RetryBudget();
      this.budgets.set(key, b);
    }
    return b;
  }

  private async attempts(
    res: Res,
    x: Exchange,
    out: OutgoingRequest,
    endpoints: EndpointTarget[],
    budgetKey: string,
    /** The destination's state key, and its Envoy cluster name for metrics ('' for a pod addressed directly). */
    destination: { key: string; cluster: string },
    policy: EffectivePolicy,
    d: Downstream,
    responseModifier: HeaderModifier | undefined,
  ): Promise<void> {
    const requestMs = x.rule?.timeouts.requestMs ?? this.deps.limits.defaultRequestMs;
    const backendMs = x.rule?.timeouts.backendRequestMs ?? 0;
    // An injected delay is not the upstream's time: as in Envoy, the route's timeout starts after it.
    const deadline = requestMs > 0 ? x.started + (x.delayedMs ?? 0) + requestMs : undefined;
    const dest = this.destination(destination.key);
    const overflow = (): void => {
      if (destination.cluster) this.deps.metrics.overflow(destination.cluster);
    };
    const pool = policy.connectionPool;
    const active = dest.breaker.request(pool);
    if (!active) {
      overflow();
      x.flags.push(RESPONSE_FLAGS.UO);
      x.detail = 'overflow: maxRequests';
      return void local(res, x, 503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow');
    }
    const budget = this.budget(budgetKey);
    const endRequest = budget.request();
    const retry = new RetryState(x.rule?.retry ?? ISTIO_DEFAULT_RETRY, budget, this.clock, this.random, deadline, () =>
      dest.breaker.retry(pool),
    );
    const tried = new Set<string>();
    const od = policy.outlierDetection;
    const hashInput = { headers: out.headers, srcIp: d.srcIp };
    const candidates = endpoints.map((e) => ({ id: `${e.ip}:${e.port}`, weight: e.workload.capacity, e }));
    let gone = false;
    const cancel: { fire?: () => void } = {};
    res.once('close', () => {
      gone = true;
      cancel.fire?.();
    });
    try {
      for (;;) {
        const conn = await this.connection(dest, pool, deadline, cancel);
        if (conn === 'overflow' || conn === 'timeout') {
          if (conn === 'overflow') overflow();
          x.flags.push(conn === 'overflow' ? RESPONSE_FLAGS.UO : RESPONSE_FLAGS.UT);
          x.detail = conn === 'overflow' ? 'overflow: maxConnections and maxPendingRequests' : 'timed out waiting for a connection';
          return void (conn === 'overflow'
            ? local(res, x, 503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow')
            : local(res, x, 504, 'upstream request timeout'));
        }
        if (conn === 'gone' || gone) {
          if (typeof conn === 'function') conn();
          x.flags.push(RESPONSE_FLAGS.DC);
          return;
        }
        const ep = dest.pick(policy, candidates, tried, hashInput);
        if (!ep) {
          conn();
          x.flags.push(RESPONSE_FLAGS.UH);
          return void local(res, x, 503, 'no healthy upstream');
        }
        tried.add(ep.id);
        x.upstream = ep.e;
        x.attempts++;
        const started = dest.start(ep.id);
        const done = (): void => {
          started();
          conn();
        };
        const left = deadline === undefined ? undefined : deadline - this.clock();
        const limit = [backendMs > 0 ? backendMs : undefined, left].filter((v): v is number => v !== undefined);
        const r = await this.attempt(
          ep.e,
          out,
          limit.length > 0 ? Math.max(0, Math.min(...limit)) : undefined,
          cancel,
          pool.maxRequestsPerConnection,
        );
        const result = r.kind === 'response' ? outlierResult(r.status, r.grpcStatus) : 'gateway';
        if (od && !gone && dest.outlier.record(ep.id, result, candidates.length, od) && destination.cluster)
          this.deps.metrics.ejected(destination.cluster);
        if (gone) {
          done();
          if (r.kind === 'response') r.response.abort();
          x.flags.push(RESPONSE_FLAGS.DC);
          return;
        }
        const decision = retry.next(r.kind === 'response' ? { kind: 'response', status: r.status, grpcStatus: r.grpcStatus } : r);
        if (decision.retry) {
          done();
          if (r.kind === 'response') r.response.abort();
          await sleep(decision.delayMs);
          if (gone) {
            x.flags.push(RESPONSE_FLAGS.DC);
            return;
          }
          continue;
        }
        if (decision.flag) x.flags.push(decision.flag);
        if (r.kind === 'response') return void (await this.relay(res, x, r.response, responseModifier, deadline).finally(done));
        done();
        x.detail = r.detail ?? r.kind;
        if (r.kind === 'backend-timeout') {
          x.flags.push(RESPONSE_FLAGS.UT);
          return void local(res, x, 504, 'upstream request timeout');
        }
        if (r.kind === 'connect-failure') {
          x.flags.push(RESPONSE_FLAGS.UF);
          return void local(res, x, 503, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure');
        }
        if (r.kind === 'reset' && r.protocolError) {
          x.flags.push(RESPONSE_FLAGS.UPE);
          return void local(res, x, 502, 'upstream protocol error');
        }
        x.flags.push(RESPONSE_FLAGS.UR);
        return void local(res, x, 503, 'upstream connect error or disconnect/reset before headers. reset reason: remote reset');
      }
    } finally {
      retry.finish();
      endRequest();
      active();
    }
  }

  /**
   * A connection of the destination's pool for one attempt: at once, after
   * a wait in its queue (bounded by the request's deadline and the client
   * staying), or refused when the queue is full.
   */
  private async connection(
    dest: DestinationState,
    pool: EffectivePolicy['connectionPool'],
    deadline: number | undefined,
    cancel: { fire?: () => void },
  ): Promise<(() => void) | 'overflow' | 'timeout' | 'gone'> {
    const a = dest.breaker.connection(pool);
    if (a === 'overflow') return 'overflow';
    let why: 'timeout' | 'gone' | undefined;
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(
            () => {
              why = 'timeout';
              a.cancel();
            },
            Math.max(0, deadline - this.clock()),
          );
    const before = cancel.fire;
    cancel.fire = () => {
      why = 'gone';
      a.cancel();
    };
    try {
      const release = await a.ready;
      if (release) return release;
      return why ?? 'gone';
    } finally {
      clearTimeout(timer);
      cancel.fire = before;
    }
  }

  /**
   * One attempt, bounded by limitMs (the backend timeout or what is left of
   * the request's) and ended early by cancel.fire (the client went away):
   * late answers are dropped and their streams closed.
   */
  private attempt(
    ep: EndpointTarget,
    out: OutgoingRequest,
    limitMs: number | undefined,
    cancel: { fire?: () => void },
    maxRequestsPerConnection = 0,
  ): Promise<AttemptResult> {
    let settled = false;
    let stream: Duplex | undefined;
    const work = (async (): Promise<AttemptResult> => {
      if (!out.h2) return this.h1.send(maxRequestsPerConnection > 0 ? { ...ep, maxRequests: maxRequestsPerConnection } : ep, out);
      try {
        stream = await this.deps.open(ep);
      } catch (err) {
        const e = err as { refused?: boolean; code?: string; message?: string };
        return e.refused ? { kind: 'refused-stream', detail: e.code } : { kind: 'connect-failure', detail: e.code ?? e.message };
      }
      if (settled) {
        stream.destroy();
        return { kind: 'reset', detail: 'abandoned' };
      }
      return sendOver(stream, out);
    })();
    return new Promise((resolve) => {
      const stop = (r: AttemptResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream?.destroy();
        void work.then((late) => {
          if (late.kind === 'response') late.response.abort();
        });
        resolve(r);
      };
      const timer = limitMs === undefined ? undefined : setTimeout(() => stop({ kind: 'backend-timeout' }), limitMs);
      cancel.fire = () => stop({ kind: 'reset', detail: 'client_gone' });
      void work.then((r) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** Streams the endpoint's answer to the client, within what is left of timeouts.request. */
  private relay(
    res: Res,
    x: Exchange,
    r: UpstreamResponse,
    modifier: HeaderModifier | undefined,
    deadline: number | undefined,
  ): Promise<void> {
    x.status = r.status;
    x.grpcStatus = r.grpcStatus;
    let headers = endToEnd(r.headers);
    if (modifier) headers = modifyHeaders(headers, modifier);
    res.writeHead(r.status, headers);
    return new Promise((resolve) => {
      const timer =
        deadline === undefined
          ? undefined
          : setTimeout(
              () => {
                x.flags.push(RESPONSE_FLAGS.UT);
                r.abort();
                res.destroy();
                resolve();
              },
              Math.max(0, deadline - this.clock()),
            );
      let ended = false;
      const end = (): void => {
        clearTimeout(timer);
        resolve();
      };
      r.body.on('data', (chunk: Buffer) => {
        x.responseBytes += chunk.length;
        if (!res.write(chunk)) {
          r.body.pause();
          res.once('drain', () => r.body.resume());
        }
      });
      r.body.once('end', () => {
        const trailers = r.trailers();
        const g = grpcStatusFrom(trailers);
        if (g !== undefined) x.grpcStatus = g;
        if (Object.keys(trailers).length > 0) res.addTrailers(endToEnd(trailers) as OutgoingHttpHeaders);
        ended = true;
        res.end();
        end();
      });
      r.body.once('close', () => {
        if (ended) return end();
        // The endpoint's stream ended before its body did: the client sees the cut.
        x.flags.push(RESPONSE_FLAGS.UC);
        res.destroy();
        end();
      });
      res.once('close', () => {
        if (!res.writableFinished) r.abort();
        end();
      });
    });
  }

  private report(x: Exchange, req: Req, res: Res, d: Downstream): void {
    if (!res.writableFinished && !x.flags.includes(RESPONSE_FLAGS.UT) && !x.flags.includes(RESPONSE_FLAGS.UC))
      x.flags.push(RESPONSE_FLAGS.DC);
    const view = this.deps.view();
    const src = verifiedSource(view.store, d.srcIp, d.srcIdentity, d.claim);
    const service = x.upstream?.service ?? d.service;
    const flags = formatFlags(x.flags);
    const status = x.status || (x.flags.includes(RESPONSE_FLAGS.DC) ? 0 : 500);
    const durationMs = this.clock() - x.started;
    this.deps.metrics.request(
      httpLabels({
        src: src.workload,
        srcPrincipal: d.srcIdentity,
        service,
        dst: x.upstream?.workload,
        dstPrincipal: x.upstream?.identity,
        protocol: x.grpc ? 'grpc' : 'http',
        status,
        grpcStatus: x.grpc ? grpcStatusLabel(x.grpcStatus) : '',
        flags,
      }),
      durationMs,
      x.requestBytes,
      x.responseBytes,
    );
    this.deps.log.info(
      {
        'src.addr': d.srcPort === undefined ? d.srcIp : `${d.srcIp}:${d.srcPort}`,
        'src.identity': d.srcIdentity,
        'src.workload': src.workload?.name,
        'dst.service': service?.hostname,
        'dst.workload': x.upstream?.workload.name,
        'dst.addr': x.upstream ? `${x.upstream.ip}:${x.upstream.port}` : undefined,
        'dst.identity': x.upstream?.identity,
        method: x.method,
        path: x.target,
        authority: x.host,
        protocol: d.h2 ? 'HTTP/2' : 'HTTP/1.1',
        'x-request-id': req.headers['x-request-id'],
        route: x.rule ? `${x.rule.origin.kind} ${x.rule.origin.namespace}/${x.rule.origin.name} rule ${x.rule.index}` : undefined,
        backend: x.backend,
        policy: x.policy,
        destination_rule: x.destinationRule,
        response_code: status,
        grpc_status: x.grpc ? grpcStatusLabel(x.grpcStatus) : undefined,
        response_flags: flags,
        attempts: x.attempts,
        bytes_received: x.requestBytes,
        bytes_sent: x.responseBytes,
        duration: `${durationMs.toFixed(3)}ms`,
        detail: x.detail,
      },
      'request complete',
    );
  }
}

/** A response of the waypoint's own (denial, no route, timeout…). */
function local(res: Res, x: Exchange, status: number, body: string, extra: OutgoingHttpHeaders = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  try {
    if (x.grpc) {
      // gRPC clients read the status from grpc-status: a trailers-only answer, as Envoy turns its local replies.
      x.status = 200;
      x.grpcStatus = grpcStatusOfHttp(status);
      res.writeHead(200, {
        'content-type': 'application/grpc',
        'grpc-status': String(x.grpcStatus),
        'grpc-message': encodeURIComponent(body),
      });
      res.end();
      return;
    }
    x.status = status;
    const b = Buffer.from(body);
    x.responseBytes = b.length;
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': b.length, ...extra });
    res.end(b);
  } catch {
    res.destroy();
  }
}

/** The gRPC status of an HTTP status, as gRPC and Envoy map them. */
function grpcStatusOfHttp(status: number): number {
  if (status === 400) return 13; // INTERNAL
  if (status === 401) return 16; // UNAUTHENTICATED
  if (status === 403) return 7; // PERMISSION_DENIED
  if (status === 404) return 12; // UNIMPLEMENTED
  if (status === 429 || status === 502 || status === 503 || status === 504) return 14; // UNAVAILABLE
  return 2; // UNKNOWN
}

/** The whole request body, up to max bytes (held for retries). */
function readBody(req: Readable, max: number): Promise<Buffer | 'too_large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (v: Buffer | 'too_large' | 'aborted'): void => {
      if (settled) return;
      settled = true;
      resolve(v);
    };
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.pause();
        return settle('too_large');
      }
      chunks.push(c);
    });
    req.once('end', () => settle(Buffer.concat(chunks, size)));
    req.once('close', () => settle('aborted'));
    req.once('error', () => settle('aborted'));
  });
}

/** How long a mirrored copy may take before it is dropped. */
const MIRROR_TIMEOUT_MS = 30_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
