// The control-plane view of the mesh, as every source (the standalone YAML,
// xDS) delivers it. Field names follow the standalone YAML.
import type { Authorization } from '../policy/types';

export type TunnelProtocol = 'HBONE' | 'NONE';
/** Who carries a mesh workload's traffic: its node's agent, or its own sidecar. */
export type Dataplane = 'ambient' | 'sidecar';

export interface Workload {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string;
  addresses: string[];
  protocol: TunnelProtocol;
  dataplane: Dataplane;
  /** Network namespace file; only the hosting node uses it. */
  netns?: string;
  /** cgroup v2 directory of the pod; only the hosting node uses it. */
  cgroup?: string;
  labels: Record<string, string>;
  /** Relative weight when chosen as a service endpoint (default 1). */
  capacity: number;
  /** Its own trust domain when it differs from the mesh's (xDS trust_domain). */
  trustDomain?: string;
  /** Services it backs ("<namespace>/<hostname>") besides those whose selector picks it (xDS). */
  services?: string[];
  /** WORKLOAD_SELECTOR policies ("<namespace>/<name>") that apply to it. */
  authorizationPolicies: string[];
  /** The waypoint traffic addressed to this pod's IP goes through (istio.io/use-waypoint, waypoint-for workload or all). */
  waypoint?: GatewayAddress;
}

export interface ServicePort {
  port: number;
  targetPort: number;
  /** The port's name; a waypoint serves `http-`/`http2-`/`grpc-` prefixed ports as HTTP (Istio's convention). */
  name?: string;
  /** Kubernetes appProtocol (http, http2, grpc, …): what a waypoint speaks on the port, before the name. */
  appProtocol?: string;
}

export interface Service {
  name: string;
  namespace: string;
  hostname: string;
  addresses: string[];
  ports: ServicePort[];
  selector: Record<string, string>;
  /** Labels of the Service object (standalone YAML only: they carry istio.io/use-waypoint). */
  labels?: Record<string, string>;
  /** The waypoint traffic addressed to this service's VIP goes through (waypoint-for service or all). */
  waypoint?: GatewayAddress;
}

/**
 * Where a waypoint is reached, as Istio's xDS says it (istio.workload.GatewayAddress):
 * an address (a waypoint pod's IP, or the VIP of the waypoint's service) or a
 * service hostname, and the port its HBONE listener takes mutual TLS on.
 */
export interface GatewayAddress {
  destination: { kind: 'address'; network: string; ip: string } | { kind: 'hostname'; namespace: string; hostname: string };
  /** 15008 unless the waypoint says otherwise. */
  hboneMtlsPort: number;
}

/** The waypoint's HBONE port (Istio's). */
export const WAYPOINT_HBONE_PORT = 15008;

/** How a GatewayAddress is written in logs and messages: the IP, or namespace/hostname. */
export const gatewayAddressText = (g: GatewayAddress): string =>
  g.destination.kind === 'address' ? g.destination.ip : `${g.destination.namespace}/${g.destination.hostname}`;

/** `istio.io/waypoint-for`: which traffic a waypoint takes (Istio's default: service). */
export type WaypointFor = 'service' | 'workload' | 'all' | 'none';

/** A waypoint (a Gateway of class istio-waypoint) as the node tunnel needs it. */
export interface MeshWaypoint {
  name: string;
  namespace: string;
  for: WaypointFor;
  /** What services and workloads that use it are given as their `waypoint`. */
  address: GatewayAddress;
  /** Its pods' service account: the identity the node tunnel expects on its HBONE port. */
  serviceAccount: string;
}

export interface MeshNode {
  name: string;
  address: string;
}

/**
 * Who may use the control-plane server: the SHA-256 (hex) of a bearer token
 * and whose it is, a node agent's (`node`) or a waypoint's (`waypoint`,
 * "<namespace>/<name>" of its Gateway); exactly one of the two.
 */
export type NodeToken = { sha256: string } & ({ node: string; waypoint?: undefined } | { waypoint: string; node?: undefined });

export interface MeshConfig {
  trustDomain: string;
  ca: { dir: string };
  nodes: MeshNode[];
  workloads: Workload[];
  services: Service[];
  /** The waypoints declared (standalone YAML); services and workloads point at them with their `waypoint`. */
  waypoints?: MeshWaypoint[];
  policies: Authorization[];
  /** Policies in this namespace without a selector apply mesh-wide (Istio's root namespace). */
  rootNamespace: string;
  /** The policies as written (Istio objects), to convert again when the workloads come from elsewhere (Kubernetes). */
  policyDocs?: unknown[];
  /** What was accepted but not fully usable (e.g. HTTP-only policy attributes), to log. */
  warnings?: string[];
  /** What is accepted and fine but worth knowing (a policy a waypoint enforces instead of the node tunnel), to log at info. */
  notes?: string[];
  /** Read by `ambit control-plane` only. */
  controlPlane: { tokens: NodeToken[] };
}

/** A service's key in xDS and in a workload's `services`: namespace/hostname. */
export const serviceKey = (s: Pick<Service, 'namespace' | 'hostname'>): string => `${s.namespace}/${s.hostname}`;
