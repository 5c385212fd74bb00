/* Structures shared by the programs and by userspace (src/datapath/maps.ts
 * encodes the same layouts). All fields are fixed-width and explicitly
 * padded so both sides agree byte for byte. */
#ifndef AMBIT_TYPES_H
#define AMBIT_TYPES_H

#include <linux/types.h>

/* Ports of the tunnel inside every pod netns (same numbers as ztunnel). */
#define AMBIT_PORT_OUTBOUND 15001
#define AMBIT_PORT_INBOUND_PLAIN 15006
#define AMBIT_PORT_INBOUND_HBONE 15008

/* SO_MARK of every socket the tunnel itself dials. In sidecar mode the
 * tunnel runs inside the captured pod's cgroup: the mark is what keeps its
 * own connections from being steered back into it. */
#define AMBIT_SOCKET_MARK 0x616d6274 /* "ambt" */

/* Slots of a pod in the `listeners` sockmap: pod_id * AMBIT_ROLES + role. */
#define AMBIT_ROLE_PLAIN 0
#define AMBIT_ROLE_HBONE 1
#define AMBIT_ROLES 2

#define AMBIT_MAX_PODS 4096
#define AMBIT_MAX_FLOWS 65536
/* Deepest cgroup level searched for an enrolled ancestor (kubepods nests 3-5).
 * Overridable at build time; the upgrade test builds a variant with it. */
#ifndef AMBIT_MAX_CGROUP_DEPTH
#define AMBIT_MAX_CGROUP_DEPTH 12
#endif

/* Value of `enrolled_cgroups` (key: cgroup v2 id = inode of the directory). */
struct pod_entry {
	__u32 pod_id;
	__u32 flags;
};

/* The address an app dialed, before connect4 rewrote it. Network byte order. */
struct orig_dst {
	__u32 ip4;
	__u16 port;
	__u16 _pad;
	__u32 pod_id;
	__u32 _pad2;
};

/* What the tunnel can compute from an accepted :15001 socket: which pod's
 * listener accepted it, and the peer (= client) address and port. */
struct flow_key {
	__u32 pod_id;
	__u32 src_ip4;   /* network byte order */
	__u16 src_port;  /* host byte order */
	__u16 _pad;
};

#endif
