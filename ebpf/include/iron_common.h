/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Map layouts shared by iron-proxy's eBPF programs and userspace.
 *
 * The Rust crate `ebpf-common` is the source of truth: `ebpf/build.rs`
 * generates static assertions from the Rust types (sizes, offsets, and
 * constant values) and compiles them against this header, so the build
 * fails when the two drift.
 *
 * Byte orders: every address is 16 bytes, IPv4 written v4-mapped
 * (::ffff:a.b.c.d), network order. Every port is network order (__be16).
 */
#ifndef IRON_COMMON_H
#define IRON_COMMON_H

#include <linux/types.h>

/* Per-CPU counter indices (map iron_counters). */
#define IRON_CNT_REDIRECTED	  0
#define IRON_CNT_DENIED		  1
#define IRON_CNT_UDP_REFUSED	  2
#define IRON_CNT_DNS_REDIRECTED	  3
#define IRON_CNT_RAW_REFUSED	  4
#define IRON_CNT_PROXY_EXEMPT	  5
#define IRON_CNT_TUPLE_RECORDED	  6
#define IRON_CNT_ORIGDST_ANSWERED 7
#define IRON_CNT_UNCONFIGURED	  8
#define IRON_CNT_BACKSTOP_DROPPED 9
#define IRON_CNT_FOREIGN_LISTENER 10
#define IRON_CNT_MAX		  11

/* Classes a deny entry applies to (bitmask, the LPM trie's value). */
#define IRON_CLASS_WORKLOAD 1
#define IRON_CLASS_PROXY    2

/* iron_config.flags */
#define IRON_F_CONFIGURED 1  /* unset: workloads fail closed (EPERM) */
#define IRON_F_LISTEN_V6  2  /* listen_v6 is valid */
#define IRON_F_DNS_V4	  4  /* dns_v4 is valid */
#define IRON_F_DNS_V6	  8  /* dns_v6 is valid */
#define IRON_F_UID_FILTER 16 /* only uids in iron_uids are intercepted */
#define IRON_F_PROXY_UID  32 /* proxy_uid is valid */
#define IRON_F_ANSWER_V4  64 /* answer_v4 is valid */
#define IRON_F_ANSWER_V6  128 /* answer_v6 is valid */
#define IRON_F_LISTENER_PRIORITY 256 /* check the listener's SO_PRIORITY */
#define IRON_F_DNS_LISTENER_PRIORITY 512 /* check the DNS listener's too */

/* SO_PRIORITY of the proxy's transparent and DNS listeners (> 6: CAP_NET_ADMIN
 * or CAP_NET_RAW only, in the socket's network namespace). */
#define IRON_LISTENER_PRIORITY 0x49524f4e

/* Map sizes. */
#define IRON_CFG_SLOTS	 2
#define IRON_DENY_MAX	 4096
#define IRON_UIDS_MAX	 1024
#define IRON_UID_RANGES	 8 /* uid ranges in iron_config (subordinate uids) */
#define IRON_ORIGINS_MAX 65536
#define IRON_COOKIE_ORIGINS_MAX 16384
#define IRON_DNS_SENDERS_MAX 16384

/* Interception settings, double-buffered: iron_cfg_sel says which slot
 * of iron_cfg is live, so a program never reads a half-written one. */
struct iron_config {
	__u8 listen_v6[16];
	__u8 dns_v6[16];
	/* What the proxy's DNS server answers (dns.proxy_ip, v4-mapped, and
	 * dns.proxy_ip6): a TCP connect there goes to the listener even
	 * where a deny range covers it. */
	__u8 answer_v4[16];
	__u8 answer_v6[16];
	/* Selected uid ranges besides iron_uids (the selected users'
	 * subordinate uids): [start, start + count); count 0: unused. */
	__u32 uid_range_start[IRON_UID_RANGES];
	__u32 uid_range_count[IRON_UID_RANGES];
	__u64 proxy_cgroup_id; /* 0: unused */
	__u32 listen_v4;       /* network order */
	__u32 dns_v4;	       /* network order */
	__u32 proxy_tgid;      /* 0: unused */
	__u32 proxy_uid;       /* valid if IRON_F_PROXY_UID */
	__u32 flags;
	__u16 listen_v4_port;
	__u16 listen_v6_port;
	__u16 dns_v4_port;
	__u16 dns_v6_port;
	__u32 pad;
};

/* Key of the deny LPM trie: prefixlen counts bits of the 16-byte,
 * v4-mapped address (an IPv4 /n is 96 + n). */
struct iron_deny_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Original destination and the process that connected. */
struct iron_origin {
	__u64 cgroup_id;
	__u8 addr[16];
	__u32 pid; /* thread id */
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	__u16 port;
	__u16 family; /* AF_INET or AF_INET6 of the connecting socket */
	__u32 pad;
	char comm[16];
};

/* The client's 4-tuple as the proxy sees it on the accepted socket:
 * src = the workload's address and ephemeral port, dst = the listener. */
struct iron_tuple {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u16 src_port;
	__u16 dst_port;
	__u32 pad;
};

/* The workload that sent a redirected DNS datagram: the uid and cgroup
 * of the origin recorded for its socket. */
struct iron_sender {
	__u64 cgroup_id;
	__u32 uid;
	__u32 pad;
};

#endif /* IRON_COMMON_H */
