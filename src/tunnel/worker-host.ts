// The agent's side of the tunnel workers: a DataPlane that runs the tunnel
// in N child processes (`ambit worker`). Every worker gets every pod's three
// listening sockets (duplicates of the agent's fds) and accepts on them, so
// the kernel spreads connections over the workers and, while one dies or is
// replaced, the others — or the queue, with the agent still holding the
// sockets — take new connections: none is refused.
//   - a worker that exits unexpectedly is replaced after a backoff (0.1 s
//     doubling to 10 s, back to 0.1 s once a worker stayed up a minute): one
//     that crashes in a loop must not fork-bomb the node, and while it waits
//     the other workers, or the kernel's accept queue, hold new connections;
//   - roll(): new workers start and serve every pod, then the old ones drain;
//   - drain(): every worker stops accepting and finishes open connections.
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import type { EnrolledPod } from '../datapath/enrolment';
import { listenerHandle } from '../datapath/netns';
import { ROLES } from '../datapath/ports';
import type { WorkloadCert } from '../identity/cert-manager';
import type { MeshConfig } from '../state/types';
import type { ConnectionInfo, ConnectionList } from './connections';
import type { DataPlane, DataPlaneContext } from './data-plane';
import type { FromWorker, ToWorker, WireCert } from './ipc';

export interface WorkersOptions {
  count: number;
  pinDir: string;
  /** The `ambit` CLI script the workers run (`ambit worker`). */
  cli: string;
  /** Delay before replacing the first worker that died; doubles per death up to respawnMaxMs. Default 100 ms. */
  respawnInitialMs?: number;
  /** Default 10 s. */
  respawnMaxMs?: number;
  /** A worker that lived this long resets the backoff. Default 60 s. */
  respawnResetMs?: number;
}

interface Worker {
  id: number;
  child: ChildProcess;
  ready: boolean;
  serving: Set<string>;
  /** Draining or stopped on purpose: its exit needs no replacement. */
  retiring: boolean;
  startedAt: number;
}

const RELEASE_TIMEOUT_MS = 5000;
/** GET /connections waits this long for the workers (the CLI gives up at 5 s): a stuck one is named, not waited for. */
const CONNECTIONS_TIMEOUT_MS = 2000;
/** A rolling replacement gives up on a new worker that does not serve every pod in this time. */
const SERVING_TIMEOUT_MS = 30_000;

/**
 * V8 sized for a proxy. A worker's heap holds per-connection records and
 * short-lived objects; the bytes it relays live in Buffers outside the
 * heap. V8's default young generation grows to 3 × 16 MiB semi-spaces under
 * a steady stream of allocations and stays that big: at 1 MiB a scavenge
 * is cheap and frequent, and the resident set stays near the idle one.
 */
export const WORKER_V8_FLAGS = (process.env.AMBIT_WORKER_V8_FLAGS ?? '--max-semi-space-size=1').split(' ').filter(Boolean);

/**
 * One tunnel worker per CPU this process may run on: the CPUs of its
 * affinity mask (os.availableParallelism, not os.cpus, which counts the
 * host's), fewer when its cgroup's CPU quota (cgroup v2 cpu.max, a pod's
 * CPU limit) allows less; at least one.
 */
export function defaultWorkerCount(procRoot = '/proc', cgroupRoot = '/sys/fs/cgroup'): number {
  const cpus = os.availableParallelism();
  const quota = cpuQuota(procRoot, cgroupRoot);
  return Math.max(1, Math.min(cpus, quota === undefined ? cpus : Math.ceil(quota)));
}

/** The smallest CPU quota (in CPUs) on the way from this process's cgroup to the root; none when unlimited or unknown. */
function cpuQuota(procRoot: string, cgroupRoot: string): number | undefined {
  let own: string | undefined;
  try {
    own = /^0::(\/.*)$/m.exec(fs.readFileSync(`${procRoot}/self/cgroup`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
  if (own === undefined) return undefined; // cgroup v1: no cpu.max
  let least: number | undefined;
  for (let dir = own; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
    try {
      const [max, period] = fs
        .readFileSync(`${cgroupRoot}${dir === '/' ? '' : dir}/cpu.max`, 'utf8')
        .trim()
        .split(' ');
      if (max !== 'max' && Number(max) > 0 && Number(period) > 0) least = Math.min(least ?? Infinity, Number(max) / Number(period));
    } catch {
      // the root cgroup has no cpu.max; a namespace may hide its ancestors
    }
    if (dir === '/') return least;
  }
}

const toWire = (c: WorkloadCert): WireCert => ({ ...c, notBefore: c.notBefore.toISOString(), notAfter: c.notAfter.toISOString() });

export class WorkersDataPlane implements DataPlane {
  private workers: Worker[] = [];
  private readonly pods = new Map<string, { pod: EnrolledPod; identity: string }>();
  private nextId = 1;
  private metricsRequest = 0;
  private readonly metricsWaiting = new Map<number, { left: number; parts: unknown[]; done: (parts: unknown[]) => void }>();
  private connectionsRequest = 0;
  private readonly connectionsWaiting = new Map<number, { left: Set<Worker>; list: ConnectionList; done: () => void }>();
  private stopping = false;
  /** removePod calls waiting for the workers to close their copies of a pod's sockets. */
  private readonly releasing = new Map<string, { left: Set<Worker>; done: () => void }>();
  private readonly onCert = (_id: string, c: WorkloadCert): void => this.broadcast({ t: 'cert', cert: toWire(c) });
  /** Unexpected worker deaths since the last worker that stayed up respawnResetMs. */
  private deaths = 0;
  private readonly respawns = new Set<NodeJS.Timeout>();

  constructor(
    private readonly ctx: DataPlaneContext,
    private readonly opts: WorkersOptions,
  ) {
    ctx.certs.on('updated', this.onCert);
    for (let i = 0; i < opts.count; i++) this.spawn();
  }

  addPod(pod: EnrolledPod, identity: string, cert: WorkloadCert | undefined): void {
    this.pods.set(pod.workload.uid, { pod, identity });
    for (const w of this.workers) {
      if (cert) this.send(w, { t: 'cert', cert: toWire(cert) });
      this.sendPod(w, pod, identity);
    }
  }

  /** Resolves once every worker closed its copies of the pod's sockets (or exited). */
  removePod(uid: string): Promise<void> {
    this.pods.delete(uid);
    const left = new Set(this.workers.filter((w) => w.child.connected));
    this.broadcast({ t: 'unpod', uid });
    for (const w of this.workers) w.serving.delete(uid);
    if (!left.size) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.ctx.log.warn({ pod: uid, workers: [...left].map((w) => w.id) }, 'workers did not confirm closing the pod sockets in time');
        finish();
      }, RELEASE_TIMEOUT_MS);
      const finish = (): void => {
        clearTimeout(timer);
        this.releasing.delete(uid);
        resolve();
      };
      this.releasing.set(uid, { left, done: finish });
    });
  }

  private released(w: Worker, uid: string): void {
    const r = this.releasing.get(uid);
    if (r?.left.delete(w) && r.left.size === 0) r.done();
  }

  configChanged(config: MeshConfig): void {
    this.broadcast({ t: 'config', config });
  }

  setLogLevel(level: string): void {
    this.broadcast({ t: 'log', level });
  }

  pending(): string[] {
    const live = this.workers.filter((w) => !w.retiring);
    if (!live.some((w) => w.ready)) return ['tunnel workers starting'];
    return [...this.pods.keys()]
      .filter((uid) => !live.some((w) => w.serving.has(uid)))
      .map((uid) => `no tunnel worker serves pod ${uid} yet`);
  }

  /** Replaces every worker: the new ones start and serve every pod before the old ones drain. */
  async roll(drainMs: number): Promise<void> {
    const old = this.workers.filter((w) => !w.retiring);
    const fresh = old.map(() => this.spawn());
    await Promise.all(fresh.map((w) => this.untilServing(w)));
    await Promise.all(old.map((w) => this.retire(w, drainMs)));
  }

  async drain(deadlineMs: number): Promise<void> {
    this.stopping = true;
    for (const t of this.respawns) clearTimeout(t);
    this.respawns.clear();
    await Promise.all(this.workers.map((w) => this.retire(w, deadlineMs)));
  }

  /** Metrics of every worker (prom-client JSON), for the agent to aggregate with its own. */
  collect(): Promise<unknown[]> {
    const live = this.workers.filter((w) => w.ready && !w.retiring && w.child.connected);
    if (!live.length) return Promise.resolve([]);
    const id = ++this.metricsRequest;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.metricsWaiting.delete(id);
        resolve([]);
      }, 2000);
      this.metricsWaiting.set(id, {
        left: live.length,
        parts: [],
        done: (parts) => {
          clearTimeout(timer);
          resolve(parts);
        },
      });
      for (const w of live) this.send(w, { t: 'metrics', id });
    });
  }

  /**
   * The connections every worker carries, each row with its worker's id.
   * Draining workers are asked too: they still carry what they had.
   */
  connections(): Promise<ConnectionList> {
    const asked = this.workers.filter((w) => w.ready && w.child.connected);
    const list: ConnectionList = { connections: [], total: 0, unanswered: [] };
    if (!asked.length) return Promise.resolve(list);
    const id = ++this.connectionsRequest;
    return new Promise((resolve) => {
      const left = new Set(asked);
      const done = (): void => {
        clearTimeout(timer);
        this.connectionsWaiting.delete(id);
        list.unanswered = [...left].map((w) => `worker ${w.id} (pid ${w.child.pid}) did not answer within ${CONNECTIONS_TIMEOUT_MS} ms`);
        resolve(list);
      };
      const timer = setTimeout(done, CONNECTIONS_TIMEOUT_MS);
      this.connectionsWaiting.set(id, { left, list, done });
      for (const w of asked) this.send(w, { t: 'connections', id });
    });
  }

  /** A worker's answer to request id; none when it exited (its connections went with it). */
  private connectionsFrom(w: Worker, id: number, answer?: { connections: ConnectionInfo[]; total: number }): void {
    const req = this.connectionsWaiting.get(id);
    if (!req?.left.delete(w)) return;
    if (answer) {
      for (const c of answer.connections) req.list.connections.push({ ...c, worker: w.id });
      req.list.total += answer.total;
    }
    if (req.left.size === 0) req.done();
  }

  /** Process ids of the workers alive now (operators and tests tell a replacement from a survivor). */
  pids(): number[] {
    return this.workers.flatMap((w) =>
      w.child.pid !== undefined && w.child.exitCode === null && w.child.signalCode === null ? [w.child.pid] : [],
    );
  }

  stop(): void {
    this.stopping = true;
    for (const t of this.respawns) clearTimeout(t);
    this.respawns.clear();
    this.ctx.certs.off('updated', this.onCert);
    for (const w of this.workers) {
      w.retiring = true;
      w.child.kill('SIGTERM');
    }
  }

  private spawn(): Worker {
    const child = fork(this.opts.cli, ['worker'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // The agent's own flags (a profiler, say) still reach its workers.
      execArgv: [...process.execArgv, ...WORKER_V8_FLAGS],
    });
    const w: Worker = { id: this.nextId++, child, ready: false, serving: new Set(), retiring: false, startedAt: Date.now() };
    this.workers.push(w);
    this.ctx.log.info({ worker: w.id, pid: child.pid }, 'worker started');
    child.on('message', (m: FromWorker) => this.onMessage(w, m));
    child.on('error', (err) => this.ctx.log.warn({ worker: w.id, err: err.message }, 'worker channel error'));
    child.once('exit', (code, signal) => {
      this.workers = this.workers.filter((x) => x !== w);
      for (const uid of [...this.releasing.keys()]) this.released(w, uid); // a dead worker holds nothing
      for (const id of [...this.connectionsWaiting.keys()]) this.connectionsFrom(w, id);
      if (w.retiring || this.stopping) return;
      // Its connections are gone; the sockets are not: a replacement accepts what queued meanwhile.
      const delayMs = this.respawnDelay(Date.now() - w.startedAt);
      this.ctx.log.warn(
        { worker: w.id, pid: child.pid, code, signal, delayMs, deaths: this.deaths },
        'worker exited; starting a replacement',
      );
      const timer = setTimeout(() => {
        this.respawns.delete(timer);
        if (!this.stopping) this.spawn();
      }, delayMs);
      this.respawns.add(timer);
    });
    this.send(w, {
      t: 'init',
      pinDir: this.opts.pinDir,
      mode: this.ctx.mode,
      config: this.ctx.store.config,
      logLevel: this.ctx.log.level,
      limits: this.ctx.limits,
      probeSources: this.ctx.probeSources,
    });
    for (const c of this.ctx.certs.certificates()) this.send(w, { t: 'cert', cert: toWire(c) });
    for (const { pod, identity } of this.pods.values()) this.sendPod(w, pod, identity);
    return w;
  }

  /** Exponential in the deaths since a worker last lived respawnResetMs. */
  private respawnDelay(livedMs: number): number {
    const initial = this.opts.respawnInitialMs ?? 100;
    const max = this.opts.respawnMaxMs ?? 10_000;
    if (livedMs >= (this.opts.respawnResetMs ?? 60_000)) this.deaths = 0;
    const delay = Math.min(max, initial * 2 ** Math.min(this.deaths, 30));
    this.deaths++;
    return delay;
  }

  private sendPod(w: Worker, pod: EnrolledPod, identity: string): void {
    for (const role of ROLES) {
      const msg: ToWorker = { t: 'pod', uid: pod.workload.uid, podId: pod.podId, identity, netns: pod.netns.path, role };
      // Node closes our copy of the handle once it has been sent.
      if (w.child.connected)
        w.child.send(msg, listenerHandle(pod.listeners[role]), (err) => {
          if (err) this.ctx.log.warn({ worker: w.id, err: err.message }, 'sending a listener failed');
        });
    }
  }

  private onMessage(w: Worker, m: FromWorker): void {
    switch (m.t) {
      case 'ready':
        w.ready = true;
        return;
      case 'serving':
        w.serving.add(m.uid);
        return;
      case 'released':
        this.released(w, m.uid);
        return;
      case 'cert?':
        // Either answer is sent: a worker's connections wait for it.
        this.ctx.certs.fetch(m.identity).then(
          (c) => this.send(w, { t: 'cert', cert: toWire(c) }),
          (err: Error) => {
            this.ctx.log.warn(
              { identity: m.identity, worker: w.id, code: (err as NodeJS.ErrnoException).code, err: err.message },
              'certificate for a worker failed',
            );
            this.send(w, { t: 'certFailed', identity: m.identity, message: err.message });
          },
        );
        return;
      case 'metrics': {
        const req = this.metricsWaiting.get(m.id);
        if (!req) return;
        req.parts.push(m.data);
        if (--req.left === 0) {
          this.metricsWaiting.delete(m.id);
          req.done(req.parts);
        }
        return;
      }
      case 'connections':
        this.connectionsFrom(w, m.id, m);
        return;
      case 'drained':
        this.ctx.log.info({ worker: w.id, left: m.left }, 'worker drained');
        return;
    }
  }

  private untilServing(w: Worker): Promise<void> {
    const deadline = Date.now() + SERVING_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const check = setInterval(() => {
        if (w.ready && [...this.pods.keys()].every((uid) => w.serving.has(uid))) {
          clearInterval(check);
          resolve();
        } else if (w.child.exitCode !== null || w.child.signalCode !== null) {
          clearInterval(check);
          reject(new Error(`worker ${w.id} exited before serving`));
        } else if (Date.now() > deadline) {
          clearInterval(check);
          reject(new Error(`worker ${w.id} did not serve every pod within ${SERVING_TIMEOUT_MS} ms`));
        }
      }, 20);
    });
  }

  private retire(w: Worker, deadlineMs: number): Promise<void> {
    w.retiring = true;
    if (w.child.exitCode !== null || w.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const kill = setTimeout(() => w.child.kill('SIGKILL'), deadlineMs + 2000);
      w.child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      this.send(w, { t: 'drain', deadlineMs });
    });
  }

  private send(w: Worker, m: ToWorker): void {
    // A worker dying between the check and the write is an answer in the callback, not an 'error' event.
    if (w.child.connected)
      w.child.send(m, (err) => {
        if (err) this.ctx.log.debug({ worker: w.id, err: err.message }, 'message to a worker not delivered');
      });
  }

  private broadcast(m: ToWorker): void {
    for (const w of this.workers) this.send(w, m);
  }
}
