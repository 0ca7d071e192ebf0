/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Maps and helpers shared by every iron-proxy program. Each object file
 * carries the same definitions; the maps are pinned by name, so the
 * loader creates them once and every object reuses the pinned ones.
 */
#ifndef IRON_MAPS_H
#define IRON_MAPS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "iron_common.h"

#define IRON_AF_INET	 2
#define IRON_AF_INET6	 10
#define IRON_SOCK_STREAM 1
#define IRON_SOCK_DGRAM	 2

/*
 * Explicit context loads. clang 14 may compute `ctx + off` once and
 * dereference it later, or do arithmetic on a socket pointer; the
 * verifier rejects both ("dereference of modified ctx ptr", "pointer
 * arithmetic on sock prohibited"). These emit one load at a constant
 * offset from the unmodified pointer.
 */
#define IRON_LOAD32(dst, ptr, type, field)    \
	asm volatile("%0 = *(u32 *)(%1 + %2)" \
		     : "=r"(dst)              \
		     : "r"(ptr), "i"(__builtin_offsetof(type, field)))
#define IRON_LOAD16(dst, ptr, type, field)    \
	asm volatile("%0 = *(u16 *)(%1 + %2)" \
		     : "=r"(dst)              \
		     : "r"(ptr), "i"(__builtin_offsetof(type, field)))
#define IRON_LOAD64(dst, ptr, type, field)    \
	asm volatile("%0 = *(u64 *)(%1 + %2)" \
		     : "=r"(dst)              \
		     : "r"(ptr), "i"(__builtin_offsetof(type, field)))

/* Verdicts of sock_addr programs: 1 lets the call proceed, 0 fails it
 * with EPERM. */
#define IRON_ALLOW  1
#define IRON_REFUSE 0

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IRON_CFG_SLOTS);
	__type(key, __u32);
	__type(value, struct iron_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_cfg_sel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, IRON_DENY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct iron_deny_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IRON_UIDS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_uids SEC(".maps");

/* The connect-time origin of a redirected socket, stored on the socket
 * itself (socket-local storage): written by connect4/6 and sendmsg4/6
 * when iron_cookie_origin is full, read by the egress program (on a TCP
 * SYN) and by recvmsg/getpeername. Freed with the socket, so it never
 * fills up and never evicts. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct iron_origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_sk_origin SEC(".maps");

/* Origins by the client's 4-tuple, for the proxy's lookup on accept:
 * written by the egress program on the SYN, removed when the proxy reads
 * the entry (its lookup, or the getsockopt program's answer). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IRON_ORIGINS_MAX);
	__type(key, struct iron_tuple);
	__type(value, struct iron_origin);
	/* Per-CPU LRU lists: no shared lock on insert, eviction stays local. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_by_tuple SEC(".maps");

/* The connect-time origin of a redirected socket by its socket cookie:
 * written by connect4/6 and sendmsg4/6, read like iron_sk_origin, removed
 * by the sock_release program when the socket is closed. Tried before
 * iron_sk_origin because a preallocated hash entry costs a fraction of a
 * socket's first local storage (an allocation, a memory charge, and an
 * RCU-deferred free at close). When it is full (more redirected sockets
 * open at once than it holds), the origin goes to iron_sk_origin. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IRON_COOKIE_ORIGINS_MAX);
	__type(key, __u64);
	__type(value, struct iron_origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_cookie_origin SEC(".maps");

/* The workload of each redirected UDP socket that sent DNS datagrams, by
 * the datagrams' 4-tuple (the one the proxy's UDP DNS server sees on
 * recvfrom: the socket's address and port, the DNS listener's): written
 * by the egress program when the entry is missing or names another
 * workload, read by the proxy and never removed by it (a socket sends
 * many queries). Kept apart from iron_by_tuple, whose entries the proxy
 * takes out as it accepts: entries no one removes would fill that map,
 * and its evictions would take the original destination of connections
 * not accepted yet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IRON_DNS_SENDERS_MAX);
	__type(key, struct iron_tuple);
	__type(value, struct iron_sender);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_dns_senders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IRON_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_counters SEC(".maps");

/* The mark of a proxy socket that sent beyond loopback (value 1), stored
 * on the socket itself: set by the connect and sendmsg programs (which see
 * the calling task), read by the cgroup_skb backstop (which sees only the
 * socket). Freed with the socket, so a mark is never evicted however many
 * sockets the proxy opens. Kept apart from iron_sk_origin, whose presence
 * means "redirected" to the egress program, recvmsg and getpeername. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iron_sk_proxy SEC(".maps");

/* The live configuration slot, or NULL (treated as unconfigured). */
static __always_inline struct iron_config *iron_cfg_load(void)
{
	__u32 zero = 0;
	__u32 *sel = bpf_map_lookup_elem(&iron_cfg_sel, &zero);
	__u32 slot;

	if (!sel)
		return NULL;
	slot = *sel & 1;
	return bpf_map_lookup_elem(&iron_cfg, &slot);
}

static __always_inline void iron_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&iron_counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline int iron_configured(const struct iron_config *cfg)
{
	return cfg && (cfg->flags & IRON_F_CONFIGURED);
}

/* Whether the current task is the proxy itself: its uid (when the proxy
 * has one of its own), or its process id together with its cgroup. A pid
 * alone is not enough: once the proxy has exited, a workload that forks
 * until it is handed the same pid would pass as the proxy, while the pins
 * keep the old settings (fail closed). A cgroup id is never reused, and a
 * workload cannot move itself into the proxy's cgroup (unless it may write
 * to that cgroup's tree: never delegate it). Either field may be given
 * alone (0: unused). */
static __always_inline int iron_is_proxy(const struct iron_config *cfg)
{
	if ((cfg->flags & IRON_F_PROXY_UID) &&
	    (__u32)bpf_get_current_uid_gid() == cfg->proxy_uid)
		return 1;
	if (!cfg->proxy_tgid && !cfg->proxy_cgroup_id)
		return 0;
	/* The pid first: for a workload it differs, and the cgroup lookup
	 * is skipped. */
	if (cfg->proxy_tgid &&
	    (__u32)(bpf_get_current_pid_tgid() >> 32) != cfg->proxy_tgid)
		return 0;
	return !cfg->proxy_cgroup_id ||
	       bpf_get_current_cgroup_id() == cfg->proxy_cgroup_id;
}

/* Whether `uid` is selected: in iron_uids, or in one of the config's uid
 * ranges (a selected user's subordinate uids: with newuidmap a user can run
 * processes as those in a user namespace, and they must not escape). */
static __always_inline int iron_uid_in(const struct iron_config *cfg, __u32 uid)
{
	int i;

	if (bpf_map_lookup_elem(&iron_uids, &uid))
		return 1;
#pragma unroll
	for (i = 0; i < IRON_UID_RANGES; i++) {
		if (cfg->uid_range_count[i] &&
		    uid - cfg->uid_range_start[i] < cfg->uid_range_count[i])
			return 1;
	}
	return 0;
}

/* Whether the current task's uid is selected for interception. */
static __always_inline int iron_uid_selected(const struct iron_config *cfg)
{
	if (!(cfg->flags & IRON_F_UID_FILTER))
		return 1;
	return iron_uid_in(cfg, (__u32)bpf_get_current_uid_gid());
}

static __always_inline void iron_v4_mapped(__u32 a[4], __u32 ip4)
{
	a[0] = 0;
	a[1] = 0;
	a[2] = bpf_htonl(0xffff);
	a[3] = ip4;
}

static __always_inline int iron_is_v4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Whether the 16-byte address is loopback: 127.0.0.0/8 (v4-mapped) or ::1. */
static __always_inline int iron_is_loopback(const __u32 a[4])
{
	if (iron_is_v4_mapped(a))
		return (bpf_ntohl(a[3]) >> 24) == 127;
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* Whether a deny entry of this class covers the 16-byte address. */
static __always_inline int iron_denied(const __u32 a[4], __u32 class)
{
	struct iron_deny_key key = {.prefixlen = 128};
	__u32 b[4] = {a[0], a[1], a[2], a[3]};
	__u32 *mask;

	/* A connect() to the unspecified address (0.0.0.0, ::) reaches this
	 * host's loopback: it is judged as 127.0.0.1 or ::1, as the proxy
	 * judges it (upstream/deny.rs). */
	if (b[0] == 0 && b[1] == 0 && b[3] == 0) {
		if (b[2] == 0)
			b[3] = bpf_htonl(1);
		else if (b[2] == bpf_htonl(0xffff))
			b[3] = bpf_htonl(0x7f000001);
	}
	__builtin_memcpy(key.addr, b, 16);
	mask = bpf_map_lookup_elem(&iron_deny, &key);
	return mask && (*mask & class);
}

/* Fills an origin record: where the task wanted to go, and who it is. */
static __always_inline void iron_fill_origin(struct iron_origin *o,
					     const __u32 a[4], __u16 port,
					     __u16 family)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	__builtin_memset(o, 0, sizeof(*o));
	o->cgroup_id = bpf_get_current_cgroup_id();
	__builtin_memcpy(o->addr, a, 16);
	o->pid = (__u32)pid_tgid;
	o->tgid = (__u32)(pid_tgid >> 32);
	o->uid = (__u32)uid_gid;
	o->gid = (__u32)(uid_gid >> 32);
	o->port = port;
	o->family = family;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

/* The origin recorded for socket `sk` whose cookie is `cookie`: its
 * iron_cookie_origin entry, else its local storage, else NULL. */
static __always_inline struct iron_origin *iron_origin_find(__u64 cookie,
							    struct bpf_sock *sk)
{
	struct iron_origin *o = bpf_map_lookup_elem(&iron_cookie_origin,
						    &cookie);

	if (o || !sk)
		return o;
	return bpf_sk_storage_get(&iron_sk_origin, sk, 0, 0);
}

/* Reads 16 bytes of a config address as four network-order words. */
static __always_inline void iron_words(__u32 out[4], const __u8 in[16])
{
	__builtin_memcpy(out, in, 16);
}

#endif /* IRON_MAPS_H */
