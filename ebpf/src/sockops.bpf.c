// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * sockops: at TCP_CONNECT_CB (after the ephemeral port is chosen, before
 * the SYN) copy the connect-time origin, found in the socket's local
 * storage (iron_sk_origin), into iron_by_tuple keyed by the 4-tuple the
 * proxy will see on accept(). Every other callback returns at once.
 *
 * Byte orders: local_port is host order; remote_port holds the
 * network-order port in its upper 16 bits.
 */
#include "iron_maps.h"

#define IRON_OPS_LOAD(dst, field) \
	IRON_LOAD32(dst, ctx, struct bpf_sock_ops, field)

SEC("sockops")
int iron_sockops(struct bpf_sock_ops *ctx)
{
	struct iron_tuple t;
	struct iron_origin *o;
	struct bpf_sock *sk;
	__u32 op, family, local_port, remote_port, ip4;
	__u32 src[4], dst[4];

	IRON_OPS_LOAD(op, op);
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	/* NULL unless a full socket (always one at TCP_CONNECT_CB). */
	IRON_LOAD64(sk, ctx, struct bpf_sock_ops, sk);
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&iron_sk_origin, sk, 0, 0);
	if (!o)
		return 1;

	IRON_OPS_LOAD(family, family);
	IRON_OPS_LOAD(local_port, local_port);
	IRON_OPS_LOAD(remote_port, remote_port);
	if (family == IRON_AF_INET6) {
		IRON_OPS_LOAD(dst[0], remote_ip6[0]);
		IRON_OPS_LOAD(dst[1], remote_ip6[1]);
		IRON_OPS_LOAD(dst[2], remote_ip6[2]);
		IRON_OPS_LOAD(dst[3], remote_ip6[3]);
	}
	if (family != IRON_AF_INET6 || iron_is_v4_mapped(dst)) {
		/* An IPv6 socket connecting v4-mapped goes through
		 * tcp_v4_connect, which has set only the IPv4 fields yet. */
		IRON_OPS_LOAD(ip4, local_ip4);
		iron_v4_mapped(src, ip4);
		IRON_OPS_LOAD(ip4, remote_ip4);
		iron_v4_mapped(dst, ip4);
	} else {
		IRON_OPS_LOAD(src[0], local_ip6[0]);
		IRON_OPS_LOAD(src[1], local_ip6[1]);
		IRON_OPS_LOAD(src[2], local_ip6[2]);
		IRON_OPS_LOAD(src[3], local_ip6[3]);
	}

	__builtin_memset(&t, 0, sizeof(t));
	__builtin_memcpy(t.src_addr, src, 16);
	__builtin_memcpy(t.dst_addr, dst, 16);
	t.src_port = bpf_htons((__u16)local_port);
	t.dst_port = (__u16)(remote_port >> 16);
	if (bpf_map_update_elem(&iron_by_tuple, &t, o, BPF_ANY) == 0)
		iron_count(IRON_CNT_TUPLE_RECORDED);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
