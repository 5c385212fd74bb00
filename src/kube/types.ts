// The few fields of Kubernetes objects ambit reads, as the API server
// serves them (core/v1 Pod, Namespace, Service; discovery.k8s.io/v1
// EndpointSlice; gateway.networking.k8s.io/v1 Gateway, HTTPRoute, GRPCRoute;
// security.istio.io/v1 AuthorizationPolicy; networking.istio.io/v1
// DestinationRule; authentication.k8s.io/v1 TokenReview).
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

export interface KubeObject {
  metadata: ObjectMeta;
}

export interface Pod extends KubeObject {
  spec: {
    nodeName?: string;
    serviceAccountName?: string;
    hostNetwork?: boolean;
    containers: { name: string; ports?: { name?: string; containerPort: number; protocol?: string }[] }[];
  };
  status: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

export type Namespace = KubeObject;

export interface Service extends KubeObject {
  spec: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    selector?: Record<string, string>;
    ports?: { name?: string; port: number; targetPort?: number | string; protocol?: string; appProtocol?: string }[];
  };
}

/** A Gateway API address (type defaults to IPAddress). */
export interface GatewayAddressEntry {
  type?: string;
  value: string;
}

export interface Gateway extends KubeObject {
  spec: {
    gatewayClassName?: string;
    listeners?: { name?: string; port?: number; protocol?: string }[];
    addresses?: GatewayAddressEntry[];
  };
  /** Istio writes the waypoint service's VIP here once it has deployed it. */
  status?: { addresses?: GatewayAddressEntry[] };
}

/**
 * An object whose spec the waypoint's reader checks field by field (an
 * HTTPRoute, a GRPCRoute, an AuthorizationPolicy): typed only as far as
 * the control plane looks before handing it over, since a cluster may hold
 * anything its CRD's schema lets through.
 */
export interface CheckedObject extends KubeObject {
  spec?: unknown;
}

export interface EndpointSlice extends KubeObject {
  addressType: string;
  endpoints?: {
    addresses: string[];
    targetRef?: { kind: string; name: string; namespace?: string; uid?: string };
    conditions?: { ready?: boolean };
  }[];
  ports?: { name?: string; port?: number; protocol?: string }[] | null;
}

export interface TokenReview {
  apiVersion: 'authentication.k8s.io/v1';
  kind: 'TokenReview';
  spec: { token: string; audiences?: string[] };
  status?: {
    authenticated?: boolean;
    error?: string;
    audiences?: string[];
    user?: { username?: string; uid?: string; extra?: Record<string, string[]> };
  };
}

export interface List<T> {
  metadata: { resourceVersion: string };
  items: T[];
}
export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T & { code?: number; message?: string };
}
