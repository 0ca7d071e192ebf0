//! Map key and value layouts shared by the eBPF programs in `ebpf/` and the
//! userspace loader.
//!
//! This crate is the source of truth. The C header `ebpf/include/iron_common.h`
//! mirrors it, and `ebpf/build.rs` compiles static assertions generated from
//! these types (every size, field offset and constant) against that header, so
//! the build fails when the two drift.
//!
//! Conventions: addresses are 16 bytes, IPv4 written v4-mapped
//! (`::ffff:a.b.c.d`), network order; ports are network order.
#![no_std]

/// Per-CPU counter indices of the `iron_counters` map (C `IRON_CNT_*`).
pub mod counter {
    /// TCP connects rewritten to the transparent listener.
    pub const IRON_CNT_REDIRECTED: u32 = 0;
    /// Connects or sends refused by the deny list.
    pub const IRON_CNT_DENIED: u32 = 1;
    /// UDP (other than DNS) refused.
    pub const IRON_CNT_UDP_REFUSED: u32 = 2;
    /// Port 53 traffic rewritten to the DNS listener.
    pub const IRON_CNT_DNS_REDIRECTED: u32 = 3;
    /// Raw, ICMP and other non-TCP/UDP sockets refused at creation.
    pub const IRON_CNT_RAW_REFUSED: u32 = 4;
    /// Connects by the proxy itself, let through.
    pub const IRON_CNT_PROXY_EXEMPT: u32 = 5;
    /// Client 4-tuples recorded by the egress program on a redirected SYN.
    pub const IRON_CNT_TUPLE_RECORDED: u32 = 6;
    /// `SO_ORIGINAL_DST` answers given by the getsockopt program.
    pub const IRON_CNT_ORIGDST_ANSWERED: u32 = 7;
    /// Calls refused because no configuration was loaded (fail closed).
    pub const IRON_CNT_UNCONFIGURED: u32 = 8;
    /// Packets of workload sockets dropped by the cgroup_skb backstop
    /// (beyond loopback and the listeners, e.g. a connection older than
    /// interception).
    pub const IRON_CNT_BACKSTOP_DROPPED: u32 = 9;
    /// Connects refused because the socket at the transparent listener's
    /// address is not the proxy's (another process bound the port while
    /// the proxy was down).
    pub const IRON_CNT_FOREIGN_LISTENER: u32 = 10;
    /// Number of counters.
    pub const IRON_CNT_MAX: u32 = 11;

    /// Counter names, by index.
    pub const NAMES: [&str; IRON_CNT_MAX as usize] = [
        "redirected",
        "denied",
        "udp_refused",
        "dns_redirected",
        "raw_refused",
        "proxy_exempt",
        "tuple_recorded",
        "origdst_answered",
        "unconfigured",
        "backstop_dropped",
        "foreign_listener",
    ];
}

/// Classes a deny entry applies to: the value of the `iron_deny` LPM trie.
pub mod class {
    /// Intercepted workloads.
    pub const IRON_CLASS_WORKLOAD: u32 = 1;
    /// The proxy's own sockets.
    pub const IRON_CLASS_PROXY: u32 = 2;
}

/// Bits of [`Config::flags`](crate::Config).
pub mod flags {
    /// The configuration is valid. Unset, workloads fail closed (EPERM).
    pub const IRON_F_CONFIGURED: u32 = 1;
    /// `listen_v6` is valid.
    pub const IRON_F_LISTEN_V6: u32 = 2;
    /// `dns_v4` is valid.
    pub const IRON_F_DNS_V4: u32 = 4;
    /// `dns_v6` is valid.
    pub const IRON_F_DNS_V6: u32 = 8;
    /// Only uids in `iron_uids` are intercepted.
    pub const IRON_F_UID_FILTER: u32 = 16;
    /// `proxy_uid` is valid.
    pub const IRON_F_PROXY_UID: u32 = 32;
    /// `answer_v4` is valid.
    pub const IRON_F_ANSWER_V4: u32 = 64;
    /// `answer_v6` is valid.
    pub const IRON_F_ANSWER_V6: u32 = 128;
    /// The proxy's transparent listeners carry
    /// [`IRON_LISTENER_PRIORITY`](crate::listener::IRON_LISTENER_PRIORITY):
    /// a connect is redirected only to a listener that does.
    pub const IRON_F_LISTENER_PRIORITY: u32 = 256;
    /// The proxy's DNS sockets (UDP and TCP) carry
    /// [`IRON_LISTENER_PRIORITY`](crate::listener::IRON_LISTENER_PRIORITY)
    /// too: port 53 is redirected only to a DNS socket that does.
    pub const IRON_F_DNS_LISTENER_PRIORITY: u32 = 512;
}

/// How the programs tell the proxy's transparent and DNS listeners from a
/// socket another process bound at their address.
pub mod listener {
    /// The `SO_PRIORITY` the proxy gives its transparent listeners (Linux
    /// copies it to the sockets they accept) and its DNS sockets. Any value above 6 needs
    /// `CAP_NET_ADMIN` or `CAP_NET_RAW` in the socket's network namespace
    /// (the kernel's `sk_set_prio_allowed`), so no unprivileged process can
    /// give its own socket this mark there. (One may hold both in a network
    /// namespace of its own, made with a user namespace; its sockets there
    /// are not the proxy's namespace's.)
    pub const IRON_LISTENER_PRIORITY: u32 = 0x4952_4f4e; // "IRON"
}

/// Map sizes.
pub mod limits {
    /// Slots of `iron_cfg` (double-buffered; `iron_cfg_sel` picks one).
    pub const IRON_CFG_SLOTS: u32 = 2;
    /// Entries of the deny LPM trie.
    pub const IRON_DENY_MAX: u32 = 4096;
    /// Entries of the uid filter.
    pub const IRON_UIDS_MAX: u32 = 1024;
    /// Uid ranges in [`Config`](crate::Config) (the selected users' subordinate uids).
    pub const IRON_UID_RANGES: u32 = 8;
    /// Entries of the origin-by-tuple LRU map.
    pub const IRON_ORIGINS_MAX: u32 = 65536;
    /// Entries of the origin-by-socket-cookie hash: redirected sockets open
    /// at once before origins spill into socket-local storage.
    pub const IRON_COOKIE_ORIGINS_MAX: u32 = 16384;
    /// Entries of the DNS-sender-by-tuple LRU map: UDP sockets whose
    /// redirected DNS queries the proxy can tell apart (the least recently
    /// used beyond that are forgotten; their datagrams count as their
    /// address's).
    pub const IRON_DNS_SENDERS_MAX: u32 = 16384;
}

/// Map names, as the C objects spell them (also their pin file names).
pub mod map {
    /// `ARRAY[IRON_CFG_SLOTS]` of [`Config`](crate::Config).
    pub const IRON_CFG: &str = "iron_cfg";
    /// `ARRAY[1]` of `u32`: the live slot of `iron_cfg`.
    pub const IRON_CFG_SEL: &str = "iron_cfg_sel";
    /// `LPM_TRIE` of [`DenyKey`](crate::DenyKey) to a class bitmask.
    pub const IRON_DENY: &str = "iron_deny";
    /// `HASH` of uid to `u32` (1): the uid filter.
    pub const IRON_UIDS: &str = "iron_uids";
    /// `HASH[IRON_COOKIE_ORIGINS_MAX]` of socket cookie (`u64`) to
    /// [`Origin`](crate::Origin): the connect-time origin, removed by the
    /// sock_release program when the socket closes.
    pub const IRON_COOKIE_ORIGIN: &str = "iron_cookie_origin";
    /// `SK_STORAGE` (`int` key, no entries limit) of [`Origin`](crate::Origin):
    /// the connect-time origin when [`IRON_COOKIE_ORIGIN`] is full, stored on
    /// the socket and freed with it.
    pub const IRON_SK_ORIGIN: &str = "iron_sk_origin";
    /// `LRU_HASH` of [`Tuple`](crate::Tuple) to [`Origin`](crate::Origin); an
    /// entry is removed when the proxy reads it.
    pub const IRON_BY_TUPLE: &str = "iron_by_tuple";
    /// `LRU_HASH[IRON_DNS_SENDERS_MAX]` of [`Tuple`](crate::Tuple) to
    /// [`Sender`](crate::Sender): the workload whose redirected UDP socket
    /// sent DNS datagrams with that 4-tuple, written by the egress program,
    /// read (never removed) by the proxy's UDP DNS server.
    pub const IRON_DNS_SENDERS: &str = "iron_dns_senders";
    /// `PERCPU_ARRAY[IRON_CNT_MAX]` of `u64`.
    pub const IRON_COUNTERS: &str = "iron_counters";
    /// `SK_STORAGE` (`int` key, no entries limit) of `u32` (1): the mark of a
    /// proxy socket that sent beyond loopback, set by connect/sendmsg for the
    /// cgroup_skb backstop (which cannot see the calling task), stored on the
    /// socket and freed with it, so never evicted.
    pub const IRON_SK_PROXY: &str = "iron_sk_proxy";
    /// Maps of older builds that this one no longer uses; a takeover removes
    /// their pins once the links run the new programs.
    /// - `iron_by_cookie` was an `LRU_HASH` of socket cookie to `Origin`,
    ///   replaced by [`IRON_SK_ORIGIN`];
    /// - `iron_proxy_socks` was an `LRU_HASH` (65,536 entries) of socket
    ///   cookie to `u32`, replaced by [`IRON_SK_PROXY`].
    pub const OBSOLETE: [&str; 2] = ["iron_by_cookie", "iron_proxy_socks"];
    /// Every map, in creation order.
    pub const ALL: [&str; 10] = [
        IRON_CFG,
        IRON_CFG_SEL,
        IRON_DENY,
        IRON_UIDS,
        IRON_SK_ORIGIN,
        IRON_BY_TUPLE,
        IRON_COUNTERS,
        IRON_SK_PROXY,
        IRON_COOKIE_ORIGIN,
        IRON_DNS_SENDERS,
    ];
}

/// Interception settings (C `struct iron_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// IPv6 transparent listener (valid with `IRON_F_LISTEN_V6`).
    pub listen_v6: [u8; 16],
    /// IPv6 DNS listener (valid with `IRON_F_DNS_V6`).
    pub dns_v6: [u8; 16],
    /// `dns.proxy_ip`, v4-mapped (valid with `IRON_F_ANSWER_V4`): a TCP
    /// connect there goes to the listener even where a deny range covers it.
    pub answer_v4: [u8; 16],
    /// `dns.proxy_ip6` (valid with `IRON_F_ANSWER_V6`), likewise.
    pub answer_v6: [u8; 16],
    /// Selected uid ranges besides `iron_uids`: `[start, start + count)`.
    pub uid_range_start: [u32; limits::IRON_UID_RANGES as usize],
    /// Length of each range; 0: unused.
    pub uid_range_count: [u32; limits::IRON_UID_RANGES as usize],
    /// The proxy's cgroup id, 0 when unused.
    pub proxy_cgroup_id: u64,
    /// IPv4 transparent listener, network order.
    pub listen_v4: u32,
    /// IPv4 DNS listener, network order (valid with `IRON_F_DNS_V4`).
    pub dns_v4: u32,
    /// The proxy's tgid (process id), 0 when unused.
    pub proxy_tgid: u32,
    /// The proxy's uid (valid with `IRON_F_PROXY_UID`).
    pub proxy_uid: u32,
    /// `IRON_F_*` bits.
    pub flags: u32,
    /// Ports, network order.
    pub listen_v4_port: u16,
    /// See `listen_v4_port`.
    pub listen_v6_port: u16,
    /// See `listen_v4_port`.
    pub dns_v4_port: u16,
    /// See `listen_v4_port`.
    pub dns_v6_port: u16,
    /// Zero.
    pub pad: u32,
}

/// Key of the deny LPM trie (C `struct iron_deny_key`): an IPv4 `/n` is
/// `96 + n` bits of the v4-mapped address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyKey {
    /// Prefix length in bits, 0..=128.
    pub prefixlen: u32,
    /// Address, network order.
    pub addr: [u8; 16],
}

/// Original destination and who connected (C `struct iron_origin`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Original destination address.
    pub addr: [u8; 16],
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Original destination port, network order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`: the connecting socket's family.
    pub family: u16,
    /// Zero.
    pub pad: u32,
    /// Task name, NUL-padded.
    pub comm: [u8; 16],
}

/// The client's 4-tuple as seen on the accepted socket (C `struct
/// iron_tuple`): `src` is the workload, `dst` the listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Workload address.
    pub src_addr: [u8; 16],
    /// Listener address.
    pub dst_addr: [u8; 16],
    /// Workload (ephemeral) port, network order.
    pub src_port: u16,
    /// Listener port, network order.
    pub dst_port: u16,
    /// Zero.
    pub pad: u32,
}

/// The workload that sent a redirected DNS datagram (C `struct
/// iron_sender`), as the socket's connect-time or sendmsg-time origin
/// recorded it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// cgroup v2 id of the task that redirected the socket.
    pub cgroup_id: u64,
    /// Its real uid.
    pub uid: u32,
    /// Zero.
    pub pad: u32,
}

// SAFETY: every type above is `#[repr(C)]`, `Copy`, made only of integers and
// integer arrays with explicit padding fields, so any bit pattern is valid.
#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::DenyKey {}
    unsafe impl aya::Pod for super::Origin {}
    unsafe impl aya::Pod for super::Tuple {}
    unsafe impl aya::Pod for super::Sender {}
}
