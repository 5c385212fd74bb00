// The operator's three HTTP endpoints, on ztunnel's ports:
//   :15000 (localhost only) admin — GET /config_dump, POST /logging?level=,
//          POST /quitquitquit
//   :15020 Prometheus — GET /metrics, GET /stats/prometheus
//   :15021 readiness — GET /healthz/ready: 200 "ready", or 503 with the
//          tasks still pending, one per line
import http from 'node:http';
import type { Logger } from './log';

export interface Readiness { pending: string[] }

export interface AdminDeps {
  /** The exposition; undefined while still starting. */
  metrics: () => Promise<string> | undefined;
  readiness: () => Readiness;
  configDump: () => unknown;
  log: Logger;
  /** Applies a new log level (this process and its workers). */
  setLogLevel: (level: string) => void;
  quit: () => void;
}

export interface AdminPorts { admin: number; stats: number; ready: number }
export const DEFAULT_PORTS: AdminPorts = { admin: 15000, stats: 15020, ready: 15021 };
const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

export async function startAdmin(deps: AdminDeps, ports: AdminPorts = DEFAULT_PORTS): Promise<{ close: () => void }> {
  const servers = await Promise.all([
    listen(ports.admin, '127.0.0.1', (req, res) => admin(deps, req, res)),
    listen(ports.stats, '0.0.0.0', (req, res) => stats(deps, req, res)),
    listen(ports.ready, '0.0.0.0', (req, res) => ready(deps, req, res)),
  ]);
  return { close: () => { for (const s of servers) s.close(); } };
}

function listen(port: number, host: string, handler: http.RequestListener): Promise<http.Server> {
  return new Promise((resolve, reject) => {
    const s = http.createServer(handler);
    s.once('error', (err: NodeJS.ErrnoException) => reject(Object.assign(err, { message: `cannot listen on ${host}:${port}: ${err.code}; is another ambit running in this network namespace?` })));
    s.listen(port, host, () => resolve(s));
  });
}

function send(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

function admin(deps: AdminDeps, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/config_dump') {
    return send(res, 200, `${JSON.stringify(deps.configDump(), (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`, 'application/json');
  }
  if (req.method === 'POST' && url.pathname === '/logging') {
    const level = url.searchParams.get('level');
    if (!level) return send(res, 200, `level=${deps.log.level}\n`);
    if (!LEVELS.has(level)) return send(res, 400, `unknown level ${JSON.stringify(level)}; use one of ${[...LEVELS].join(', ')}\n`);
    deps.setLogLevel(level);
    deps.log.warn({ level }, 'log level changed');
    return send(res, 200, `level=${level}\n`);
  }
  if (req.method === 'POST' && url.pathname === '/quitquitquit') {
    send(res, 200, 'OK\n');
    setImmediate(deps.quit);
    return;
  }
  send(res, 404, 'GET /config_dump · POST /logging?level=debug · POST /quitquitquit\n');
}

function stats(deps: AdminDeps, req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (req.method !== 'GET' || (path !== '/metrics' && path !== '/stats/prometheus')) return send(res, 404, 'GET /metrics\n');
  const text = deps.metrics();
  if (!text) return send(res, 503, 'starting\n');
  text.then(
    (body) => send(res, 200, body, 'text/plain; version=0.0.4; charset=utf-8'),
    (err: Error) => send(res, 500, `${err.message}\n`),
  );
}

function ready(deps: AdminDeps, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://localhost').pathname !== '/healthz/ready') return send(res, 404, 'GET /healthz/ready\n');
  const { pending } = deps.readiness();
  if (pending.length === 0) return send(res, 200, 'ready\n');
  send(res, 503, `not ready:\n${pending.map((p) => `- ${p}`).join('\n')}\n`);
}
