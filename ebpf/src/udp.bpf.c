// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * UDP and reply-side programs:
 * - cgroup/sendmsg4|6: unconnected sendto() to port 53 goes to the DNS
 *   listener (when the socket bound there is the proxy's), other UDP
 *   fails with EPERM (connect4|6 cover send() on a
 *   connected socket, which skips these hooks);
 * - cgroup/recvmsg4|6: datagrams from the DNS listener appear to come
 *   from the resolver the workload asked;
 * - cgroup/getpeername4|6: a redirected socket (TCP or UDP) reports its
 *   original peer.
 * recvmsg and getpeername programs must return 1.
 */
#include "iron_sock_addr.h"

SEC("cgroup/sendmsg4")
int iron_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	__u16 port = (__u16)ctx->user_port;
	__u32 a[4];
	enum iron_action act;

	iron_v4_mapped(a, ctx->user_ip4);
	act = iron_decide(ctx, cfg, ctx->protocol, a, port, iron_dns_ok4(cfg));
	if (act == IRON_PASS)
		return IRON_ALLOW;
	if (act != IRON_TO_DNS || !cfg)
		return IRON_REFUSE;
	if (!iron_dns_listener_ours(ctx, cfg, IPPROTO_UDP, 1))
		return IRON_REFUSE;
	iron_record(ctx, a, port, IRON_AF_INET);
	ctx->user_ip4 = cfg->dns_v4;
	ctx->user_port = cfg->dns_v4_port;
	iron_count(IRON_CNT_DNS_REDIRECTED);
	return IRON_ALLOW;
}

SEC("cgroup/sendmsg6")
int iron_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	__u16 port = (__u16)ctx->user_port;
	__u32 a[4];
	enum iron_action act;
	int mapped;

	iron_get_ip6(ctx, a);
	mapped = iron_is_v4_mapped(a);
	act = iron_decide(ctx, cfg, ctx->protocol, a, port,
			  iron_dns_ok6(cfg, mapped));
	if (act == IRON_PASS)
		return IRON_ALLOW;
	if (act != IRON_TO_DNS || !cfg)
		return IRON_REFUSE;
	if (!iron_dns_listener_ours(ctx, cfg, IPPROTO_UDP, mapped))
		return IRON_REFUSE;
	iron_record(ctx, a, port, IRON_AF_INET6);
	iron_redirect6(ctx, cfg, mapped, 1);
	iron_count(IRON_CNT_DNS_REDIRECTED);
	return IRON_ALLOW;
}

/* Whether (a, port) is one of the listeners a socket may be redirected
 * to, as seen from an IPv6 socket (v4 listeners appear v4-mapped). */
static __always_inline int iron_is_listener6(const struct iron_config *cfg,
					     const __u32 a[4], __u16 port)
{
	__u32 t[4];

	if (iron_is_v4_mapped(a)) {
		if (a[3] == cfg->listen_v4 && port == cfg->listen_v4_port)
			return 1;
		return (cfg->flags & IRON_F_DNS_V4) && a[3] == cfg->dns_v4 &&
		       port == cfg->dns_v4_port;
	}
	if ((cfg->flags & IRON_F_LISTEN_V6) && port == cfg->listen_v6_port) {
		iron_words(t, cfg->listen_v6);
		if (a[0] == t[0] && a[1] == t[1] && a[2] == t[2] &&
		    a[3] == t[3])
			return 1;
	}
	if ((cfg->flags & IRON_F_DNS_V6) && port == cfg->dns_v6_port) {
		iron_words(t, cfg->dns_v6);
		if (a[0] == t[0] && a[1] == t[1] && a[2] == t[2] &&
		    a[3] == t[3])
			return 1;
	}
	return 0;
}

static __always_inline int iron_is_listener4(const struct iron_config *cfg,
					     __u32 ip4, __u16 port)
{
	if (ip4 == cfg->listen_v4 && port == cfg->listen_v4_port)
		return 1;
	return (cfg->flags & IRON_F_DNS_V4) && ip4 == cfg->dns_v4 &&
	       port == cfg->dns_v4_port;
}

/* The origin connect/sendmsg recorded on this socket, or NULL. */
static __always_inline struct iron_origin *
iron_origin_of(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk;

	IRON_LOAD64(sk, ctx, struct bpf_sock_addr, sk);
	return iron_origin_find(bpf_get_socket_cookie(ctx), sk);
}

/* Shows the original peer in place of a listener's address (IPv4). */
static __always_inline void iron_restore4(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	struct iron_origin *o;
	__u32 orig[4];

	if (!iron_configured(cfg))
		return;
	o = iron_origin_of(ctx);
	if (!o)
		return;
	if (!iron_is_listener4(cfg, ctx->user_ip4, (__u16)ctx->user_port))
		return;
	iron_words(orig, o->addr);
	if (!iron_is_v4_mapped(orig))
		return;
	ctx->user_ip4 = orig[3];
	ctx->user_port = o->port;
}

/* Shows the original peer in place of a listener's address (IPv6). */
static __always_inline void iron_restore6(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	struct iron_origin *o;
	__u32 cur[4], orig[4];

	if (!iron_configured(cfg))
		return;
	o = iron_origin_of(ctx);
	if (!o)
		return;
	iron_get_ip6(ctx, cur);
	if (!iron_is_listener6(cfg, cur, (__u16)ctx->user_port))
		return;
	iron_words(orig, o->addr);
	iron_set_ip6(ctx, orig);
	ctx->user_port = o->port;
}

SEC("cgroup/recvmsg4")
int iron_recvmsg4(struct bpf_sock_addr *ctx)
{
	iron_restore4(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int iron_recvmsg6(struct bpf_sock_addr *ctx)
{
	iron_restore6(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int iron_getpeername4(struct bpf_sock_addr *ctx)
{
	iron_restore4(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int iron_getpeername6(struct bpf_sock_addr *ctx)
{
	iron_restore6(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
