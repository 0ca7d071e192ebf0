//! Config → eBPF interception settings. `intercept.cgroups` are resolved
//! against the cgroup v2 mount (found in /proc/self/mountinfo), user names to
//! uids; with `uids` but no `cgroups`, the programs go on the cgroup v2 root
//! and filter by uid.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::config::{Config, InterceptConfig, UidSpec};
use crate::intercept::{self, DenyCidr, InterceptSettings, ProxyIdentity};

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
    let mount = intercept::cgroup2_mount().map_err(|e| err(e.to_string()))?;
    let mut cgroups = Vec::new();
    for c in &ic.cgroups {
        cgroups.push(
            intercept::resolve_cgroup(&mount, c)
                .map_err(|e| err(format!("intercept.cgroups: {e}")))?,
        );
    }
    if cgroups.is_empty() {
        // UID mode: every process of these users, wherever it runs.
        cgroups.push(mount.clone());
    }
    let mut uids = Vec::new();
    for u in &ic.uids {
        uids.push(match u {
            UidSpec::Id(id) => *id,
            UidSpec::Name(n) => {
                intercept::resolve_user(n).map_err(|e| err(format!("intercept.uids: {e}")))?
            }
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
    let listen_v4: SocketAddrV4 = v4(transparent)
        .ok_or_else(|| err("intercept.listen must include an IPv4 address".into()))?;
    let listen_v6: Option<SocketAddrV6> = v6(transparent);
    let deny = deny_cidrs(cfg);
    Ok(InterceptSettings {
        cgroups,
        uids,
        listen_v4,
        listen_v6,
        dns_v4: v4(dns),
        dns_v6: v6(dns),
        deny,
        proxy: ProxyIdentity::current_process(),
        getsockopt_cgroups: Vec::new(),
        pin_path: ic.pin_path.clone(),
    })
}
