//! Config → eBPF interception settings. `intercept.cgroups` are resolved
//! against the cgroup v2 mount (found in /proc/self/mountinfo), user names to
//! uids; with `uids` but no `cgroups`, the programs go on the cgroup v2 root
//! and filter by uid (nftables mode: `meta skuid` alone).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::audit::ClientProcess;
use crate::config::{Config, InterceptConfig, UidSpec};
use crate::intercept::nft::{owner, NftInterceptor};
use crate::intercept::{self, DenyCidr, InterceptSettings, ProxyIdentity};
use crate::listen::transparent::{OriginLookup, Redirected, SockoptLookup};

use super::cgroup_watch::{Relink, Relinked};
use super::AppError;

fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// The kernel deny list for `proxy.upstream_deny_cidrs` (also what a reload
/// writes into the pinned trie).
pub fn deny_cidrs(cfg: &Config) -> Vec<DenyCidr> {
    cfg.proxy
        .upstream_deny_cidrs
        .iter()
        .map(|net| {
            // Loopback stays workload-only so the proxy's own loopback traffic
            // (DNS replies to workloads, the upstream resolver) keeps working.
            if net.addr().is_loopback() {
                DenyCidr::workload(*net)
            } else {
                DenyCidr::all(*net)
            }
        })
        .collect()
}

/// Builds the kernel-side settings. `transparent` is the bound transparent
/// listener; `dns` the bound DNS server addresses (when DNS redirection is on).
pub fn settings(
    cfg: &Config,
    ic: &InterceptConfig,
    transparent: &[SocketAddr],
    dns: &[SocketAddr],
) -> Result<InterceptSettings, AppError> {
    let err = |e: String| AppError::Intercept(e);
    let mount = intercept::cgroup2_mount().map_err(|e| err(crate::error_chain(&e)))?;
    let mut cgroups = Vec::new();
    for c in &ic.cgroups {
        cgroups.push(
            intercept::resolve_cgroup(&mount, c)
                .map_err(|e| err(format!("intercept.cgroups: {}", crate::error_chain(&e))))?,
        );
    }
    // The kernel knows the proxy by pid and cgroup; in a cgroup it shares
    // with workloads, a workload handed the pid of a proxy that exited would
    // pass as the proxy (docs/security.md, "Fail closed").
    let own_cgroup = intercept::current_cgroup();
    if let Ok(own) = &own_cgroup {
        if let Some(c) = cgroups.iter().find(|c| own.starts_with(c)) {
            tracing::warn!(
                proxy_cgroup = %own.display(),
                intercepted = %c.display(),
                "the proxy runs inside a cgroup it intercepts: give it a cgroup of its own, \
                 or workloads there can pass as the proxy once it has exited"
            );
        }
    }
    if cgroups.is_empty() {
        // UID mode: every process of these users, wherever it runs.
        cgroups.push(mount.clone());
    }
    let mut uids = Vec::new();
    for u in &ic.uids {
        uids.push(match u {
            UidSpec::Id(id) => *id,
            UidSpec::Name(n) => intercept::resolve_user(n)
                .map_err(|e| err(format!("intercept.uids: {}", crate::error_chain(&e))))?,
        });
    }
    let v4 = |list: &[SocketAddr]| {
        list.iter().map(|a| loopback_for(*a)).find_map(|a| match a {
            SocketAddr::V4(v) => Some(v),
            _ => None,
        })
    };
    let v6 = |list: &[SocketAddr]| {
        list.iter().map(|a| loopback_for(*a)).find_map(|a| match a {
            SocketAddr::V6(v) => Some(v),
            _ => None,
        })
    };
    // The selected users' subordinate uids: theirs to run processes as in a
    // user namespace (newuidmap), so selected with them.
    let uid_ranges = if uids.is_empty() {
        Vec::new()
    } else {
        let path = std::path::Path::new(intercept::subuid::SUBUID);
        intercept::subuid::read_ranges(path, &uids)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?
    };
    for r in &uid_ranges {
        tracing::info!(uids = %r, "intercepting a selected user's subordinate uids too ({})", intercept::subuid::SUBUID);
    }
    let listen_v4: SocketAddrV4 = v4(transparent)
        .ok_or_else(|| err("intercept.listen must include an IPv4 address".into()))?;
    let listen_v6: Option<SocketAddrV6> = v6(transparent);
    let deny = deny_cidrs(cfg);
    Ok(InterceptSettings {
        cgroups,
        uids,
        uid_ranges,
        listen_v4,
        listen_v6,
        dns_v4: v4(dns),
        dns_v6: v6(dns),
        dns_answers: cfg
            .dns
            .iter()
            .flat_map(|d| [Some(IpAddr::V4(d.proxy_ip)), d.proxy_ip6.map(IpAddr::V6)])
            .flatten()
            .collect(),
        deny,
        proxy: ProxyIdentity::current_process_in(own_cgroup),
        getsockopt_cgroups: Vec::new(),
        pin_path: ic.pin_path.clone(),
        // `App::build` marks the transparent listeners (`mark_listener`),
        // and the DNS server its sockets when interception sends DNS there
        // (`DnsSettings::mark_as_proxy`).
        listener_priority: true,
        dns_listener_priority: !dns.is_empty(),
    })
}

/// `intercept.mode: nftables`: installs the table, registers its counters as
/// `intercept_events`, and returns the origin lookup (conntrack's
/// `SO_ORIGINAL_DST`, the process from `/proc`).
pub fn start_nftables(
    settings: &InterceptSettings,
    metrics: &crate::ops::Metrics,
) -> Result<std::sync::Arc<dyn OriginLookup>, AppError> {
    let attached = NftInterceptor::attach(settings)
        .map_err(|e| AppError::Intercept(crate::error_chain(&e)))?;
    let pin = settings.pin_path.clone();
    register_events(metrics, false, move || {
        NftInterceptor::status(&pin)
            .ok()
            .filter(|s| s.present)
            .map(|s| s.counters)
    });
    Ok(std::sync::Arc::new(NftLookup {
        cgroups: attached.cgroups().to_vec(),
    }))
}

/// The cgroup watcher's relink for eBPF interception pinned at `pin`: links
/// the pinned programs to each selected cgroup that lacks them.
pub fn bpf_relink(pin: std::path::PathBuf, cgroups: Vec<std::path::PathBuf>) -> Relink {
    std::sync::Arc::new(move || {
        let done = intercept::Interceptor::reattach(&pin, &cgroups, &[])
            .map_err(|e| crate::error_chain(&e))?;
        Ok(Relinked {
            linked: done.linked,
            retry: done.lingering > 0,
        })
    })
}

/// The cgroup watcher's relink for nftables interception: the table built
/// again from `settings` (shared with reloads, which change its deny list).
pub fn nft_relink(settings: std::sync::Arc<std::sync::Mutex<InterceptSettings>>) -> Relink {
    std::sync::Arc::new(move || {
        let s = settings.lock().unwrap_or_else(|p| p.into_inner());
        nft_apply(&s)
    })
}

/// Installs (or replaces) the nftables table for `settings`, selecting the
/// configured cgroups that exist now: nft resolves each path when the rule is
/// added, and fails on one that does not exist. With none existing the table
/// is left as it is (its rules name cgroups that are gone, so they select
/// nothing) and applied once one is back.
pub fn nft_apply(settings: &InterceptSettings) -> Result<Relinked, String> {
    let mut present = settings.clone();
    present.cgroups.retain(|c| c.exists());
    if present.cgroups.is_empty() && !settings.cgroups.is_empty() {
        return Ok(Relinked {
            linked: 0,
            retry: false,
        });
    }
    NftInterceptor::attach(&present).map_err(|e| crate::error_chain(&e))?;
    Ok(Relinked {
        linked: 1,
        retry: false,
    })
}

/// Registers the interception counters as the `intercept_events` metric;
/// `read` gives the current counters, or `None` when nothing is installed.
/// `backstop_dropped` and `foreign_listener` only exist with eBPF.
pub fn register_events(
    metrics: &crate::ops::Metrics,
    with_backstop: bool,
    read: impl Fn() -> Option<intercept::Counters> + Send + Sync + 'static,
) {
    let _ = metrics.register_intercept_events(Box::new(move || {
        let Some(c) = read() else {
            return Vec::new();
        };
        [
            ("redirected", c.redirected),
            ("denied", c.denied),
            ("udp_refused", c.udp_refused),
            ("dns_redirected", c.dns_redirected),
            ("raw_refused", c.raw_refused),
            ("backstop_dropped", c.backstop_dropped),
            ("foreign_listener", c.foreign_listener),
        ]
        .into_iter()
        .filter(|(k, _)| with_backstop || !matches!(*k, "backstop_dropped" | "foreign_listener"))
        .map(|(k, v)| (vec![k.to_string()], v))
        .collect()
    }));
}

/// Original destination from conntrack; the client process from `/proc`.
struct NftLookup {
    cgroups: Vec<std::path::PathBuf>,
}

impl OriginLookup for NftLookup {
    fn lookup(
        &self,
        stream: &tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Redirected> {
        let mut found = SockoptLookup.lookup(stream, peer, local)?;
        match owner::find(peer, found.dst, &self.cgroups) {
            Ok(o) => {
                found.client = Some(ClientProcess {
                    pid: o.pid.unwrap_or(0),
                    uid: o.uid,
                    comm: o.comm.unwrap_or_default(),
                    cgroup: o.cgroup.unwrap_or_default(),
                })
            }
            Err(e) => tracing::debug!(error = %e, "no owner for redirected connection"),
        }
        Some(found)
    }

    fn blocking(&self) -> bool {
        true
    }
}
