// Where an outbound connection goes, decided from the original destination
// and the source pod: a mesh workload (HBONE), a plain workload or an
// unknown address (TCP passthrough), or a service VIP (one endpoint per
// connection, weighted by capacity, service port translated to the target
// port). A service or workload with a waypoint (its `waypoint`, set only
// when the waypoint takes that kind of traffic) is reached through it:
// HBONE to one of the waypoint's pods, the CONNECT authority still the
// original destination (the VIP:port for a service, podIP:port for a pod),
// so that the waypoint routes it. Traffic from the waypoint's own pods is
// never sent to it again: a waypoint is not captured, but a route that
// could loop must not depend on that.
import type { MeshStore } from '../state/store';
import { type GatewayAddress, gatewayAddressText, type Service, WAYPOINT_HBONE_PORT, type Workload } from '../state/types';

/** The waypoint a connection is handed to: `ip` is the waypoint pod dialled on :15008. */
export interface WaypointHop {
  /** The GatewayAddress as written (IP, or namespace/hostname), for logs. */
  address: string;
  ip: string;
}

/**
 * hbone: CONNECT authority ip:port; the stream goes to `waypoint.ip` when
 * there is a waypoint (then `workload` and `identities` are the waypoint
 * pod's), else to `ip`.
 */
export type Route =
  | { kind: 'hbone'; ip: string; port: number; workload: Workload; identities: string[]; service?: Service; waypoint?: WaypointHop }
  | { kind: 'plain'; ip: string; port: number; workload?: Workload; service?: Service }
  | {
      kind: 'refuse';
      reason: 'no_healthy_endpoint' | 'unknown_service_port' | 'no_waypoint';
      service?: Service;
      workload?: Workload;
    };

/** Set by Kubernetes on a waypoint's pods (and on their workload entries in the standalone YAML): they never use a waypoint. */
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

export function resolveOutbound(store: MeshStore, ip: string, port: number, random: () => number = Math.random, src?: Workload): Route {
  const service = store.serviceByVip(ip);
  if (service) {
    const sp = service.ports.find((p) => p.port === port);
    if (!sp) return { kind: 'refuse', reason: 'unknown_service_port', service };
    if (service.waypoint) {
      const via = viaWaypoint(store, service.waypoint, ip, port, random, src);
      if (via !== 'source-is-waypoint') return via ? { ...via, service } : { kind: 'refuse', reason: 'no_waypoint', service };
    }
    // An endpoint without an address (a pod not given one yet) cannot be dialled: it is never picked.
    const w = pickWeighted(
      store.endpoints(service).filter((e) => e.addresses.length > 0),
      random,
    );
    const dst = w?.addresses[0];
    if (!w || dst === undefined) return { kind: 'refuse', reason: 'no_healthy_endpoint', service };
    return toWorkload(store, w, dst, sp.targetPort, random, src, service);
  }
  const w = store.workloadByIp(ip);
  return w ? toWorkload(store, w, ip, port, random, src) : { kind: 'plain', ip, port };
}

function toWorkload(
  store: MeshStore,
  w: Workload,
  ip: string,
  port: number,
  random: () => number,
  src: Workload | undefined,
  service?: Service,
): Route {
  // A pod's own waypoint (waypoint-for workload or all) also takes what reaches it through a service without one.
  if (w.waypoint) {
    const via = viaWaypoint(store, w.waypoint, ip, port, random, src);
    if (via !== 'source-is-waypoint') return via ? { ...via, service } : { kind: 'refuse', reason: 'no_waypoint', service, workload: w };
  }
  return w.protocol === 'HBONE'
    ? { kind: 'hbone', ip, port, workload: w, identities: [store.identityOf(w)], service }
    : { kind: 'plain', ip, port, workload: w, service };
}

/**
 * The HBONE route to one of the waypoint's pods with authority ip:port;
 * undefined when no pod of it can be reached (the connection is refused:
 * going around the waypoint would skip its policies); 'source-is-waypoint'
 * when the connection comes from the waypoint itself.
 */
function viaWaypoint(
  store: MeshStore,
  g: GatewayAddress,
  ip: string,
  port: number,
  random: () => number,
  src: Workload | undefined,
): Extract<Route, { kind: 'hbone' }> | 'source-is-waypoint' | undefined {
  if (src?.labels[GATEWAY_NAME_LABEL] !== undefined) return 'source-is-waypoint';
  const pods = waypointPods(store, g);
  if (src && pods.includes(src)) return 'source-is-waypoint';
  // The node's pool speaks HBONE on 15008 only; a waypoint elsewhere cannot be reached.
  if (g.hboneMtlsPort !== WAYPOINT_HBONE_PORT) return undefined;
  const pod = pickWeighted(
    pods.filter((p) => p.protocol === 'HBONE' && p.addresses.length > 0),
    random,
  );
  const podIp = g.destination.kind === 'address' && pod?.addresses.includes(g.destination.ip) ? g.destination.ip : pod?.addresses[0];
  if (!pod || podIp === undefined) return undefined;
  return {
    kind: 'hbone',
    ip,
    port,
    workload: pod,
    identities: [store.identityOf(pod)],
    waypoint: { address: gatewayAddressText(g), ip: podIp },
  };
}

/** The waypoint's pods: the workload at its address, or the endpoints of the service at its address or hostname. */
function waypointPods(store: MeshStore, g: GatewayAddress): Workload[] {
  const d = g.destination;
  const svc =
    d.kind === 'address'
      ? store.serviceByVip(d.ip)
      : store.config.services.find((s) => s.namespace === d.namespace && s.hostname === d.hostname);
  if (svc) return store.endpoints(svc);
  const w = d.kind === 'address' ? store.workloadByIp(d.ip) : undefined;
  return w ? [w] : [];
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
