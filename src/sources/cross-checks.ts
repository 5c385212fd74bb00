// Rules that span entries of the standalone YAML, checked in parseConfig so
// a file that breaks one is rejected before anything is applied (a reload
// included): what each entry says alone can be fine while two of them
// together are ambiguous or let one party pose as another.
import type { MeshConfig, NodeToken } from '../state/types';
import { type Waypoint, waypointKey } from '../waypoint/types';

type Report = (at: string, value: unknown, what: string) => void;

/** Reports each entry whose key an earlier entry already had, naming the earlier one. */
class Unique {
  private readonly first = new Map<string, string>();
  constructor(
    private readonly report: Report,
    private readonly why: string,
  ) {}
  /** False when key was taken (and reported). */
  claim(key: string, at: string, value: unknown = key): boolean {
    if (key === '') return true; // an empty field is already a problem of its own
    const earlier = this.first.get(key);
    if (earlier === undefined) {
      this.first.set(key, at);
      return true;
    }
    this.report(at, value, `duplicates ${earlier}; ${this.why}`);
    return false;
  }
  owner(key: string): string | undefined {
    return this.first.get(key);
  }
}

export function checkCrossFields(cfg: MeshConfig, report: Report): void {
  const nodeNames = new Unique(report, 'node names must be unique');
  // Peers reach a node's workloads through its address: two nodes on one address would take each other's traffic.
  const nodeAddrs = new Unique(report, 'each node needs its own address');
  cfg.nodes.forEach((n, i) => {
    nodeNames.claim(n.name, `nodes[${i}].name`);
    nodeAddrs.claim(n.address, `nodes[${i}].address`);
  });
  const known = [...new Set(cfg.nodes.map((n) => n.name))];
  const isNode = (name: string): boolean => known.includes(name);

  const uids = new Unique(report, 'uids must be unique (they name the workload in xDS and the pods file)');
  // Policies and metrics find a source workload by its address: a second claimant could pose as the first.
  const addrs = new Unique(report, 'pod addresses must be unique, or one workload could pass for another');
  cfg.workloads.forEach((w, i) => {
    uids.claim(w.uid, `workloads[${i}].uid`);
    if (w.node && !isNode(w.node))
      report(`workloads[${i}].node`, w.node, `is not among nodes: (${known.join(', ') || 'none'}); add it there or fix the name`);
    w.addresses.forEach((a, j) => {
      addrs.claim(a, `workloads[${i}].addresses[${j}]`);
    });
  });

  const services = new Unique(report, 'a service is named by namespace/hostname, and the later one would replace the earlier');
  const names = new Unique(report, 'service names must be unique per namespace');
  const vips = new Unique(report, 'a virtual IP must lead to one service');
  cfg.services.forEach((s, i) => {
    if (s.namespace && s.hostname) services.claim(`${s.namespace}/${s.hostname}`, `services[${i}].hostname`, s.hostname);
    if (s.namespace && s.name) names.claim(`${s.namespace}/${s.name}`, `services[${i}].name`, s.name);
    s.addresses.forEach((a, j) => {
      const at = `services[${i}].addresses[${j}]`;
      const pod = addrs.owner(a);
      if (pod !== undefined) report(at, a, `is also ${pod}; a connection to it would be both a pod's and a service's`);
      else vips.claim(a, at);
    });
    const ports = new Unique(report, 'a service port must map to one target port');
    s.ports.forEach((p, j) => {
      if (p.port) ports.claim(String(p.port), `services[${i}].ports[${j}].port`, p.port);
    });
  });

  // Two nodes with one token could each act as the other. One node may hold several (rotation).
  const hashes = new Unique(report, 'every node needs its own token (two nodes sharing one could each act as the other)');
  cfg.controlPlane.tokens.forEach((t, i) => {
    const at = `controlPlane.tokens[${i}]`;
    const whose = t.node !== undefined ? `node ${t.node}` : `waypoint ${t.waypoint}`;
    hashes.claim(t.sha256.toLowerCase(), `${at}.sha256`, `${t.sha256.slice(0, 8)}… (${whose})`);
    // With --kubernetes the nodes come from the cluster and nodes: may be empty; when it lists nodes, a token names one.
    if (known.length > 0 && t.node && !isNode(t.node))
      report(`${at}.node`, t.node, `is not among nodes: (${known.join(', ')}); add it there or fix the name`);
  });
}

/**
 * A waypoint token names a declared waypoint Gateway, when the file declares
 * any (with --kubernetes they may all be the cluster's): a token for a
 * misspelt one would authenticate a waypoint that never gets a configuration.
 */
export function checkWaypointTokens(tokens: readonly NodeToken[], waypoints: readonly Waypoint[], report: Report): void {
  const known = waypoints.map(waypointKey);
  if (known.length === 0) return;
  tokens.forEach((t, i) => {
    // A malformed name is reported where it is parsed.
    if (t.waypoint?.includes('/') && !known.includes(t.waypoint))
      report(
        `controlPlane.tokens[${i}].waypoint`,
        t.waypoint,
        `is not a waypoint Gateway of routes: (${known.join(', ')}); declare it there (gatewayClassName istio-waypoint) or fix the name`,
      );
  });
}
