// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * cgroup/sock_create: workloads may create only TCP stream and UDP
 * datagram sockets (AF_INET/AF_INET6). Raw sockets, ICMP "ping"
 * sockets, SCTP, MPTCP and UDP-Lite bypass or complicate the sock_addr
 * hooks, so they fail with EPERM. AF_PACKET sockets never reach this
 * hook (it runs for inet sockets only); they need CAP_NET_RAW.
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

/* The verdict is ignored: the socket is released either way. */
SEC("cgroup/sock_release")
int iron_sock_release(struct bpf_sock *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	bpf_map_delete_elem(&iron_cookie_origin, &cookie);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
