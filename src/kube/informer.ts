// Keeps a local copy of one kind of object: list, then watch from the
// list's resourceVersion; when the watch ends it resumes from the last
// version seen, and relists when the server says that version is gone
// (410) or the request fails (with backoff). Emits 'changed' (coalesced per
// tick) and 'synced' once the first list is in. An optional kind (a CRD that
// may not be installed, such as Gateway API's) counts as synced and empty
// while the server does not know its path (404) or refuses it (403), and
// is asked again with the same backoff, so installing it later is noticed.
import { EventEmitter } from 'node:events';
import type { Logger } from '../observability/log';
import { type KubeClient, KubeError } from './client';
import type { KubeObject, WatchEvent } from './types';

export class Informer<T extends KubeObject> extends EventEmitter {
  private readonly items = new Map<string, T>();
  private resourceVersion = '';
  private readonly abort = new AbortController();
  private failures = 0;
  private pending = false;
  synced = false;

  constructor(
    private readonly client: KubeClient,
    private readonly path: string,
    private readonly log: Logger,
    private readonly opts: { optional?: boolean } = {},
  ) {
    super();
  }

  list(): T[] {
    return [...this.items.values()];
  }
  get(key: string): T | undefined {
    return this.items.get(key);
  }

  start(): this {
    void this.run();
    return this;
  }

  stop(): void {
    this.abort.abort();
  }

  whenSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((resolve) => this.once('synced', () => resolve()));
  }

  private async run(): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        if (!this.resourceVersion) await this.relist();
        await this.client.watch<T>(this.path, this.resourceVersion, (e) => this.apply(e), this.abort.signal);
        this.failures = 0;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const gone = err instanceof KubeError && err.status === 410;
        // 404: the CRD is not installed; 403: this account may not read it (RBAC). Either way, none of that kind.
        const absent = this.opts.optional && err instanceof KubeError && (err.status === 404 || err.status === 403);
        if (absent && !this.synced) {
          this.synced = true;
          this.emit('synced');
          this.log.warn(
            { path: this.path, err: (err as Error).message },
            'the API server does not serve this kind to us (CRD not installed, or no RBAC to list it); none are held, asked again later',
          );
        }
        if (gone || !(err instanceof KubeError)) this.resourceVersion = '';
        this.failures++;
        const delay = gone ? 0 : Math.min(30_000, 250 * 2 ** Math.min(this.failures, 7)) * (0.8 + 0.4 * Math.random());
        if (!absent)
          this.log.warn(
            { path: this.path, err: (err as Error).message, retryInMs: Math.round(delay) },
            'Kubernetes watch failed; keeping the objects held',
          );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async relist(): Promise<void> {
    const list = await this.client.list<T>(this.path);
    this.items.clear();
    for (const o of list.items) this.items.set(key(o), o);
    this.resourceVersion = list.metadata.resourceVersion;
    this.changed();
    if (!this.synced) {
      this.synced = true;
      this.emit('synced');
    }
  }

  private apply(e: WatchEvent<T>): void {
    if (e.type === 'ERROR') {
      // 410 Gone inside the stream: our version is too old; relist.
      throw new KubeError(e.object.code ?? 500, `watch ${this.path}: ${e.object.message ?? 'error event'}`);
    }
    if (e.object.metadata.resourceVersion) this.resourceVersion = e.object.metadata.resourceVersion;
    if (e.type === 'BOOKMARK') return;
    if (e.type === 'DELETED') this.items.delete(key(e.object));
    else this.items.set(key(e.object), e.object);
    this.changed();
  }

  private changed(): void {
    if (this.pending) return;
    this.pending = true;
    queueMicrotask(() => {
      this.pending = false;
      this.emit('changed');
    });
  }
}

const key = (o: KubeObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
