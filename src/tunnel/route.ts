// Where an outbound connection goes, decided from the original destination
// alone: a mesh workload (HBONE), a plain workload or an unknown address
// (TCP passthrough), or a service VIP (one endpoint per connection, weighted
// by capacity, service port translated to the target port).
import type { MeshStore } from '../state/store';
import type { Service, Workload } from '../state/types';

export type Route =
  | { kind: 'hbone'; ip: string; port: number; workload: Workload; identities: string[]; service?: Service }
  | { kind: 'plain'; ip: string; port: number; workload?: Workload; service?: Service }
  | { kind: 'refuse'; reason: 'no_healthy_endpoint' | 'unknown_service_port'; service: Service };

export function resolveOutbound(store: MeshStore, ip: string, port: number, random: () => number = Math.random): Route {
  const service = store.serviceByVip(ip);
  if (service) {
    const sp = service.ports.find((p) => p.port === port);
    if (!sp) return { kind: 'refuse', reason: 'unknown_service_port', service };
    // An endpoint without an address (a pod not given one yet) cannot be dialled: it is never picked.
    const w = pickWeighted(
      store.endpoints(service).filter((e) => e.addresses.length > 0),
      random,
    );
    const dst = w?.addresses[0];
    if (!w || dst === undefined) return { kind: 'refuse', reason: 'no_healthy_endpoint', service };
    return toWorkload(store, w, dst, sp.targetPort, service);
  }
  const w = store.workloadByIp(ip);
  return w ? toWorkload(store, w, ip, port) : { kind: 'plain', ip, port };
}

function toWorkload(store: MeshStore, w: Workload, ip: string, port: number, service?: Service): Route {
  return w.protocol === 'HBONE'
    ? { kind: 'hbone', ip, port, workload: w, identities: [store.identityOf(w)], service }
    : { kind: 'plain', ip, port, workload: w, service };
}

export function pickWeighted<T extends { capacity: number }>(items: T[], random: () => number): T | undefined {
  const total = items.reduce((s, w) => s + w.capacity, 0);
  if (total <= 0) return undefined;
  let x = random() * total;
  for (const it of items) {
    x -= it.capacity;
    if (x < 0) return it;
  }
  return items.findLast((it) => it.capacity > 0);
}
