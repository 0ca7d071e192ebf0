/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The policy shared by the connect and sendmsg programs: deny list,
 * proxy exemption, uid selection, DNS and TCP redirection.
 */
#ifndef IRON_SOCK_ADDR_H
#define IRON_SOCK_ADDR_H

#include "iron_maps.h"

enum iron_action {
	IRON_PASS,	  /* leave the call alone */
	IRON_FAIL,	  /* fail the call with EPERM */
	IRON_TO_LISTENER, /* rewrite to the transparent listener */
	IRON_TO_DNS,	  /* rewrite to the DNS listener */
};

/* Marks this socket as the proxy's, in its socket-local storage, for the
 * cgroup_skb backstop. Loopback destinations need no mark (the backstop
 * lets them through), which spares the proxy's local chatter an
 * allocation. A socket already marked is found and left alone; if the
 * storage cannot be allocated the socket stays unmarked, and the backstop
 * drops its packets beyond loopback (fails closed). */
static __always_inline void iron_mark_proxy(struct bpf_sock_addr *ctx,
					    const __u32 a[4])
{
	struct bpf_sock *sk;
	__u32 one = 1;

	if (iron_is_loopback(a))
		return;
	IRON_LOAD64(sk, ctx, struct bpf_sock_addr, sk);
	if (!sk)
		return;
	bpf_sk_storage_get(&iron_sk_proxy, sk, &one,
			   BPF_SK_STORAGE_GET_F_CREATE);
}

/* Whether the 16-byte address `a` is the 16-byte `b`. */
static __always_inline int iron_same_addr(const __u32 a[4], const __u8 b[16])
{
	__u32 w[4];

	__builtin_memcpy(w, b, 16);
	return a[0] == w[0] && a[1] == w[1] && a[2] == w[2] && a[3] == w[3];
}

/* Whether `a` is an address the proxy's DNS server answers with. */
static __always_inline int iron_is_answer(const struct iron_config *cfg,
					  const __u32 a[4])
{
	return ((cfg->flags & IRON_F_ANSWER_V4) &&
		iron_same_addr(a, cfg->answer_v4)) ||
	       ((cfg->flags & IRON_F_ANSWER_V6) &&
		iron_same_addr(a, cfg->answer_v6));
}

/*
 * Decides what happens to a connect or sendmsg of protocol `proto` to the
 * 16-byte address `a` and network-order `port`. `dns_ok` says whether a
 * DNS listener of a usable family is configured.
 *
 * Order: unconfigured fails closed; the proxy is only subject to the
 * proxy-class deny entries; unselected uids pass; port 53 goes to the
 * DNS listener (whatever resolver was asked, before the deny list, so a
 * stub resolver on 127.0.0.53 keeps working); TCP to the address the
 * proxy's DNS answers with goes to the listener (before the deny list:
 * that answer is usually 127.0.0.1, and a workload that follows it is
 * headed for the proxy); workload-class deny entries fail; TCP goes to
 * the listener; everything else fails.
 */
static __always_inline enum iron_action
iron_decide(struct bpf_sock_addr *ctx, const struct iron_config *cfg,
	    __u32 proto,
	    const __u32 a[4], __u16 port, int dns_ok)
{
	if (!iron_configured(cfg)) {
		iron_count(IRON_CNT_UNCONFIGURED);
		return IRON_FAIL;
	}
	if (iron_is_proxy(cfg)) {
		if (iron_denied(a, IRON_CLASS_PROXY)) {
			iron_count(IRON_CNT_DENIED);
			return IRON_FAIL;
		}
		iron_count(IRON_CNT_PROXY_EXEMPT);
		iron_mark_proxy(ctx, a);
		return IRON_PASS;
	}
	if (!iron_uid_selected(cfg))
		return IRON_PASS;
	if (port == bpf_htons(53) && dns_ok &&
	    (proto == IPPROTO_UDP || proto == IPPROTO_TCP))
		return IRON_TO_DNS;
	if (proto == IPPROTO_TCP && iron_is_answer(cfg, a))
		return IRON_TO_LISTENER;
	if (iron_denied(a, IRON_CLASS_WORKLOAD)) {
		iron_count(IRON_CNT_DENIED);
		return IRON_FAIL;
	}
	if (proto == IPPROTO_TCP)
		return IRON_TO_LISTENER;
	if (proto == IPPROTO_UDP)
		iron_count(IRON_CNT_UDP_REFUSED);
	return IRON_FAIL;
}

/* Remembers where this socket wanted to go: in iron_cookie_origin, or in
 * the socket's local storage when that map is full. Replaced whole on each
 * call: a UDP socket that two threads send from at once shows recvmsg the
 * resolver of the last sendmsg (as with any last-writer-wins record); TCP
 * reads it later in the same connect(). If neither can be written nothing
 * is recorded, and the proxy, finding no origin, refuses the connection. */
static __always_inline void iron_record(struct bpf_sock_addr *ctx,
					const __u32 a[4], __u16 port,
					__u16 family)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct iron_origin rec, *o;
	struct bpf_sock *sk;

	iron_fill_origin(&rec, a, port, family);
	if (bpf_map_update_elem(&iron_cookie_origin, &cookie, &rec,
				BPF_ANY) == 0)
		return;
	IRON_LOAD64(sk, ctx, struct bpf_sock_addr, sk);
	if (!sk)
		return;
	o = bpf_sk_storage_get(&iron_sk_origin, sk, 0,
			       BPF_SK_STORAGE_GET_F_CREATE);
	if (o)
		__builtin_memcpy(o, &rec, sizeof(rec));
}

/* Whether a DNS listener usable from an IPv4 socket exists. */
static __always_inline int iron_dns_ok4(const struct iron_config *cfg)
{
	return cfg && (cfg->flags & IRON_F_DNS_V4);
}

/* Whether a DNS listener usable for this IPv6-socket address exists:
 * v4-mapped needs the v4 listener, native IPv6 the v6 one. The kernel
 * refuses a native IPv6 UDP destination rewritten v4-mapped (sendmsg6:
 * ENOTSUPP, connect6: EPERM), so there is no fallback. */
static __always_inline int iron_dns_ok6(const struct iron_config *cfg,
					int mapped)
{
	if (!cfg)
		return 0;
	return cfg->flags & (mapped ? IRON_F_DNS_V4 : IRON_F_DNS_V6);
}

/* Writes a 16-byte address into ctx->user_ip6. */
static __always_inline void iron_set_ip6(struct bpf_sock_addr *ctx,
					 const __u32 a[4])
{
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
}

/* Rewrites an IPv6-socket destination to the transparent or DNS listener.
 * Native IPv6 TCP goes to the v6 listener when configured, else to the v4
 * listener v4-mapped; DNS goes to the listener of its own family (see
 * iron_dns_ok6). */
static __always_inline void iron_redirect6(struct bpf_sock_addr *ctx,
					   const struct iron_config *cfg,
					   int mapped, int dns)
{
	__u32 t[4];
	__u16 port;

	if (dns && !mapped) {
		iron_words(t, cfg->dns_v6);
		port = cfg->dns_v6_port;
	} else if (dns) {
		iron_v4_mapped(t, cfg->dns_v4);
		port = cfg->dns_v4_port;
	} else if (!mapped && (cfg->flags & IRON_F_LISTEN_V6)) {
		iron_words(t, cfg->listen_v6);
		port = cfg->listen_v6_port;
	} else {
		iron_v4_mapped(t, cfg->listen_v4);
		port = cfg->listen_v4_port;
	}
	iron_set_ip6(ctx, t);
	ctx->user_port = port;
}

/*
 * Whether the socket bound at `t` (`size` says IPv4 or IPv6), a TCP
 * listener or, with `udp`, a UDP socket, is the proxy's: one with
 * IRON_LISTENER_PRIORITY, which only CAP_NET_ADMIN or CAP_NET_RAW can set
 * (the threat model excludes both). While the
 * proxy is down, another local user may have bound the port; the
 * redirect is then refused instead of handed to that process.
 * No socket there at all is refused too (counted the same): the proxy
 * binds its listener and DNS sockets before it attaches, so that happens
 * only while it is down, where a connect would meet a closed port anyway
 * (EPERM instead of ECONNREFUSED); passing it left a race open to a
 * process that binds, listens and closes the port in a loop, whose
 * socket could appear between this check and the SYN or datagram.
 */
static __always_inline int iron_sock_marked(struct bpf_sock_addr *ctx,
					    struct bpf_sock_tuple *t,
					    __u32 size, int udp)
{
	struct bpf_sock *sk;
	int ours;

	if (udp)
		sk = bpf_sk_lookup_udp(ctx, t, size, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_tcp(ctx, t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		iron_count(IRON_CNT_FOREIGN_LISTENER);
		return 0;
	}
	ours = sk->priority == IRON_LISTENER_PRIORITY;
	bpf_sk_release(sk);
	if (!ours)
		iron_count(IRON_CNT_FOREIGN_LISTENER);
	return ours;
}

/*
 * Whether the transparent listener a redirect sends this connect to is
 * the proxy's (iron_sock_marked). Without IRON_F_LISTENER_PRIORITY (a
 * loader that does not mark its listener) nothing is checked. `v4`
 * selects the IPv4 listener (an IPv4 socket, or a v4-mapped IPv6
 * destination).
 */
static __always_inline int iron_listener_ours(struct bpf_sock_addr *ctx,
					      const struct iron_config *cfg,
					      int v4)
{
	struct bpf_sock_tuple t = {};

	if (!(cfg->flags & IRON_F_LISTENER_PRIORITY))
		return 1;
	if (v4) {
		t.ipv4.daddr = cfg->listen_v4;
		t.ipv4.dport = cfg->listen_v4_port;
		return iron_sock_marked(ctx, &t, sizeof(t.ipv4), 0);
	}
	__builtin_memcpy(t.ipv6.daddr, cfg->listen_v6, 16);
	t.ipv6.dport = cfg->listen_v6_port;
	return iron_sock_marked(ctx, &t, sizeof(t.ipv6), 0);
}

/*
 * Whether the DNS listener a redirect of port 53 sends this connect or
 * datagram to is the proxy's (iron_sock_marked): its TCP listener for
 * TCP, its UDP socket for UDP. Without IRON_F_DNS_LISTENER_PRIORITY
 * nothing is checked. `v4` selects the IPv4 DNS listener, as
 * iron_redirect6 does.
 */
static __always_inline int iron_dns_listener_ours(struct bpf_sock_addr *ctx,
						  const struct iron_config *cfg,
						  __u32 proto, int v4)
{
	struct bpf_sock_tuple t = {};
	int udp = proto == IPPROTO_UDP;

	if (!(cfg->flags & IRON_F_DNS_LISTENER_PRIORITY))
		return 1;
	if (v4) {
		t.ipv4.daddr = cfg->dns_v4;
		t.ipv4.dport = cfg->dns_v4_port;
		return iron_sock_marked(ctx, &t, sizeof(t.ipv4), udp);
	}
	__builtin_memcpy(t.ipv6.daddr, cfg->dns_v6, 16);
	t.ipv6.dport = cfg->dns_v6_port;
	return iron_sock_marked(ctx, &t, sizeof(t.ipv6), udp);
}

/* Reads ctx->user_ip6 as four words. */
static __always_inline void iron_get_ip6(struct bpf_sock_addr *ctx, __u32 a[4])
{
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
}

#endif /* IRON_SOCK_ADDR_H */
