// The three listening sockets every captured pod gets, by role, and their
// ports: the same numbers as Istio's ztunnel, so operators' habits and
// NetworkPolicies carry over. bpf/lib/types.h mirrors the ports (checked by
// test/unit/layout.test.ts). Everything that walks a pod's listeners walks
// ROLES, so a fourth role is added here and nowhere else.

/** Captured outbound connections (127.0.0.1 only: the cgroup hook steers them here). */
export const PORT_OUTBOUND = 15001;
/** Captured inbound plaintext (the sk_lookup program's target). */
export const PORT_INBOUND_PLAIN = 15006;
/** Inbound HBONE: the only port a peer node needs to reach. */
export const PORT_INBOUND_HBONE = 15008;

export type ListenerRole = 'outbound' | 'inboundPlain' | 'inboundHbone';

/** One value per listener role. */
export type PerRole<T> = Record<ListenerRole, T>;

/** Where each role listens inside the pod's netns. */
export const LISTEN_ADDRESSES: Readonly<PerRole<{ ip: string; port: number }>> = {
  outbound: { ip: '127.0.0.1', port: PORT_OUTBOUND },
  inboundPlain: { ip: '0.0.0.0', port: PORT_INBOUND_PLAIN },
  inboundHbone: { ip: '0.0.0.0', port: PORT_INBOUND_HBONE },
};

export const ROLES: readonly ListenerRole[] = ['outbound', 'inboundPlain', 'inboundHbone'];

/** The ports of the tunnel itself: a connection addressed to one of them is never relayed. */
export const TUNNEL_PORTS: ReadonlySet<number> = new Set(ROLES.map((r) => LISTEN_ADDRESSES[r].port));
