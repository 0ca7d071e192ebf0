//! What the loader needs to know, already resolved: which cgroups and uids are
//! intercepted, where the listeners are, what is denied, and how the kernel
//! recognises the proxy itself. The config layer maps `intercept:` to this.

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;

use ipnet::IpNet;

/// Errors of resolving settings inputs.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A user name is unknown to the system.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("looking up user {name:?}")]
    Lookup {
        /// The user name.
        name: String,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
}

/// Interception settings for [`Interceptor::attach`](super::Interceptor::attach).
/// Serializable, for the loader child ([`Interceptor::attach_in_child`](super::Interceptor::attach_in_child)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterceptSettings {
    /// Absolute cgroup v2 directories whose processes (and descendants') are
    /// intercepted. Only cgroups the operator dedicates to workloads: the
    /// programs apply to every process in them. A cgroup holding the proxy
    /// itself may be listed too: the proxy is recognised by [`Self::proxy`]
    /// and only the proxy-class deny entries apply to it.
    pub cgroups: Vec<PathBuf>,
    /// Uids to intercept inside those cgroups; empty means every uid.
    pub uids: Vec<u32>,
    /// More uids to intercept, as ranges: the subordinate uids of the users
    /// in `uids` (`/etc/subuid`), which those users can run processes as in
    /// a user namespace through the setuid `newuidmap`. Only with `uids`.
    #[serde(default)]
    pub uid_ranges: Vec<UidRange>,
    /// The transparent listener (IPv4). TCP connects to any port go here.
    pub listen_v4: SocketAddrV4,
    /// The transparent listener for native IPv6 connects. Without it they
    /// go to `listen_v4`, v4-mapped (which fails for `IPV6_V6ONLY` sockets:
    /// closed, not open).
    pub listen_v6: Option<SocketAddrV6>,
    /// The DNS listener; port 53 (UDP and TCP) goes here. Without any DNS
    /// listener, UDP port 53 is refused like all other UDP.
    pub dns_v4: Option<SocketAddrV4>,
    /// The DNS listener for native IPv6 resolvers. Without it, DNS to a
    /// native IPv6 resolver is refused over UDP (the kernel will not send it
    /// to a v4-mapped listener) and TCP port 53 goes to the transparent
    /// listener.
    pub dns_v6: Option<SocketAddrV6>,
    /// The addresses the proxy's DNS server answers with (`dns.proxy_ip`,
    /// `dns.proxy_ip6`; at most one of each family). A TCP connect to one
    /// goes to the transparent listener even where a deny range covers it:
    /// the usual answer is `127.0.0.1`, and a workload that follows it is
    /// headed for the proxy, which then judges the request by its name
    /// (SNI, Host) as any other.
    #[serde(default)]
    pub dns_answers: Vec<IpAddr>,
    /// Destinations refused in the kernel (EPERM), per class.
    pub deny: Vec<DenyCidr>,
    /// How the kernel recognises the proxy's own sockets.
    pub proxy: ProxyIdentity,
    /// cgroups (created for the proxy, holding nothing else) where a
    /// `cgroup/getsockopt` program answers `SO_ORIGINAL_DST` and
    /// `IP6T_SO_ORIGINAL_DST`. Optional: the proxy can use
    /// [`OriginalDst::lookup`](super::OriginalDst::lookup) instead.
    pub getsockopt_cgroups: Vec<PathBuf>,
    /// A directory on bpffs (e.g. `/sys/fs/bpf/iron-proxy`) for the pinned
    /// maps and links. Its parent must exist.
    pub pin_path: PathBuf,
    /// The transparent listeners carry [`mark_listener`]'s priority, and a
    /// connect is redirected only where the socket listening at the
    /// listener's address does: one another process bound there while the
    /// proxy was down gets nothing (the connect fails with EPERM).
    #[serde(default)]
    pub listener_priority: bool,
    /// The DNS sockets (UDP and TCP) carry [`mark_listener`]'s priority
    /// too, and port 53 is redirected only where the socket bound at the
    /// DNS listener's address does: one another process bound there while
    /// the proxy was down gets nothing (EPERM).
    #[serde(default)]
    pub dns_listener_priority: bool,
}

/// Gives a transparent listener or a DNS socket the `SO_PRIORITY` the
/// programs look for ([`InterceptSettings::listener_priority`],
/// [`InterceptSettings::dns_listener_priority`]). Only `CAP_NET_ADMIN` or
/// `CAP_NET_RAW` (in the socket's network namespace) may set it, so no other
/// local user without them can make its own socket look like the proxy's. Sockets accepted from the listener inherit it; on loopback
/// (which queues nothing) it changes nothing else.
pub fn mark_listener(sock: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let value = ebpf_common::listener::IRON_LISTENER_PRIORITY as libc::c_int;
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::Priority, &value)
        .map_err(std::io::Error::from)
}

/// Uids `start..start + count`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct UidRange {
    /// The first uid.
    pub start: u32,
    /// How many.
    pub count: u32,
}

impl UidRange {
    /// One past the last uid (as u64: a range may end at 2^32).
    pub fn end(self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }

    /// `ranges` sorted, merged where they touch or overlap, empty ones
    /// dropped, and cut at uid 2^32 - 2 (2^32 - 1 is no uid: `(uid_t)-1`).
    pub fn merged(ranges: &[UidRange]) -> Vec<UidRange> {
        let last = u64::from(u32::MAX);
        let mut sorted: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|r| r.count > 0 && r.start < u32::MAX)
            .map(|r| (u64::from(r.start), r.end().min(last)))
            .collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in sorted {
            match merged.last_mut() {
                Some(prev) if start <= prev.1 => prev.1 = prev.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
            .into_iter()
            .map(|(start, end)| UidRange {
                start: start as u32,
                count: (end - start) as u32,
            })
            .collect()
    }

    /// Whether `uid` is in the range.
    pub fn contains(self, uid: u32) -> bool {
        uid.wrapping_sub(self.start) < self.count
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end().saturating_sub(1))
    }
}

/// A destination range the kernel refuses, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DenyCidr {
    /// The range; IPv4 ranges also match v4-mapped IPv6 addresses.
    pub net: IpNet,
    /// Applies to intercepted workloads.
    pub workload: bool,
    /// Applies to the proxy's own sockets (where its cgroup is attached).
    /// Leave loopback ranges out of this class, or the proxy's DNS replies
    /// to workloads are refused.
    pub proxy: bool,
}

impl DenyCidr {
    /// A range refused to workloads and the proxy alike.
    pub fn all(net: IpNet) -> Self {
        Self {
            net,
            workload: true,
            proxy: true,
        }
    }

    /// A range refused to workloads only.
    pub fn workload(net: IpNet) -> Self {
        Self {
            net,
            workload: true,
            proxy: false,
        }
    }
}

/// How the programs tell the proxy's own sockets from a workload's. A socket
/// is the proxy's when the calling task has `uid`, or when it has `tgid` and
/// is in `cgroup_id` (each checked only when given). Pid and cgroup together:
/// a pid is reused once the proxy exits, and a workload forking until it is
/// handed the proxy's old pid must not pass as the proxy while the pins keep
/// interception closed; a cgroup id is never reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyIdentity {
    /// Process id as the kernel's initial pid namespace sees it.
    pub tgid: Option<u32>,
    /// cgroup v2 id of the proxy's cgroup.
    pub cgroup_id: Option<u64>,
    /// A uid only the proxy runs as.
    pub uid: Option<u32>,
}

impl ProxyIdentity {
    /// This process: its pid and its cgroup (by pid alone, with a warning,
    /// when the cgroup cannot be read). Correct when the proxy runs in the
    /// initial pid namespace; in a container prefer a cgroup id or a
    /// dedicated uid.
    pub fn current_process() -> Self {
        Self::current_process_in(super::cgroup::current_cgroup())
    }

    /// [`Self::current_process`] with this process's cgroup directory
    /// already looked up (by a caller that needs it too).
    pub fn current_process_in(cgroup: Result<PathBuf, super::cgroup::CgroupError>) -> Self {
        let cgroup_id = cgroup
            .and_then(|dir| super::cgroup::cgroup_id(&dir))
            .map_err(|e| {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "the proxy's cgroup is unknown: the kernel recognises the proxy by its pid alone"
                )
            })
            .ok();
        Self {
            tgid: Some(std::process::id()),
            cgroup_id,
            ..Self::default()
        }
    }
}

/// Resolves a user name, or a decimal uid, to a uid.
pub fn resolve_user(name: &str) -> Result<u32, SettingsError> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(SettingsError::UnknownUser(name.to_owned())),
        Err(source) => Err(SettingsError::Lookup {
            name: name.to_owned(),
            source,
        }),
    }
}
