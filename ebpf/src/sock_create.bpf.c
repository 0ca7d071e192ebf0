// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * cgroup/sock_create: workloads may create only TCP stream and UDP
 * datagram sockets (AF_INET/AF_INET6). Raw sockets, ICMP "ping"
 * sockets, SCTP, MPTCP and UDP-Lite bypass or complicate the sock_addr
 * hooks, so they fail with EPERM. AF_PACKET sockets never reach this
 * hook (it runs for inet sockets only); they need CAP_NET_RAW.
 *
 * cgroup/setsockopt (below): no multicast membership, no IPv6 routing
 * header.
 *
 * cgroup/sock_release: a closed socket's origin leaves iron_cookie_origin
 * (a socket that was not redirected has none; the delete then finds
 * nothing). Attached before the connect and sendmsg hooks, so no socket
 * records an origin that its release would miss.
 */
#include "iron_maps.h"

SEC("cgroup/sock_create")
int iron_sock_create(struct bpf_sock *ctx)
{
	struct iron_config *cfg;
	__u32 type = ctx->type;
	__u32 proto = ctx->protocol;

	/* TCP and UDP pass without a map lookup. */
	if (type == IRON_SOCK_STREAM && proto == IPPROTO_TCP)
		return 1;
	if (type == IRON_SOCK_DGRAM && proto == IPPROTO_UDP)
		return 1;
	cfg = iron_cfg_load();
	/* An unconfigured map fails closed, like the connect hooks. */
	if (iron_configured(cfg) &&
	    (iron_is_proxy(cfg) || !iron_uid_selected(cfg)))
		return 1;
	iron_count(IRON_CNT_RAW_REFUSED);
	return 0;
}

/* Multicast membership options at SOL_IP and SOL_IPV6 (linux/in.h,
 * linux/in6.h): IP_ADD_MEMBERSHIP .. IP_MSFILTER (35-41),
 * MCAST_JOIN_GROUP .. MCAST_MSFILTER (42-48, both levels),
 * IPV6_ADD_MEMBERSHIP (20) and IPV6_JOIN_ANYCAST (27). */
#define IRON_SOL_IP   0
#define IRON_SOL_IPV6 41

static __always_inline int iron_is_membership(int level, int name)
{
	if (level == IRON_SOL_IP)
		return name >= 35 && name <= 48;
	if (level == IRON_SOL_IPV6)
		return name == 20 || name == 27 || (name >= 42 && name <= 48);
	return 0;
}

/* IPV6_RTHDR (linux/in6.h): a routing header sent with every packet of
 * the socket. */
#define IRON_IPV6_RTHDR 57

/* Whether the option sets an IPv6 routing header. Unlike the other
 * extension headers (IPV6_HOPOPTS, IPV6_DSTOPTS, IPV6_RTHDRDSTOPTS:
 * CAP_NET_RAW), the kernel lets any user set one: a type 4 segment
 * routing header whose first segment is ::1 passes the connect and
 * sendmsg hooks and reaches loopback, and where the host processes
 * segment routing (seg6_enabled) and forwards, goes on from there to
 * its later segments, anywhere. (The per-packet form, an IPV6_RTHDR
 * control message, takes only a type 2 header, which is not forwarded.) */
static __always_inline int iron_is_routing_header(int level, int name)
{
	return level == IRON_SOL_IPV6 && name == IRON_IPV6_RTHDR;
}

/*
 * cgroup/setsockopt: a workload may not join a multicast group. The
 * kernel itself sends the IGMP/MLD membership reports a join causes,
 * carrying the groups and sources the workload chose, out of the
 * interface it names, and no hook of a workload's sees them (they
 * belong to no socket of its): a channel out of the host past the
 * proxy. Workloads cannot use multicast anyway (any UDP but DNS is
 * refused). EPERM, counted as udp_refused.
 *
 * Nor set an IPv6 routing header (iron_is_routing_header): EPERM, not
 * counted (no counter fits; the backstop would drop the packets anyway,
 * see iron_ip6_ext in skb.bpf.c).
 */
SEC("cgroup/setsockopt")
int iron_setsockopt(struct bpf_sockopt *ctx)
{
	struct iron_config *cfg;
	int level = ctx->level, name = ctx->optname;
	int membership = iron_is_membership(level, name);

	if (membership || iron_is_routing_header(level, name)) {
		cfg = iron_cfg_load();
		if (!iron_configured(cfg) ||
		    (!iron_is_proxy(cfg) && iron_uid_selected(cfg))) {
			if (membership)
				iron_count(IRON_CNT_UDP_REFUSED);
			return 0;
		}
	}
	/* Passed on unchanged. Over a page the program sees only the
	 * first page of the value: 0 tells the kernel to use the
	 * caller's buffer as it is (kernels before 6.5 answer EFAULT
	 * otherwise). */
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

/* The verdict is ignored: the socket is released either way. */
SEC("cgroup/sock_release")
int iron_sock_release(struct bpf_sock *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	bpf_map_delete_elem(&iron_cookie_origin, &cookie);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
