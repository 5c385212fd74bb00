// SPDX-License-Identifier: GPL-2.0
/* Inbound capture, one bpf_link per enrolled pod netns: every TCP
 * connection to an enrolled pod address goes to the pod's tunnel socket,
 * :15008 to the HBONE listener and any other port to :15006. */
#include <linux/bpf.h>
#include <linux/in.h>
#include "lib/net.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

SEC("sk_lookup")
int ambit_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->family != AF_INET)
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
