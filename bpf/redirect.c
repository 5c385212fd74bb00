// SPDX-License-Identifier: GPL-2.0
/* Outbound capture, attached with bpf_links to the cgroup that holds the
 * node's pods:
 *   connect4      an enrolled pod's TCP connect() goes to its own tunnel
 *                 listener 127.0.0.1:15001; the original destination is
 *                 kept by socket cookie;
 *   connect6      the same for an AF_INET6 socket dialing a v4-mapped
 *                 address (::ffff:a.b.c.d, Java's default): it goes to
 *                 ::ffff:127.0.0.1:15001, the same IPv4 listener. A native
 *                 IPv6 destination is refused (EPERM): the tunnel does not
 *                 carry IPv6 yet, and letting it out would bypass the mesh;
 *   sockops       once the connection is established the client's local
 *                 address is known: republish the destination under the
 *                 key the tunnel computes from the socket it accepted;
 *   getpeername4/6  the app keeps seeing the address it dialed. */
#include <linux/bpf.h>
#include <linux/in.h>
#include "lib/net.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

#define LOOPBACK_NET 0x7f000000
#define LOOPBACK_ADDR 0x7f000001

/* A process sits in its container's cgroup, which is a descendant of the
 * enrolled pod cgroup: look at the process's own cgroup, then at each
 * ancestor. Levels past the process's depth yield 0 and miss. */
static __always_inline struct pod_entry *enrolled_pod(void)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct pod_entry *pod = bpf_map_lookup_elem(&enrolled_cgroups, &id);

	if (pod)
		return pod;
#pragma unroll
	for (int level = 1; level <= AMBIT_MAX_CGROUP_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		pod = bpf_map_lookup_elem(&enrolled_cgroups, &id);
		if (pod)
			return pod;
	}
	return NULL;
}

/* UDP, raw and the tunnel's own sockets are never captured. */
static __always_inline int capturable(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) {
		count(REASON_CONNECT_SKIP_NOT_TCP);
		return 0;
	}
	struct bpf_sock *sk = ctx->sk;
	if (sk && sk->mark == AMBIT_SOCKET_MARK) {
		count(REASON_CONNECT_SKIP_TUNNEL);
		return 0;
	}
	return 1;
}

enum verdict { LEAVE, REDIRECT, REFUSE };

/* Shared by connect4 and connect6 (v4-mapped): decide, and record the
 * original IPv4 destination (network order) by socket cookie. The caller
 * rewrites its own form of the address. */
static __always_inline enum verdict capture_ip4(struct bpf_sock_addr *ctx, __u32 dst)
{
	if ((bpf_ntohl(dst) & 0xff000000) == LOOPBACK_NET) {
		count(REASON_CONNECT_SKIP_LOOPBACK);
		return LEAVE;
	}
	struct pod_entry *pod = enrolled_pod();
	if (!pod) {
		count(REASON_CONNECT_SKIP_NOT_ENROLLED);
		return LEAVE;
	}

	struct orig_dst orig = {
		.ip4 = dst,
		.port = (__u16)ctx->user_port,
		.pod_id = pod->pod_id,
	};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY)) {
		/* Without a record the tunnel could not route it: refuse the
		 * connect rather than let it bypass the mesh. */
		count(REASON_CONNECT_ERR_MAP_FULL);
		return REFUSE;
	}
	return REDIRECT;
}

SEC("cgroup/connect4")
int ambit_connect4(struct bpf_sock_addr *ctx)
{
	if (!capturable(ctx))
		return 1;
	enum verdict v = capture_ip4(ctx, ctx->user_ip4);
	if (v != REDIRECT)
		return v == LEAVE;

	ctx->user_ip4 = bpf_htonl(LOOPBACK_ADDR);
	/* clang may merge the two adjacent context stores into one 8-byte
	 * store, which the verifier rejects for bpf_sock_addr. */
	asm volatile("" ::: "memory");
	ctx->user_port = bpf_htons(AMBIT_PORT_OUTBOUND);
	count(REASON_CONNECT_REDIRECTED);
	return 1;
}

/* ::ffff:0:0/96, words in network order. */
#define V4MAPPED_WORD2 0x0000ffff

SEC("cgroup/connect6")
int ambit_connect6(struct bpf_sock_addr *ctx)
{
	if (!capturable(ctx))
		return 1;
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(V4MAPPED_WORD2)) {
		/* The kernel sends this socket through IPv4 (tcp_v4_connect), but
		 * connect4 never runs for it: capture it here, exactly alike. */
		enum verdict v = capture_ip4(ctx, w3);
		if (v != REDIRECT)
			return v == LEAVE;
		/* The prefix stays ::ffff:0:0/96; only the IPv4 part changes. */
		ctx->user_ip6[3] = bpf_htonl(LOOPBACK_ADDR);
		asm volatile("" ::: "memory");
		ctx->user_port = bpf_htons(AMBIT_PORT_OUTBOUND);
		count(REASON_CONNECT_REDIRECTED_V4MAPPED);
		return 1;
	}

	/* ::1, and :: which Linux connects as ::1, stay inside the pod. */
	if (w0 == 0 && w1 == 0 && w2 == 0 && (w3 == 0 || w3 == bpf_htonl(1))) {
		count(REASON_CONNECT_SKIP_LOOPBACK);
		return 1;
	}
	if (!enrolled_pod()) {
		count(REASON_CONNECT_SKIP_NOT_ENROLLED);
		return 1;
	}
	/* Native IPv6 is not carried by the tunnel: fail closed (EPERM) rather
	 * than let an enrolled pod reach anything around the mesh. Dual-stack
	 * clients fall back to IPv4, which is captured. */
	count(REASON_CONNECT_REFUSED_IPV6);
	return 0;
}

/* The key the tunnel computes from the socket it accepted: its peer (our
 * local address) and the pod whose listener accepted it. */
static __always_inline struct flow_key flow_key_of(struct bpf_sock_ops *ops, struct orig_dst *orig)
{
	struct flow_key key = {
		.pod_id = orig->pod_id,
		.src_ip4 = ops->local_ip4,
		.src_port = (__u16)ops->local_port,
	};
	return key;
}

SEC("sockops")
int ambit_sockops(struct bpf_sock_ops *ops)
{
	struct flow_key key;
	struct orig_dst *orig;
	__u64 cookie;

	/* An AF_INET6 socket connected through a v4-mapped address has
	 * local_ip4 set like an AF_INET one; only captured sockets (those
	 * with a record by cookie) go further. */
	if (ops->family != AF_INET && ops->family != AF_INET6)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(ops);
		orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (!orig)
			return 1;
		key = flow_key_of(ops, orig);
		if (bpf_map_update_elem(&orig_by_flow, &key, orig, BPF_ANY)) {
			count(REASON_SOCKOPS_ERR_MAP_FULL);
			return 1;
		}
		count(REASON_SOCKOPS_PUBLISHED);
		/* Ask for the close callback, to drop both records. */
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		/* The client socket is gone (for an active close: entering
		 * TIME_WAIT, long after the tunnel accepted it): forget both
		 * records, so the tunnel's lookup needs no delete of its own. */
		if (ops->args[1] != BPF_TCP_CLOSE)
			return 1;
		cookie = bpf_get_socket_cookie(ops);
		orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (!orig)
			return 1;
		key = flow_key_of(ops, orig);
		bpf_map_delete_elem(&orig_by_flow, &key);
		bpf_map_delete_elem(&orig_by_cookie, &cookie);
		return 1;
	}
	return 1;
}

SEC("cgroup/getpeername4")
int ambit_peername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);

	if (!orig)
		return 1;
	ctx->user_ip4 = orig->ip4;
	asm volatile("" ::: "memory");
	ctx->user_port = orig->port;
	count(REASON_GETPEERNAME_RESTORED);
	return 1;
}

SEC("cgroup/getpeername6")
int ambit_peername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);

	if (!orig)
		return 1;
	/* Only connect6's v4-mapped path records an AF_INET6 socket, so the
	 * peer is ::ffff:127.0.0.1: swap back the IPv4 part and the port. */
	ctx->user_ip6[3] = orig->ip4;
	asm volatile("" ::: "memory");
	ctx->user_port = orig->port;
	count(REASON_GETPEERNAME_RESTORED);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
