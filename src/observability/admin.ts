// The operator's three HTTP endpoints, on ztunnel's ports:
//   :15000 (localhost only) admin — GET /config_dump, GET /connections, POST /logging?level=,
//          POST /quitquitquit (mutations need `x-ambit-admin: true`, no
//          Origin, a loopback Host: see admin-guard.ts)
//   :15020 Prometheus — GET /metrics, GET /stats/prometheus
//   :15021 readiness — GET /healthz/ready: 200 "ready", or 503 with the
//          tasks still pending, one per line; either way followed by the
//          pods pending enrolment, which do not make the process not ready
import http from 'node:http';
import { refusal } from './admin-guard';
import type { Logger } from './log';
import { RateLimitedLog } from './rate-limited';

export interface Readiness {
  /** What this process still lacks to serve; any makes it not ready (503). */
  pending: string[];
  /**
   * Pods it should capture but has not yet, and why. Listed in the answer
   * but never a reason for 503: a pod waiting for its sandbox or whose
   * netns vanished is that pod's problem, and a node agent marked not ready
   * would only be taken out of rotation, not fix it (ztunnel does the same).
   */
  pods?: { uid: string; why: string }[];
}

/** Pods listed by /healthz/ready at most: the kubelet reads 10 KiB of a probe's answer, a human a screenful. */
export const MAX_READY_PODS = 50;

export interface AdminDeps {
  /** The exposition; undefined while still starting. */
  metrics: () => Promise<string> | undefined;
  readiness: () => Readiness;
  configDump: () => unknown;
  /** The connections open now; undefined while still starting (absent: this process carries none). */
  connections?: () => Promise<unknown> | undefined;
  log: Logger;
  /** Applies a new log level (this process and its workers). */
  setLogLevel: (level: string) => void;
  quit: () => void;
}

export interface AdminPorts {
  admin: number;
  stats: number;
  ready: number;
}
export const DEFAULT_PORTS: AdminPorts = { admin: 15000, stats: 15020, ready: 15021 };
const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

/**
 * Bounds on what a client can make these servers hold. The endpoints take
 * no bodies and answer at once, so honest clients (curl, Prometheus, the
 * kubelet) never come near them; a slow or idle one is cut.
 */
export interface AdminLimits {
  /** Request headers must arrive within this. */
  headersTimeoutMs: number;
  /** The whole request (headers and any body) must arrive within this. */
  requestTimeoutMs: number;
  /** A kept-alive connection with no request for this long is closed. */
  keepAliveTimeoutMs: number;
  /** Request bodies larger than this are refused (413) and the connection closed. */
  maxBodyBytes: number;
  /** Open connections per server; past it new ones are closed at once. */
  maxConnections: number;
}

export const DEFAULT_ADMIN_LIMITS: AdminLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 5_000,
  maxBodyBytes: 4096,
  maxConnections: 64,
};

/** ports in the answer are the bound ones (differ from the asked when those are 0). */
export async function startAdmin(
  deps: AdminDeps,
  ports: AdminPorts = DEFAULT_PORTS,
  limits: Partial<AdminLimits> = {},
): Promise<{ close: () => void; ports: AdminPorts }> {
  const l: AdminLimits = { ...DEFAULT_ADMIN_LIMITS, ...limits };
  const log = deps.log.child({ component: 'admin' });
  // A page in a local browser can send forged requests in a loop: one line per kind per interval.
  const warnings = new RateLimitedLog(log);
  const servers = await Promise.all([
    listen(ports.admin, '127.0.0.1', l, log, (req, res) => admin(deps, warnings, req, res)),
    listen(ports.stats, '0.0.0.0', l, log, (req, res) => stats(deps, req, res)),
    listen(ports.ready, '0.0.0.0', l, log, (req, res) => ready(deps, req, res)),
  ] as const);
  const bound = (s: http.Server): number => (s.address() as { port: number }).port;
  return {
    close: () => {
      for (const s of servers) {
        s.close();
        s.closeAllConnections();
      }
    },
    ports: { admin: bound(servers[0]), stats: bound(servers[1]), ready: bound(servers[2]) },
  };
}

function listen(port: number, host: string, l: AdminLimits, log: Logger, handler: http.RequestListener): Promise<http.Server> {
  return new Promise((resolve, reject) => {
    const s = http.createServer(
      {
        headersTimeout: l.headersTimeoutMs,
        requestTimeout: l.requestTimeoutMs,
        keepAliveTimeout: l.keepAliveTimeoutMs,
        // Node checks the two timeouts above only this often (30 s by default),
        // which would let a slow client stay three times as long as allowed.
        connectionsCheckingInterval: Math.max(100, Math.min(1000, l.headersTimeoutMs / 4)),
        maxHeaderSize: 16 * 1024,
      },
      (req, res) => {
        if (!withinBody(req, res, l.maxBodyBytes)) return;
        try {
          handler(req, res);
        } catch (err) {
          // A request target URL cannot parse, or a dump throws: this request's failure only.
          log.warn({ port, err: (err as Error).message }, 'admin request failed');
          if (!res.headersSent)
            send(
              res,
              err instanceof TypeError && (err as NodeJS.ErrnoException).code === 'ERR_INVALID_URL' ? 400 : 500,
              `${(err as Error).message}\n`,
            );
          else res.destroy();
        }
      },
    );
    s.maxConnections = l.maxConnections;
    // A socket that is idle between the checks above (say, half a request line) is cut too.
    s.setTimeout(l.requestTimeoutMs, (socket) => socket.destroy());
    s.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // Node's default answers 400/408 and closes; keep that, quietly: a port scanner is not news.
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      if (socket.writable && err.code !== 'ECONNRESET') socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
      else socket.destroy();
    });
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        Object.assign(err, {
          message: `cannot listen on ${host}:${port}: ${err.code}; is another ambit running in this network namespace?`,
        }),
      ),
    );
    s.listen(port, host, () => {
      s.on('error', (err: Error) => log.error({ port, err: err.message }, 'admin endpoint error'));
      resolve(s);
    });
  });
}

/** No endpoint takes a body; one is read (so the connection can be reused) up to max, past that refused. */
function withinBody(req: http.IncomingMessage, res: http.ServerResponse, max: number): boolean {
  const refuse = (): void => {
    if (!res.headersSent) {
      res.writeHead(413, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`request body over ${max} bytes; these endpoints take none\n`);
    }
    req.socket.destroySoon();
  };
  if (Number(req.headers['content-length'] ?? 0) > max) {
    refuse();
    return false;
  }
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > max) refuse();
  });
  req.on('error', () => req.socket.destroy());
  return true;
}

function send(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

function admin(deps: AdminDeps, warnings: RateLimitedLog, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const why = refusal(req, req.method !== 'GET' && req.method !== 'HEAD');
  if (why) {
    warnings.warn(why.kind, { method: req.method, path: url.pathname.slice(0, 100), detail: why.message }, 'admin request refused');
    return void send(res, 403, `refused: ${why.message}\n`);
  }
  if (req.method === 'GET' && url.pathname === '/config_dump') {
    return void send(
      res,
      200,
      `${JSON.stringify(deps.configDump(), (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`,
      'application/json',
    );
  }
  if (req.method === 'GET' && url.pathname === '/connections') {
    const listed = deps.connections?.();
    if (!listed) return void send(res, 503, 'starting\n');
    listed.then(
      (body) => send(res, 200, `${JSON.stringify(body, null, 2)}\n`, 'application/json'),
      (err: Error) => send(res, 500, `${err.message}\n`),
    );
    return;
  }
  if (req.method === 'POST' && url.pathname === '/logging') {
    const level = url.searchParams.get('level');
    if (!level) return void send(res, 200, `level=${deps.log.level}\n`);
    if (!LEVELS.has(level)) return void send(res, 400, `unknown level ${JSON.stringify(level)}; use one of ${[...LEVELS].join(', ')}\n`);
    deps.setLogLevel(level);
    deps.log.warn({ level }, 'log level changed');
    return void send(res, 200, `level=${level}\n`);
  }
  if (req.method === 'POST' && url.pathname === '/quitquitquit') {
    send(res, 200, 'OK\n');
    setImmediate(deps.quit);
    return;
  }
  send(res, 404, 'GET /config_dump · GET /connections · POST /logging?level=debug · POST /quitquitquit\n');
}

function stats(deps: AdminDeps, req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (req.method !== 'GET' || (path !== '/metrics' && path !== '/stats/prometheus')) return void send(res, 404, 'GET /metrics\n');
  const text = deps.metrics();
  if (!text) return void send(res, 503, 'starting\n');
  text.then(
    (body) => send(res, 200, body, 'text/plain; version=0.0.4; charset=utf-8'),
    (err: Error) => send(res, 500, `${err.message}\n`),
  );
}

function ready(deps: AdminDeps, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://localhost').pathname !== '/healthz/ready')
    return void send(res, 404, 'GET /healthz/ready\n');
  const { pending, pods = [] } = deps.readiness();
  const head = pending.length === 0 ? 'ready\n' : `not ready:\n${pending.map((p) => `- ${p}`).join('\n')}\n`;
  send(res, pending.length === 0 ? 200 : 503, head + podLines(pods));
}

function podLines(pods: { uid: string; why: string }[]): string {
  if (!pods.length) return '';
  const shown = pods.slice(0, MAX_READY_PODS).map((p) => `- ${p.uid}: ${p.why}\n`);
  const more = pods.length > MAX_READY_PODS ? `- … and ${pods.length - MAX_READY_PODS} more (GET :15000/config_dump lists all)\n` : '';
  return `pods pending enrolment (not captured yet; they do not make this process not ready):\n${shown.join('')}${more}`;
}
