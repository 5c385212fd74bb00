// A small client for the API server: list, watch (newline-delimited JSON
// events) and create, over node:http/https with a bearer token re-read per
// request (projected tokens rotate). ambit needs only these three verbs;
// the official client is ESM-only from 1.0 and its 0.x line sits on the
// deprecated `request` package, so this stays in-house.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import readline from 'node:readline';
import { AmbitError } from '../errors';
import type { List, WatchEvent } from './types';

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeClientOptions {
  /** https://host:port (in a pod: from KUBERNETES_SERVICE_HOST/PORT), or http:// for a test server. */
  server: string;
  tokenFile?: string;
  caPem?: string;
}

export class KubeClient {
  private readonly url: URL;
  private readonly agent: http.Agent;

  constructor(private readonly opts: KubeClientOptions) {
    try {
      this.url = new URL(opts.server);
    } catch {
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        `--kube-api ${JSON.stringify(opts.server)} is not a URL`,
        'e.g. https://10.96.0.1:443; in a pod leave it out to use the in-cluster address',
      );
    }
    this.agent =
      this.url.protocol === 'https:' ? new https.Agent({ keepAlive: true, ca: opts.caPem }) : new http.Agent({ keepAlive: true });
  }

  /** The in-cluster API server and this pod's service-account credentials. */
  static inCluster(server?: string): KubeClient {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
    const url = server ?? (host ? `https://${host.includes(':') ? `[${host}]` : host}:${port}` : undefined);
    if (!url)
      throw new AmbitError(
        'AMBIT_E_CONFIG',
        'no API server: KUBERNETES_SERVICE_HOST is not set and --kube-api was not given',
        'run in a pod, or pass --kube-api URL',
      );
    const ca = url.startsWith('https:') && fs.existsSync(`${SA_DIR}/ca.crt`) ? fs.readFileSync(`${SA_DIR}/ca.crt`, 'utf8') : undefined;
    return new KubeClient({ server: url, tokenFile: fs.existsSync(`${SA_DIR}/token`) ? `${SA_DIR}/token` : undefined, caPem: ca });
  }

  get server(): string {
    return this.url.origin;
  }

  async list<T>(path: string): Promise<List<T>> {
    const res = await this.request('GET', path);
    return JSON.parse(await body(res)) as List<T>;
  }

  async create<T>(path: string, obj: unknown): Promise<T> {
    const res = await this.request('POST', path, JSON.stringify(obj));
    return JSON.parse(await body(res)) as T;
  }

  /**
   * Streams watch events from resourceVersion until the server ends the
   * watch or abort() is called. Resolves when the stream ends; rejects on
   * a failed request (the caller relists).
   */
  async watch<T>(path: string, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    const sep = path.includes('?') ? '&' : '?';
    const res = await this.request(
      'GET',
      `${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(resourceVersion)}`,
      undefined,
      signal,
    );
    const lines = readline.createInterface({ input: res });
    try {
      for await (const line of lines) if (line.trim()) onEvent(JSON.parse(line) as WatchEvent<T>);
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  }

  private request(method: string, path: string, payload?: string, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.opts.tokenFile) headers.Authorization = `Bearer ${fs.readFileSync(this.opts.tokenFile, 'utf8').trim()}`;
    if (payload) headers['Content-Type'] = 'application/json';
    const mod = this.url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(new URL(path, this.url), { method, headers, agent: this.agent, signal }, (res) => {
        if ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300) return resolve(res);
        void body(res).then((text) =>
          reject(new KubeError(res.statusCode ?? 0, `${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`)),
        );
      });
      req.on('error', reject);
      req.end(payload);
    });
  }
}

export class KubeError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function body(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      text += d;
    });
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}
