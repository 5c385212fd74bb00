/* Every map userspace touches. Pinned by name under the agent's pin
 * directory, so redirect.o and inbound.o share them and an agent restart
 * finds them again (libbpf refuses to reuse a pin whose shape changed). */
#ifndef AMBIT_MAPS_H
#define AMBIT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "reasons.h"

/* Pods whose traffic is captured, by cgroup v2 id of the pod's directory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AMBIT_MAX_PODS);
	__type(key, __u64);
	__type(value, struct pod_entry);
} enrolled_cgroups SEC(".maps");

/* Pods whose inbound is captured, by IPv4 address (network order) → pod_id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AMBIT_MAX_PODS * 4);
	__type(key, __u32);
	__type(value, __u32);
} pod_addrs SEC(".maps");

/* Each pod's :15006 and :15008 listening sockets, for sk_lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, AMBIT_MAX_PODS * AMBIT_ROLES);
	__type(key, __u32);
	__type(value, __u64);
} listeners SEC(".maps");

/* connect4 → sockops/getpeername: original destination by socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AMBIT_MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct orig_dst);
} orig_by_cookie SEC(".maps");

/* sockops → tunnel: original destination by what the accepted socket shows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AMBIT_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct orig_dst);
} orig_by_flow SEC(".maps");

/* One slot per reason. Overridable at build time only so that a test can
 * build what an older agent (fewer reasons) pinned; the loader replaces a
 * pinned counters map of another size. */
#ifndef AMBIT_COUNTER_SLOTS
#define AMBIT_COUNTER_SLOTS REASON_MAX
#endif
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AMBIT_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &reason);
	if (n)
		*n += 1;
}

#endif
