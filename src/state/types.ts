// The control-plane view of the mesh, as every source (the standalone YAML
// today, xDS later) delivers it. Field names follow the standalone YAML.
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
}

export interface ServicePort { port: number; targetPort: number }

export interface Service {
  name: string;
  namespace: string;
  hostname: string;
  addresses: string[];
  ports: ServicePort[];
  selector: Record<string, string>;
}

export interface MeshNode { name: string; address: string }

export interface MeshConfig {
  trustDomain: string;
  ca: { dir: string };
  nodes: MeshNode[];
  workloads: Workload[];
  services: Service[];
}
