// A tunnel worker process (`ambit worker`, started by the agent): the data
// path only. It receives the configuration, certificates and each pod's
// listening sockets from the agent over IPC and serves them with a Tunnel;
// it opens the pinned datapath maps itself (read-only use: original
// destinations). A worker can die or be replaced at any time: the sockets
// stay open in the agent and in the other workers, so the kernel keeps
// queueing connections and no new one is refused. An error that escapes a
// connection's own handling is logged with its stack and counted
// (ambit_uncaught_errors_total), and the worker keeps serving its other
// connections; only a broken state or a storm of such errors ends it, and
// the agent starts a replacement with backoff.
import net from 'node:net';
import client from 'prom-client';
import { DatapathMaps } from '../datapath/maps';
import { Netns } from '../datapath/netns';
import { type PerRole, ROLES } from '../datapath/ports';
import { openPinnedMaps } from '../datapath/status';
import { AmbitError } from '../errors';
import { installLastResort } from '../observability/last-resort';
import { createLogger } from '../observability/log';
import { Metrics } from '../observability/metrics';
import { RateLimitedLog } from '../observability/rate-limited';
import { PolicyAuthorizer } from '../policy/engine';
import { MeshStore } from '../state/store';
import type { FromWorker, ToWorker } from './ipc';
import { type TunnelLimits, tunnelLimits } from './limits';
import { RemoteCerts } from './remote-certs';
import { Tunnel } from './tunnel';

function send(m: FromWorker): void {
  // With a callback a closed channel is an answer, not an 'error' event on the process.
  if (process.connected) process.send?.(m, undefined, undefined, () => undefined);
}

/** A pod whose three sockets are arriving; connections accepted meanwhile wait in `parked`. */
interface PendingPod {
  podId: number;
  identity: string;
  netns: string;
  servers: Partial<PerRole<net.Server>>;
  parked: [net.Server, net.Socket][];
}

/** A pod's servers once every role (ROLES) has arrived. */
function complete<T>(servers: Partial<PerRole<T>>): PerRole<T> | undefined {
  return ROLES.every((r) => servers[r] !== undefined) ? (servers as PerRole<T>) : undefined;
}

export function runWorker(): void {
  if (!process.send) throw new AmbitError('AMBIT_E_CONFIG', '`ambit worker` is started by `ambit node`, not by hand');
  const log = createLogger();
  const metrics = new Metrics();
  const uncaught = new client.Counter({
    name: 'ambit_uncaught_errors_total',
    help: "Errors that escaped their connection's handling (bugs), by kind; the process kept serving",
    labelNames: ['kind'],
    registers: [metrics.registry],
  });
  installLastResort({ log, role: 'tunnel worker', count: (kind) => uncaught.inc({ kind }) });
  let limits: TunnelLimits = tunnelLimits();
  const certs = new RemoteCerts(send, () => limits.certificateWaitMs);
  const warn = new RateLimitedLog(log);
  let tunnel: Tunnel | undefined;
  let store: MeshStore | undefined;
  const pending = new Map<string, PendingPod>();
  const netnsOf = new Map<string, Netns>();

  process.on('message', (m: ToWorker, handle?: net.Socket) => {
    switch (m.t) {
      case 'init': {
        log.level = m.logLevel;
        limits = tunnelLimits(m.limits);
        try {
          const state = new MeshStore(m.config);
          store = state;
          const maps = new DatapathMaps(openPinnedMaps(m.pinDir));
          tunnel = new Tunnel({
            store: state,
            certs,
            maps,
            mode: m.mode,
            metrics,
            authorizer: PolicyAuthorizer.following(() => state.config),
            limits: m.limits,
            probeSources: m.probeSources,
            log,
          });
        } catch (err) {
          // Nothing to serve with: a replacement may find the pins (or a fixed configuration).
          log.fatal({ code: (err as AmbitError).code, err: (err as Error).message }, 'tunnel worker could not start');
          process.exit(70);
        }
        send({ t: 'ready' });
        return;
      }
      case 'config':
        store?.replace(m.config);
        return;
      case 'cert':
        certs.put(m.cert);
        return;
      case 'certFailed':
        certs.failed(m.identity, m.message);
        return;
      case 'log':
        log.level = m.level;
        return;
      case 'pod': {
        if (!handle || !tunnel || !store) return;
        const p: PendingPod = pending.get(m.uid) ?? { podId: m.podId, identity: m.identity, netns: m.netns, servers: {}, parked: [] };
        pending.set(m.uid, p);
        // Listen at once (the handle is only good in this tick); connections
        // that arrive before the pod's three sockets are complete are parked.
        const server = net.createServer({ allowHalfOpen: true, noDelay: true });
        // accept() failing (EMFILE, ENFILE, ENOBUFS) is an 'error' on the server: the listener stays open, say so.
        server.on('error', (err: NodeJS.ErrnoException) =>
          warn.warn(
            `listener_${err.code ?? 'error'}`,
            { pod: m.uid, role: m.role, code: err.code, err: err.message },
            'pod listener error',
          ),
        );
        const park = (c: net.Socket): void => {
          c.on('error', () => undefined); // a client may give up while parked: no crash for that
          p.parked.push([server, c]);
        };
        server.on('connection', park);
        server.listen(handle);
        p.servers[m.role] = server;
        const servers = complete(p.servers);
        if (!servers) return;
        pending.delete(m.uid);
        for (const s of ROLES.map((r) => servers[r])) s.removeAllListeners('connection');
        const workload = store.config.workloads.find((w) => w.uid === m.uid);
        if (!workload) {
          for (const s of ROLES.map((r) => servers[r])) s.close();
          for (const [, c] of p.parked) c.destroy();
          return;
        }
        try {
          const netns = Netns.open(p.netns);
          netnsOf.set(m.uid, netns);
          tunnel.addPod({ workload, podId: p.podId, identity: p.identity, netns, ...servers }, certs.get(p.identity));
        } catch (err) {
          // The pod went away meanwhile (its netns with it): this worker does not serve it; the others decide for themselves.
          log.warn({ pod: m.uid, code: (err as AmbitError).code, err: (err as Error).message }, 'cannot serve pod');
          tunnel.removePod(m.uid);
          netnsOf.get(m.uid)?.close();
          netnsOf.delete(m.uid);
          for (const s of ROLES.map((r) => servers[r])) s.close();
          for (const [, c] of p.parked) c.destroy();
          return;
        }
        for (const [s, c] of p.parked) s.emit('connection', c);
        send({ t: 'serving', uid: m.uid });
        return;
      }
      case 'unpod':
        tunnel?.removePod(m.uid);
        netnsOf.get(m.uid)?.close();
        netnsOf.delete(m.uid);
        // Closing a listening server closes its fd at once: the ports are free for a re-enrolment.
        send({ t: 'released', uid: m.uid });
        return;
      case 'metrics':
        metrics.registry.getMetricsAsJSON().then(
          (data) => send({ t: 'metrics', id: m.id, data }),
          () => send({ t: 'metrics', id: m.id, data: [] }),
        );
        return;
      case 'connections':
        send({ t: 'connections', id: m.id, ...(tunnel?.connections.list() ?? { connections: [], total: 0 }) });
        return;
      case 'drain':
        void (tunnel?.drain(m.deadlineMs) ?? Promise.resolve({ left: 0 })).then(({ left }) => {
          send({ t: 'drained', left });
          process.exit(0);
        });
        return;
    }
  });
  // The agent is gone (its IPC channel closed): nothing will feed us any more.
  process.on('disconnect', () => process.exit(0));
}
