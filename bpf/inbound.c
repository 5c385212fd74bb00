// SPDX-License-Identifier: GPL-2.0
/* Inbound capture, one bpf_link per enrolled pod netns: every TCP
 * connection to an enrolled pod address goes to the pod's tunnel socket,
 * :15008 to the HBONE listener and any other port to :15006. IPv6 TCP to
 * the pod is not carried yet: it is reset, never delivered around the
 * tunnel (only ::1 and the pod dialing itself pass). */
#include <linux/bpf.h>
#include <linux/in.h>
#include "lib/net.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

/* This program runs only in enrolled pods' netns, so any IPv6 destination
 * here is the pod's. */
static __always_inline int lookup6(struct bpf_sk_lookup *ctx)
{
	__u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2], l3 = ctx->local_ip6[3];
	int loopback = l0 == 0 && l1 == 0 && l2 == 0 && l3 == bpf_htonl(1);
	int self = l0 == ctx->remote_ip6[0] && l1 == ctx->remote_ip6[1] && l2 == ctx->remote_ip6[2] && l3 == ctx->remote_ip6[3];

	if (loopback || self) {
		count(REASON_LOOKUP_SKIP_LOCAL);
		return SK_PASS;
	}
	count(REASON_LOOKUP_DROP_IPV6);
	return SK_DROP;
}

SEC("sk_lookup")
int ambit_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->family == AF_INET6)
		return lookup6(ctx);
	if (ctx->family != AF_INET)
		return SK_PASS;

	__u32 local = ctx->local_ip4;
	__u32 *pod_id = bpf_map_lookup_elem(&pod_addrs, &local);
	if (!pod_id) {
		count(REASON_LOOKUP_SKIP_NOT_POD);
		return SK_PASS;
	}
	/* The tunnel delivers to the app from inside the pod, so its source
	 * is the pod's own address: steering that too would loop forever. */
	if (ctx->remote_ip4 == local || (bpf_ntohl(ctx->remote_ip4) >> 24) == 127) {
		count(REASON_LOOKUP_SKIP_LOCAL);
		return SK_PASS;
	}

	__u32 hbone = ctx->local_port == AMBIT_PORT_INBOUND_HBONE;
	__u32 slot = *pod_id * AMBIT_ROLES + (hbone ? AMBIT_ROLE_HBONE : AMBIT_ROLE_PLAIN);
	struct bpf_sock *sk = bpf_map_lookup_elem(&listeners, &slot);
	if (!sk) {
		/* Enrolled but the tunnel socket is gone (tunnel down): drop,
		 * never deliver around the tunnel. */
		count(REASON_LOOKUP_DROP_NO_SOCKET);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(REASON_LOOKUP_DROP_ASSIGN);
		return SK_DROP;
	}
	count(hbone ? REASON_LOOKUP_TO_HBONE : REASON_LOOKUP_TO_PLAIN);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
