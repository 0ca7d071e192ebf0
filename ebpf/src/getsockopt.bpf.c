// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * cgroup/getsockopt, attached where the proxy runs: answers
 * SO_ORIGINAL_DST (SOL_IP, struct sockaddr_in, 16 bytes) and
 * IP6T_SO_ORIGINAL_DST (SOL_IPV6, struct sockaddr_in6, 28 bytes) for
 * accepted sockets whose client iron_by_tuple knows.
 *
 * It always returns 1: returning 0 would fail every getsockopt in the
 * cgroup. When it answers it sets retval = 0 and optlen, and removes the
 * iron_by_tuple entry: the proxy asks once per accepted connection, and
 * an empty map never has to evict. A question it leaves unanswered (SOL_IP
 * for an IPv6 origin, a short buffer) keeps the entry for the retry.
 */
#include "iron_maps.h"

#define IRON_SO_ORIGINAL_DST 80
#define IRON_SOL_IP	     0
#define IRON_SOL_IPV6	     41

#define IRON_SK_LOAD(dst, field) IRON_LOAD32(dst, sk, struct bpf_sock, field)

SEC("cgroup/getsockopt")
int iron_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk;
	struct iron_tuple t;
	struct iron_origin *o;
	void *optval, *optval_end;
	__u32 src[4], dst[4], orig[4];
	__u32 proto, family, ip4, src_port, dst_port;
	__u16 orig_port;
	int level = ctx->level;

	if (ctx->optname != IRON_SO_ORIGINAL_DST ||
	    (level != IRON_SOL_IP && level != IRON_SOL_IPV6))
		return 1;
	IRON_LOAD64(sk, ctx, struct bpf_sockopt, sk);
	if (!sk)
		return 1;
	IRON_SK_LOAD(proto, protocol);
	if (proto != IPPROTO_TCP)
		return 1;

	/* On the accepted socket the client is the remote end. */
	IRON_SK_LOAD(family, family);
	if (family == IRON_AF_INET) {
		IRON_SK_LOAD(ip4, dst_ip4);
		iron_v4_mapped(src, ip4);
		IRON_SK_LOAD(ip4, src_ip4);
		iron_v4_mapped(dst, ip4);
	} else if (family == IRON_AF_INET6) {
		IRON_SK_LOAD(src[0], dst_ip6[0]);
		IRON_SK_LOAD(src[1], dst_ip6[1]);
		IRON_SK_LOAD(src[2], dst_ip6[2]);
		IRON_SK_LOAD(src[3], dst_ip6[3]);
		IRON_SK_LOAD(dst[0], src_ip6[0]);
		IRON_SK_LOAD(dst[1], src_ip6[1]);
		IRON_SK_LOAD(dst[2], src_ip6[2]);
		IRON_SK_LOAD(dst[3], src_ip6[3]);
	} else {
		return 1;
	}
	IRON_SK_LOAD(src_port, src_port);
	IRON_LOAD16(dst_port, sk, struct bpf_sock, dst_port);
	__builtin_memset(&t, 0, sizeof(t));
	__builtin_memcpy(t.src_addr, src, 16);
	__builtin_memcpy(t.dst_addr, dst, 16);
	t.src_port = (__u16)dst_port;
	t.dst_port = bpf_htons((__u16)src_port);
	o = bpf_map_lookup_elem(&iron_by_tuple, &t);
	if (!o)
		return 1;
	__builtin_memcpy(orig, o->addr, 16);
	orig_port = o->port;

	IRON_LOAD64(optval, ctx, struct bpf_sockopt, optval);
	IRON_LOAD64(optval_end, ctx, struct bpf_sockopt, optval_end);
	if (level == IRON_SOL_IP) {
		struct sockaddr_in *sin = optval;

		if (!iron_is_v4_mapped(orig))
			return 1;
		if ((void *)(sin + 1) > optval_end)
			return 1;
		__builtin_memset(sin, 0, sizeof(*sin));
		sin->sin_family = IRON_AF_INET;
		sin->sin_port = orig_port;
		sin->sin_addr.s_addr = orig[3];
		ctx->optlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = optval;

		if ((void *)(sin6 + 1) > optval_end)
			return 1;
		__builtin_memset(sin6, 0, sizeof(*sin6));
		sin6->sin6_family = IRON_AF_INET6;
		sin6->sin6_port = orig_port;
		__builtin_memcpy(&sin6->sin6_addr, orig, 16);
		ctx->optlen = sizeof(*sin6);
	}
	ctx->retval = 0;
	bpf_map_delete_elem(&iron_by_tuple, &t);
	iron_count(IRON_CNT_ORIGDST_ANSWERED);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
