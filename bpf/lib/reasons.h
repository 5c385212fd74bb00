/* Why a program took the path it took. Indexes of the per-CPU `counters`
 * map; src/datapath/reasons.ts mirrors this list and a unit test keeps the
 * two identical, so userspace never shows a number without a name.
 * Append only: reordering would mislabel counters read from a pinned map. */
#ifndef AMBIT_REASONS_H
#define AMBIT_REASONS_H

enum ambit_reason {
	REASON_CONNECT_REDIRECTED = 0,    /* enrolled pod's connect() sent to :15001 */
	REASON_CONNECT_SKIP_NOT_TCP = 1,  /* UDP and raw sockets are not captured */
	REASON_CONNECT_SKIP_LOOPBACK = 2, /* 127.0.0.0/8 stays inside the pod */
	REASON_CONNECT_SKIP_NOT_ENROLLED = 3,
	REASON_CONNECT_ERR_MAP_FULL = 4,  /* original destination not recorded: refuse */
	REASON_SOCKOPS_PUBLISHED = 5,     /* original destination republished by flow */
	REASON_SOCKOPS_ERR_MAP_FULL = 6,
	REASON_GETPEERNAME_RESTORED = 7,
	REASON_LOOKUP_TO_PLAIN = 8,       /* inbound steered to the pod's :15006 */
	REASON_LOOKUP_TO_HBONE = 9,       /* inbound :15008 steered to the HBONE listener */
	REASON_LOOKUP_SKIP_NOT_POD = 10,  /* destination is not an enrolled pod address */
	REASON_LOOKUP_SKIP_LOCAL = 11,    /* from the pod itself or loopback: no loop */
	REASON_LOOKUP_DROP_NO_SOCKET = 12,/* enrolled pod, tunnel socket gone: fail closed */
	REASON_LOOKUP_DROP_ASSIGN = 13,   /* bpf_sk_assign refused the socket */
	REASON_CONNECT_SKIP_TUNNEL = 14,  /* the tunnel's own socket (marked): never captured */
	REASON_CONNECT_REDIRECTED_V4MAPPED = 15, /* AF_INET6 socket to ::ffff:a.b.c.d sent to :15001 */
	REASON_CONNECT_REFUSED_IPV6 = 16, /* enrolled pod to a native IPv6 destination: not carried, EPERM */
	REASON_LOOKUP_DROP_IPV6 = 17,     /* IPv6 TCP to an enrolled pod: not carried, reset */
	REASON_MAX = 18,
};

#endif
