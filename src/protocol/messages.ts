// TypeScript shapes of the protobuf messages ambit sends and receives, as
// the loaders in protos.ts produce them (.proto field names, enums as their
// names, 64-bit integers as numbers, bytes as Buffers, defaults filled in).
// They mirror proto/ field for field; only what ambit reads or writes.

export interface Any {
  type_url: string;
  value: Buffer;
}

// ---- istio.workload ----
export type TunnelProtocolName = 'NONE' | 'HBONE';

export interface NetworkAddress {
  network: string;
  address: Buffer;
}
export interface Port {
  service_port: number;
  target_port: number;
  app_protocol?: string;
}
export interface PortList {
  ports: Port[];
}
export interface GatewayAddressMessage {
  hostname?: { namespace: string; hostname: string } | null;
  address?: NetworkAddress | null;
  destination?: 'hostname' | 'address';
  hbone_mtls_port: number;
}

export interface WorkloadMessage {
  uid: string;
  name: string;
  namespace: string;
  addresses: Buffer[];
  hostname?: string;
  network?: string;
  tunnel_protocol: TunnelProtocolName;
  trust_domain: string;
  service_account: string;
  node: string;
  canonical_name?: string;
  canonical_revision?: string;
  workload_type?: 'DEPLOYMENT' | 'CRONJOB' | 'POD' | 'JOB';
  workload_name?: string;
  services: Record<string, PortList>;
  authorization_policies: string[];
  status?: 'HEALTHY' | 'UNHEALTHY';
  cluster_id?: string;
  capacity?: { value: number } | null;
  waypoint?: GatewayAddressMessage | null;
}

export interface ServiceMessage {
  name: string;
  namespace: string;
  hostname: string;
  addresses: NetworkAddress[];
  ports: Port[];
  subject_alt_names: string[];
  waypoint?: GatewayAddressMessage | null;
}

export interface AddressMessage {
  workload?: WorkloadMessage | null;
  service?: ServiceMessage | null;
  type?: 'workload' | 'service';
}

// ---- istio.security ----
export type StringMatchMessage = {
  exact?: string;
  prefix?: string;
  suffix?: string;
  presence?: object;
  match_type?: 'exact' | 'prefix' | 'suffix' | 'presence';
};
export interface IpBlockMessage {
  address: Buffer;
  length: number;
}

export interface MatchMessage {
  namespaces: StringMatchMessage[];
  not_namespaces: StringMatchMessage[];
  principals: StringMatchMessage[];
  not_principals: StringMatchMessage[];
  source_ips: IpBlockMessage[];
  not_source_ips: IpBlockMessage[];
  destination_ips: IpBlockMessage[];
  not_destination_ips: IpBlockMessage[];
  destination_ports: number[];
  not_destination_ports: number[];
}

export interface AuthorizationMessage {
  name: string;
  namespace: string;
  scope: 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR';
  action: 'ALLOW' | 'DENY';
  rules: { clauses: { matches: MatchMessage[] }[] }[];
  dry_run: boolean;
}

// ---- ambit.waypoint.v1 ----
/** Its routes and policies mirror src/waypoint/types.ts in snake_case; read through xds-waypoint.ts, which checks every field. */
export interface WaypointConfigMessage {
  namespace: string;
  name: string;
  schema_version: number;
  routes: unknown[];
  policies: unknown[];
  /** Absent from a control plane that sends none. */
  destinations?: unknown[];
  /** Absent from a control plane that sends none. */
  rate_limits?: unknown[];
}

// ---- envoy.service.discovery.v3 ----
export interface StructValue {
  [key: string]: unknown;
}

export interface NodeMessage {
  id: string;
  cluster?: string;
  metadata?: { fields: Record<string, unknown> } | null;
}

export interface DeltaDiscoveryRequest {
  node?: NodeMessage | null;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail?: { code: number; message: string } | null;
}

export interface ResourceMessage {
  name: string;
  version: string;
  resource: Any | null;
  aliases?: string[];
}

export interface DeltaDiscoveryResponse {
  system_version_info: string;
  resources: ResourceMessage[];
  type_url: string;
  nonce: string;
  removed_resources: string[];
}

// ---- istio.v1.auth ----
export interface IstioCertificateRequest {
  csr: string;
  validity_duration: number;
  metadata?: { fields: Record<string, unknown> } | null;
}
export interface IstioCertificateResponse {
  cert_chain: string[];
}
