// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * cgroup_skb/egress: the backstop behind the socket hooks. Those see
 * connect() and sendmsg(), so they miss sockets connected before
 * interception was attached (a long-lived connection of a process that
 * predates the proxy) and anything else that reaches the IP layer
 * without passing them. This program sees every IPv4/IPv6 packet a
 * socket of an intercepted cgroup sends, and drops (returns 0; a local
 * sender gets EPERM, TCP retransmits until it times out) each one from a
 * selected workload socket whose destination is neither loopback nor one
 * of the proxy's redirect targets (the transparent and DNS listeners).
 *
 * It also records each redirected connection for the proxy's lookup: on
 * a SYN from a socket whose connect-time origin connect4/6 recorded (in
 * iron_cookie_origin, or iron_sk_origin), it copies that origin into
 * iron_by_tuple keyed by the packet's 4-tuple, which is the one the proxy
 * sees on accept(). The SYN is the first packet to carry the ephemeral
 * port, and it leaves before the proxy can accept the connection.
 *
 * Likewise for DNS over UDP: on a datagram to the DNS listener from a
 * socket that sendmsg4/6 or connect4/6 redirected, it records the
 * workload (the origin's uid and cgroup id) in iron_dns_senders under
 * the datagram's 4-tuple, the one the proxy's UDP server sees on
 * recvfrom, so that the server can keep each workload's share apart
 * (every redirected workload sends from loopback). Only here is that
 * tuple known: connect4 runs before the kernel binds the ephemeral port,
 * sendmsg4 before it picks the source address. The entry is written when
 * it is missing or names another workload, so a socket's later queries
 * cost two map lookups (its origin, the entry); the proxy reads entries
 * without removing them, and the LRU forgets the sockets gone quiet.
 * Loopback UDP to another port stays on the fast path (one more
 * comparison, with the configuration's DNS port).
 *
 * Exempt, like in connect4: the proxy's own sockets, recognised by the
 * socket's cgroup id or uid, or by the mark connect/sendmsg left in the
 * socket's local storage when the calling task was the proxy
 * (iron_sk_proxy); packets
 * sent from a redirect target by a socket carrying the listener's
 * SO_PRIORITY mark (the proxy's listeners answering); and
 * sockets of unselected uids. Unconfigured maps fail closed.
 *
 * The socket's uid (bpf_get_socket_uid) is its creator's fsuid; the
 * socket hooks use the calling task's uid. Both are the same unless a
 * socket is handed to another user (SCM_RIGHTS, setuid after socket()).
 *
 * Plain packets are read with direct packet access (skb->data, which
 * cgroup_skb programs loaded with CAP_BPF or CAP_SYS_ADMIN may read);
 * others with bpf_skb_load_bytes.
 *
 * Helpers (all present in cgroup_skb programs since Linux 5.2):
 * bpf_skb_load_bytes, bpf_get_socket_uid, bpf_skb_cgroup_id,
 * bpf_sk_fullsock (5.1) and bpf_sk_storage_get (5.2). The program sees
 * the packet from its network header.
 */
#include "iron_maps.h"

#define IRON_SKB_PASS 1
#define IRON_SKB_DROP 0

#define IRON_TCP_SYN 0x02
#define IRON_TCP_ACK 0x10

/* A packet's endpoints, as 16-byte (v4-mapped) addresses, and its
 * network-order ports when it has a TCP or UDP header we could read. */
struct iron_pkt {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	int ports;
	__u32 l4_off; /* 0: no TCP/UDP header to read */
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP when l4_off is set */
	__u8 tcp_flags;
	/* IPv4 header with options, or IPv6 extension headers (source
	 * routing...): never passed as loopback or a listener's. */
	__u8 ip_options;
};

/* IPv6 next headers that put an extension header, which may carry a
 * route or options, first: hop-by-hop options (0), routing (43),
 * fragment (44), destination options (60). A routing header (a type 4
 * SRH, which IPV6_RTHDR sets without a capability) sends the packet on
 * to its later segments whatever the first one, ::1, says; nothing
 * legitimate of a workload's sets any of them. */
static __always_inline int iron_ip6_ext(__u8 nexthdr)
{
	return nexthdr == 0 || nexthdr == 43 || nexthdr == 44 ||
	       nexthdr == 60;
}

/* Reads the IP header. Returns 0 on success, -1 when the packet is
 * neither IPv4 nor IPv6 or too short. Ports are read separately
 * (iron_parse_ports): a TCP header's always (with its flags), a UDP
 * header's only when the destination is not loopback. */
static __always_inline int iron_parse(struct __sk_buff *skb, struct iron_pkt *p)
{
	__u8 hdr[40];
	__u32 l4_off, ip4;
	__u8 proto;

	if (bpf_skb_load_bytes(skb, 0, hdr, 20))
		return -1;
	if ((hdr[0] >> 4) == 4) {
		__builtin_memcpy(&ip4, &hdr[12], 4);
		iron_v4_mapped(p->src, ip4);
		__builtin_memcpy(&ip4, &hdr[16], 4);
		iron_v4_mapped(p->dst, ip4);
		proto = hdr[9];
		l4_off = (hdr[0] & 0xf) * 4;
		p->ip_options = l4_off != 20;
		/* A non-first fragment has no L4 header. */
		if ((hdr[6] & 0x1f) || hdr[7])
			return 0;
	} else if ((hdr[0] >> 4) == 6) {
		if (bpf_skb_load_bytes(skb, 0, hdr, 40))
			return -1;
		__builtin_memcpy(p->src, &hdr[8], 16);
		__builtin_memcpy(p->dst, &hdr[24], 16);
		/* Extension headers are not walked: no ports, so no
		 * redirect-target match; and the first being one of
		 * iron_ip6_ext's counts as IPv4 options do, so no
		 * loopback pass either. */
		proto = hdr[6];
		l4_off = 40;
		p->ip_options = iron_ip6_ext(proto);
	} else {
		return -1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (l4_off < 20 || l4_off > 60)
		return 0;
	p->l4_off = l4_off;
	p->proto = proto;
	return 0;
}

/* Reads the TCP or UDP ports, and a TCP header's flags, when iron_parse
 * found such a header. */
static __always_inline void iron_parse_ports(struct __sk_buff *skb,
					     struct iron_pkt *p)
{
	__u8 l4[14];
	__u32 l4_off = p->l4_off;

	if (l4_off < 20 || l4_off > 60 || p->ports)
		return;
	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 14))
			return;
		p->tcp_flags = l4[13];
	} else if (bpf_skb_load_bytes(skb, l4_off, l4, 4)) {
		return;
	}
	__builtin_memcpy(&p->sport, &l4[0], 2);
	__builtin_memcpy(&p->dport, &l4[2], 2);
	p->ports = 1;
}

/* Parses the IP header and the TCP/UDP ports and flags straight from the
 * packet (direct packet access, no helper call) when they sit in its
 * linear part, as they do for everything the local stack sends, and the
 * packet is plain: IPv4 without options, or IPv6 whose next header is
 * TCP or UDP. Returns 1 when done, 0 when iron_parse and
 * iron_parse_ports must read it with bpf_skb_load_bytes instead. About
 * half the program's time per packet went to those two helper calls. */
static __always_inline int iron_parse_direct(struct __sk_buff *skb,
					     struct iron_pkt *p)
{
	__u8 *h = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u32 ip4, l4_off;
	__u8 *l4;
	__u8 proto;

	if (h + 1 > end)
		return 0;
	if (h[0] == 0x45) {
		if (h + 20 > end)
			return 0;
		/* A fragment (first or not): leave it to the slow path. */
		if ((h[6] & 0x3f) || h[7])
			return 0;
		__builtin_memcpy(&ip4, &h[12], 4);
		iron_v4_mapped(p->src, ip4);
		__builtin_memcpy(&ip4, &h[16], 4);
		iron_v4_mapped(p->dst, ip4);
		proto = h[9];
		l4_off = 20;
	} else if ((h[0] >> 4) == 6) {
		if (h + 40 > end)
			return 0;
		__builtin_memcpy(p->src, &h[8], 16);
		__builtin_memcpy(p->dst, &h[24], 16);
		proto = h[6];
		l4_off = 40;
	} else {
		return 0;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	l4 = h + l4_off;
	if (proto == IPPROTO_TCP) {
		if (l4 + 14 > end)
			return 0;
		p->tcp_flags = l4[13];
	} else if (l4 + 4 > end) {
		return 0;
	}
	__builtin_memcpy(&p->sport, &l4[0], 2);
	__builtin_memcpy(&p->dport, &l4[2], 2);
	p->l4_off = l4_off;
	p->proto = proto;
	p->ports = 1;
	return 1;
}

/* The full socket that sent this packet, or NULL. skb->sk is a
 * sock_common, and before Linux 5.10 bpf_sk_storage_get takes only a full
 * socket, hence bpf_sk_fullsock. It is NULL for a listener's SYN-ACK (a
 * request socket). */
static __always_inline struct bpf_sock *iron_skb_sock(struct __sk_buff *skb)
{
	struct bpf_sock *sk;

	IRON_LOAD64(sk, skb, struct __sk_buff, sk);
	if (!sk)
		return NULL;
	return bpf_sk_fullsock(sk);
}

/* The packet's 4-tuple as the proxy sees it on accept() or recvfrom(). */
static __always_inline void iron_pkt_tuple(struct iron_tuple *t,
					   const struct iron_pkt *p)
{
	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memcpy(t->src_addr, p->src, 16);
	__builtin_memcpy(t->dst_addr, p->dst, 16);
	t->src_port = p->sport;
	t->dst_port = p->dport;
}

/* On a connection's first SYN from a redirected socket, records its
 * origin under the packet's 4-tuple for the proxy (see the top). A
 * retransmitted SYN writes the same entry again. */
static __always_inline void iron_skb_record(struct __sk_buff *skb,
					    const struct iron_pkt *p)
{
	struct iron_tuple t;
	struct iron_origin *o;

	if (p->proto != IPPROTO_TCP || !p->ports ||
	    (p->tcp_flags & (IRON_TCP_SYN | IRON_TCP_ACK)) != IRON_TCP_SYN)
		return;
	o = iron_origin_find(bpf_get_socket_cookie(skb), iron_skb_sock(skb));
	if (!o)
		return;
	iron_pkt_tuple(&t, p);
	if (bpf_map_update_elem(&iron_by_tuple, &t, o, BPF_ANY) == 0)
		iron_count(IRON_CNT_TUPLE_RECORDED);
}

static __always_inline int iron_eq16(const __u32 a[4], const __u8 b[16])
{
	__u32 t[4];

	iron_words(t, b);
	return a[0] == t[0] && a[1] == t[1] && a[2] == t[2] && a[3] == t[3];
}

/* What iron_target says (a, port) is. */
#define IRON_TARGET_NONE     0
#define IRON_TARGET_LISTENER 1 /* the transparent listener */
#define IRON_TARGET_DNS	     2 /* the DNS listener */

/* Whether (a, port) over `proto` is the transparent listener (TCP) or the
 * DNS listener (UDP and TCP), and which. The protocol matters: a workload
 * may bind UDP to the transparent listener's address and port, which TCP
 * holds. */
static __always_inline int iron_target(const struct iron_config *cfg,
				       const __u32 a[4], __u16 port,
				       __u8 proto)
{
	int tcp = proto == IPPROTO_TCP;

	if (iron_is_v4_mapped(a)) {
		if (tcp && a[3] == cfg->listen_v4 &&
		    port == cfg->listen_v4_port)
			return IRON_TARGET_LISTENER;
		if ((cfg->flags & IRON_F_DNS_V4) && a[3] == cfg->dns_v4 &&
		    port == cfg->dns_v4_port)
			return IRON_TARGET_DNS;
		return IRON_TARGET_NONE;
	}
	if (tcp && (cfg->flags & IRON_F_LISTEN_V6) &&
	    port == cfg->listen_v6_port && iron_eq16(a, cfg->listen_v6))
		return IRON_TARGET_LISTENER;
	if ((cfg->flags & IRON_F_DNS_V6) && port == cfg->dns_v6_port &&
	    iron_eq16(a, cfg->dns_v6))
		return IRON_TARGET_DNS;
	return IRON_TARGET_NONE;
}

static __always_inline int iron_is_target(const struct iron_config *cfg,
					  const __u32 a[4], __u16 port,
					  __u8 proto)
{
	return iron_target(cfg, a, port, proto) != IRON_TARGET_NONE;
}

/*
 * Whether the packet is a listener's answer: sent from the transparent
 * or DNS listener's address and port, by a socket carrying the proxy's
 * SO_PRIORITY mark where the loader marks that listener
 * (IRON_F_LISTENER_PRIORITY, IRON_F_DNS_LISTENER_PRIORITY). Connections
 * accepted from the listener inherit its priority, and its SYN-ACKs carry
 * it (the kernel sends them with the listener's). The address alone is
 * not enough: while the proxy is down, a workload may bind the listener's
 * address and port itself and serve peers that reach it from elsewhere;
 * its accepted connections never pass the connect or sendmsg hooks, so
 * this was the only gate.
 */
static __always_inline int iron_from_listener(struct __sk_buff *skb,
					      const struct iron_config *cfg,
					      const struct iron_pkt *p)
{
	int t = iron_target(cfg, p->src, p->sport, p->proto);
	__u32 marked;

	if (t == IRON_TARGET_NONE)
		return 0;
	marked = t == IRON_TARGET_LISTENER ? IRON_F_LISTENER_PRIORITY
					   : IRON_F_DNS_LISTENER_PRIORITY;
	return !(cfg->flags & marked) ||
	       skb->priority == IRON_LISTENER_PRIORITY;
}

/* Whether the socket that sent this packet carries the proxy's mark. A
 * request socket (a listener's SYN-ACK) carries none: marks come from
 * connect and sendmsg. */
static __always_inline int iron_skb_marked(struct __sk_buff *skb)
{
	struct bpf_sock *sk = iron_skb_sock(skb);

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&iron_sk_proxy, sk, 0, 0) != NULL;
}

/* Whether the socket that sent this packet is exempt: the proxy's, or
 * a uid that is not intercepted. */
static __always_inline int iron_skb_exempt(struct __sk_buff *skb,
					   const struct iron_config *cfg)
{
	__u32 uid = bpf_get_socket_uid(skb);

	/* A proxy known by its cgroup alone owns that cgroup; one known by
	 * pid and cgroup may share it with workloads, so its sockets are
	 * known by the marks connect/sendmsg left. */
	if (cfg->proxy_cgroup_id && !cfg->proxy_tgid &&
	    bpf_skb_cgroup_id(skb) == cfg->proxy_cgroup_id)
		return 1;
	if ((cfg->flags & IRON_F_PROXY_UID) && uid == cfg->proxy_uid)
		return 1;
	if ((cfg->flags & IRON_F_UID_FILTER) && !iron_uid_in(cfg, uid))
		return 1;
	return iron_skb_marked(skb);
}

/* The loopback device's index, the same in every network namespace
 * (LOOPBACK_IFINDEX in the kernel). */
#define IRON_LOOPBACK_IFINDEX 1

/* Whether the packet leaves by the loopback device. A packet to loopback
 * or to a listener (always a local address) that leaves by another device
 * was sent there on purpose: IP_PKTINFO's ipi_ifindex, SO_BINDTODEVICE or
 * IP_UNICAST_IF force the output device, no capability needed, and the
 * kernel then takes 127.0.0.1 for an on-link neighbour (an ARP and the
 * datagram on the wire). The redirect rewrites only the address, so it
 * would carry a workload's datagram out of any interface to whoever on the
 * link answers for 127.0.0.1. */
static __always_inline int iron_via_loopback(struct __sk_buff *skb)
{
	return skb->ifindex == IRON_LOOPBACK_IFINDEX;
}

/* On a UDP datagram to the DNS listener (by the loopback device, as every
 * packet to a local address goes) from a redirected socket, records the
 * socket's workload under the datagram's 4-tuple for the proxy's UDP DNS
 * server (see the top), unless the entry already names it. A datagram
 * whose ports were not read (IPv4 options, a fragment, IPv6 extension
 * headers) is not recorded: the server counts it as its address's. */
static __always_inline void iron_skb_record_dns(struct __sk_buff *skb,
						const struct iron_pkt *p)
{
	struct iron_sender sender, *had;
	struct iron_config *cfg;
	struct iron_origin *o;
	struct iron_tuple t;

	if (p->proto != IPPROTO_UDP || !p->ports || p->ip_options ||
	    !iron_via_loopback(skb))
		return;
	cfg = iron_cfg_load();
	if (!iron_configured(cfg) ||
	    !iron_is_target(cfg, p->dst, p->dport, IPPROTO_UDP))
		return;
	o = iron_origin_find(bpf_get_socket_cookie(skb), iron_skb_sock(skb));
	if (!o)
		return;
	iron_pkt_tuple(&t, p);
	had = bpf_map_lookup_elem(&iron_dns_senders, &t);
	if (had && had->cgroup_id == o->cgroup_id && had->uid == o->uid)
		return;
	sender.cgroup_id = o->cgroup_id;
	sender.uid = o->uid;
	sender.pad = 0;
	bpf_map_update_elem(&iron_dns_senders, &t, &sender, BPF_ANY);
}

/* Whether `port` (network order) is the DNS listener's, for an IPv6
 * packet (`v6`) or an IPv4 one. */
static __always_inline int iron_dns_port(const struct iron_config *cfg,
					 __u16 port, int v6)
{
	if (!cfg)
		return 0;
	if (v6)
		return (cfg->flags & IRON_F_DNS_V6) && port == cfg->dns_v6_port;
	return (cfg->flags & IRON_F_DNS_V4) && port == cfg->dns_v4_port;
}

/* Whether the packet is plain IPv4 (no options, not a fragment) or IPv6
 * to loopback, leaves by the loopback device, and is neither a TCP SYN
 * nor UDP to the DNS listener's port: it passes without further work.
 * That is most of what an intercepted workload sends (its traffic to the
 * proxy); a SYN to loopback may be a redirected connection to record, a
 * datagram to the DNS port a redirected query whose sender to record. */
static __always_inline int iron_loopback_not_syn(struct __sk_buff *skb)
{
	__u8 *h = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u32 l4_off;
	__u8 proto;

	if (h + 40 > end || !iron_via_loopback(skb))
		return 0;
	if (h[0] == 0x45) {
		if (h[16] != 127 || (h[6] & 0x3f) || h[7])
			return 0;
		proto = h[9];
		l4_off = 20;
	} else if ((h[0] >> 4) == 6) {
		__u32 w[4];

		__builtin_memcpy(w, &h[24], 16);
		if (w[0] || w[1] || w[2] || w[3] != bpf_htonl(1))
			return 0;
		proto = h[6];
		l4_off = 40;
	} else {
		return 0;
	}
	if (proto == IPPROTO_UDP) {
		__u16 dport;

		if (h + l4_off + 4 > end)
			return 0;
		__builtin_memcpy(&dport, &h[l4_off + 2], 2);
		return !iron_dns_port(iron_cfg_load(), dport, l4_off == 40);
	}
	if (proto != IPPROTO_TCP)
		return 0;
	if (h + l4_off + 14 > end)
		return 0;
	return (h[l4_off + 13] & (IRON_TCP_SYN | IRON_TCP_ACK)) != IRON_TCP_SYN;
}

SEC("cgroup_skb/egress")
int iron_skb_egress(struct __sk_buff *skb)
{
	struct iron_config *cfg;
	struct iron_pkt p;
	int parsed;

	if (iron_loopback_not_syn(skb))
		return IRON_SKB_PASS;
	__builtin_memset(&p, 0, sizeof(p));
	parsed = iron_parse_direct(skb, &p);
	if (!parsed) {
		__builtin_memset(&p, 0, sizeof(p));
		parsed = iron_parse(skb, &p) == 0;
		if (parsed && p.proto == IPPROTO_TCP)
			iron_parse_ports(skb, &p);
	}
	if (parsed && p.proto == IPPROTO_TCP)
		iron_skb_record(skb, &p);
	else if (parsed && p.proto == IPPROTO_UDP)
		iron_skb_record_dns(skb, &p);
	/* Loopback passes before the configuration is read: it is most of
	 * what an intercepted workload sends (its traffic to the proxy).
	 * Not with IPv4 options or IPv6 extension headers (iron_ip6_ext):
	 * a source route leaves for its first hop, or goes on from ::1 to
	 * its next segment, whatever the header's destination, and nothing
	 * legitimate of a workload's sets them. */
	if (parsed && !p.ip_options && iron_is_loopback(p.dst) &&
	    iron_via_loopback(skb))
		return IRON_SKB_PASS;
	cfg = iron_cfg_load();
	if (parsed && iron_configured(cfg)) {
		iron_parse_ports(skb, &p);
		/* To a listener (by the loopback device, as every packet to
		 * a local address goes), or a listener's answer (which may
		 * go to a remote client: iron_from_listener); never with
		 * IPv4 options or IPv6 extension headers: a source route
		 * sends the packet to its first hop whatever the header
		 * says, and nothing of ours sets them. */
		if (p.ports && !p.ip_options &&
		    ((iron_is_target(cfg, p.dst, p.dport, p.proto) &&
		      iron_via_loopback(skb)) ||
		     iron_from_listener(skb, cfg, &p)))
			return IRON_SKB_PASS;
	}
	/* Not IP (or unreadable), or beyond loopback and the listeners. */
	if (iron_configured(cfg) && iron_skb_exempt(skb, cfg))
		return IRON_SKB_PASS;
	iron_count(IRON_CNT_BACKSTOP_DROPPED);
	return IRON_SKB_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
