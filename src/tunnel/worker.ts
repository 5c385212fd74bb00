// A tunnel worker process (`ambit worker`, started by the agent): the data
// path only. It receives the configuration, certificates and each pod's
// listening sockets from the agent over IPC and serves them with a Tunnel;
// it opens the pinned datapath maps itself (read-only use: original
// destinations). A worker can die or be replaced at any time: the sockets
// stay open in the agent and in the other workers, so the kernel keeps
// queueing connections and no new one is refused.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { WorkloadCert, CertProvider } from '../identity/cert-manager';
import { Netns } from '../agent/netns';
import { DatapathMaps } from '../datapath/maps';
import { openPinnedMaps } from '../datapath/status';
import { AmbitError } from '../errors';
import { createLogger } from '../observability/log';
import { Metrics } from '../observability/metrics';
import { MeshStore } from '../state/store';
import { ROLES, type FromWorker, type ListenerRole, type ToWorker, type WireCert } from './ipc';
import { Tunnel } from './tunnel';

/** Certificates pushed by the agent; a missing one is asked for. */
class RemoteCerts extends EventEmitter implements CertProvider {
  private readonly certs = new Map<string, WorkloadCert>();
  private readonly waiting = new Map<string, ((c: WorkloadCert) => void)[]>();

  fetch(identity: string): Promise<WorkloadCert> {
    const c = this.certs.get(identity);
    if (c && c.notAfter.getTime() > Date.now()) return Promise.resolve(c);
    return new Promise((resolve) => {
      const list = this.waiting.get(identity) ?? [];
      list.push(resolve);
      this.waiting.set(identity, list);
      if (list.length === 1) send({ t: 'cert?', identity });
    });
  }

  get(identity: string): WorkloadCert | undefined { return this.certs.get(identity); }

  put(w: WireCert): void {
    const c: WorkloadCert = { ...w, notBefore: new Date(w.notBefore), notAfter: new Date(w.notAfter) };
    this.certs.set(c.identity, c);
    for (const resolve of this.waiting.get(c.identity) ?? []) resolve(c);
    this.waiting.delete(c.identity);
    this.emit('updated', c.identity, c);
  }
}

function send(m: FromWorker): void {
  process.send?.(m);
}

/** A pod whose three sockets are arriving; connections accepted meanwhile wait in `parked`. */
interface PendingPod { podId: number; identity: string; netns: string; servers: Partial<Record<ListenerRole, net.Server>>; parked: [net.Server, net.Socket][] }

export function runWorker(): void {
  if (!process.send) throw new AmbitError('AMBIT_E_CONFIG', '`ambit worker` is started by `ambit node`, not by hand');
  const log = createLogger();
  const certs = new RemoteCerts();
  const metrics = new Metrics();
  let tunnel: Tunnel | undefined;
  let store: MeshStore | undefined;
  const pending = new Map<string, PendingPod>();
  const netnsOf = new Map<string, Netns>();

  process.on('message', (m: ToWorker, handle?: net.Socket) => {
    switch (m.t) {
      case 'init': {
        log.level = m.logLevel;
        store = new MeshStore(m.config);
        const maps = new DatapathMaps(openPinnedMaps(m.pinDir));
        tunnel = new Tunnel({
          store, certs, maps, mode: m.mode, metrics, authorizer: () => store!.authorizer, limits: m.limits, log,
        });
        send({ t: 'ready' });
        return;
      }
      case 'config': store?.replace(m.config); return;
      case 'cert': certs.put(m.cert); return;
      case 'log': log.level = m.level; return;
      case 'pod': {
        if (!handle || !tunnel || !store) return;
        const p: PendingPod = pending.get(m.uid) ?? { podId: m.podId, identity: m.identity, netns: m.netns, servers: {}, parked: [] };
        pending.set(m.uid, p);
        // Listen at once (the handle is only good in this tick); connections
        // that arrive before the pod's three sockets are complete are parked.
        const server = net.createServer({ allowHalfOpen: true, noDelay: true });
        const park = (c: net.Socket): void => {
          c.on('error', () => undefined); // a client may give up while parked: no crash for that
          p.parked.push([server, c]);
        };
        server.on('connection', park);
        server.listen(handle);
        p.servers[m.role] = server;
        if (!ROLES.every((r) => p.servers[r])) return;
        pending.delete(m.uid);
        for (const s of Object.values(p.servers)) s!.removeAllListeners('connection');
        const workload = store.config.workloads.find((w) => w.uid === m.uid);
        if (!workload) {
          for (const s of Object.values(p.servers)) s!.close();
          for (const [, c] of p.parked) c.destroy();
          return;
        }
        const netns = Netns.open(p.netns);
        netnsOf.set(m.uid, netns);
        tunnel.addPod({ workload, podId: p.podId, identity: p.identity, netns, outbound: p.servers.outbound!, inboundPlain: p.servers.inboundPlain!, inboundHbone: p.servers.inboundHbone! }, certs.get(p.identity));
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
        metrics.registry.getMetricsAsJSON().then((data) => send({ t: 'metrics', id: m.id, data }), () => send({ t: 'metrics', id: m.id, data: [] }));
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
  // A bug must not pass silently: say what it was; the agent starts a replacement.
  process.on('uncaughtException', (err) => {
    log.fatal({ err: err.stack ?? String(err) }, 'tunnel worker crashed');
    process.exit(70);
  });
}
