//! The nftables ruleset for `intercept.mode: nftables`, rendered as one
//! `nft -f` script that replaces the table atomically.
//!
//! Why text and not `nft -j`: nft 1.0.6 (Debian 12) cannot parse
//! `socket cgroupv2` in JSON ("Invalid socket key value") and drops its
//! `level` when printing JSON, so the selection cannot be expressed there.
//! The script is one transaction: `table {}` + `delete table` + the new
//! table, so a replacement has no window in which workloads go direct.
//! Reading (counters, status) and deleting go through the `nftables` crate.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::NftError;
use crate::intercept::{InterceptSettings, UidRange};

/// Where nft 1.0.6 resolves `socket cgroupv2` paths (hard-coded in nft).
const NFT_CGROUP_BASE: &str = "/sys/fs/cgroup";

/// Prefix of the comments that name our counters and selections.
pub(crate) const COMMENT_PREFIX: &str = "iron:";

/// nft limits comments to 128 bytes.
const MAX_COMMENT: usize = 127;

/// The table for a pin path: `iron_proxy` for the default pin path,
/// otherwise `iron_proxy_<8 hex>` of a SHA-256 of the path, so that
/// separate instances (tests) never share a table.
pub fn table_name(pin_path: &Path) -> String {
    use sha2::{Digest, Sha256};
    if pin_path == Path::new(crate::config::DEFAULT_PIN_PATH) {
        return "iron_proxy".to_owned();
    }
    let digest = Sha256::digest(pin_path.as_os_str().as_encoded_bytes());
    format!("iron_proxy_{}", hex::encode(&digest[..4]))
}

/// Which sockets a rule applies to: a cgroup subtree, a uid set, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `(level, path as nft resolves it, path relative to the mount)`.
    pub cgroup: Option<(usize, String, String)>,
    /// Socket owner uids; empty means any.
    pub uids: Vec<u32>,
    /// Their subordinate uid ranges (only with `uids`).
    pub uid_ranges: Vec<UidRange>,
}

impl Selector {
    fn matcher(&self) -> String {
        let mut m = String::new();
        if let Some((level, path, _)) = &self.cgroup {
            let _ = write!(m, "socket cgroupv2 level {level} \"{path}\" ");
        }
        if !self.uids.is_empty() || !self.uid_ranges.is_empty() {
            let _ = write!(m, "meta skuid {{ {} }} ", self.uid_list().join(", "));
        }
        m
    }

    /// The uids, then the ranges (`100000-165535`).
    fn uid_list(&self) -> Vec<String> {
        self.uids
            .iter()
            .map(u32::to_string)
            .chain(self.uid_ranges.iter().map(UidRange::to_string))
            .collect()
    }

    /// A human label, also the rule comment (`iron:select ...`).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some((_, _, rel)) = &self.cgroup {
            parts.push(format!("cgroup={rel}"));
        }
        if !self.uids.is_empty() || !self.uid_ranges.is_empty() {
            parts.push(format!("uids={}", self.uid_list().join(",")));
        }
        parts.join(" ")
    }
}

/// The cgroup as nft 1.0.6 will find it (it prefixes `/sys/fs/cgroup/`) and
/// its level below the cgroup v2 mount.
pub(crate) fn nft_cgroup(mount: &Path, cgroup: &Path) -> Result<(usize, String, String), NftError> {
    let bad = || NftError::CgroupPath(cgroup.to_owned());
    let rel = cgroup.strip_prefix(mount).map_err(|_| bad())?;
    let level = rel.components().count();
    let text = cgroup.to_str().ok_or_else(bad)?;
    if text.contains(['"', '\n', '\\']) {
        return Err(bad());
    }
    let nft_path = match cgroup.strip_prefix(NFT_CGROUP_BASE) {
        Ok(r) if !r.as_os_str().is_empty() => r.to_str().ok_or_else(bad)?.to_owned(),
        // Elsewhere: climb out of /sys/fs/cgroup (three levels) to the root.
        _ => format!("../../..{text}"),
    };
    Ok((level, nft_path, format!("/{}", rel.display())))
}

/// The selectors for the settings: one per cgroup (with the uids), or the
/// uids alone when the only "cgroup" is the v2 root (UID mode).
pub(crate) fn selectors(
    settings: &InterceptSettings,
    mount: &Path,
) -> Result<Vec<Selector>, NftError> {
    // One nft set per selector: intervals merged, clamped below 2^32 - 1
    // (what `meta skuid` takes), and no uid that a range already holds.
    let ranges = UidRange::merged(&settings.uid_ranges);
    let uids: Vec<u32> = settings
        .uids
        .iter()
        .copied()
        .filter(|u| !ranges.iter().any(|r| r.contains(*u)))
        .collect();
    let mut out = Vec::new();
    for c in &settings.cgroups {
        if c == mount {
            continue;
        }
        out.push(Selector {
            cgroup: Some(nft_cgroup(mount, c)?),
            uids: uids.clone(),
            uid_ranges: ranges.clone(),
        });
    }
    if out.is_empty() {
        if settings.uids.is_empty() {
            return Err(NftError::NoSelection);
        }
        out.push(Selector {
            cgroup: None,
            uids: uids.clone(),
            uid_ranges: ranges.clone(),
        });
    }
    Ok(out)
}

fn comment(text: &str) -> String {
    let mut s = format!("{COMMENT_PREFIX}{text}");
    while s.len() > MAX_COMMENT {
        s.pop();
    }
    format!("comment \"{s}\"")
}

fn elements(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = nets.iter().map(|n| n.trunc().to_string()).collect();
    format!(" elements = {{ {} }};", list.join(", "))
}

fn exempt(addr: SocketAddr, proto: &str) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("\t\tip daddr {ip} {proto} dport {} return\n", addr.port()),
        IpAddr::V6(ip) => format!("\t\tip6 daddr {ip} {proto} dport {} return\n", addr.port()),
    }
}

/// The whole script: replaces `table inet <table>` in one transaction.
pub fn render(table: &str, settings: &InterceptSettings, selectors: &[Selector]) -> String {
    let deny: Vec<IpNet> = settings
        .deny
        .iter()
        .filter(|d| d.workload)
        .map(|d| d.net)
        .collect();
    let deny4: Vec<IpNet> = deny
        .iter()
        .copied()
        .filter(|n| n.addr().is_ipv4())
        .collect();
    let deny6: Vec<IpNet> = deny
        .iter()
        .copied()
        .filter(|n| n.addr().is_ipv6())
        .collect();
    let p4 = settings.listen_v4.port();

    let mut s = String::new();
    let _ = writeln!(s, "table inet {table} {{}}\ndelete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    let _ = writeln!(
        s,
        "\tset deny4 {{ type ipv4_addr; flags interval;{} }}",
        elements(&deny4)
    );
    let _ = writeln!(
        s,
        "\tset deny6 {{ type ipv6_addr; flags interval;{} }}",
        elements(&deny6)
    );
    for (chain, kind, prio, target) in [
        ("nat_select", "nat", -100, "nat_workload"),
        ("filter_select", "filter", -150, "filter_workload"),
    ] {
        let _ = writeln!(s, "\tchain {chain} {{");
        let _ = writeln!(
            s,
            "\t\ttype {kind} hook output priority {prio}; policy accept;"
        );
        for sel in selectors {
            let _ = writeln!(
                s,
                "\t\t{}jump {target} {}",
                sel.matcher(),
                comment(&format!("select {}", sel.label()))
            );
        }
        let _ = writeln!(s, "\t}}");
    }

    // nat: sees the first packet of each connection the workload starts.
    let _ = writeln!(s, "\tchain nat_workload {{");
    s.push_str(&exempt(settings.listen_v4.into(), "tcp"));
    if let Some(l6) = settings.listen_v6 {
        s.push_str(&exempt(l6.into(), "tcp"));
    }
    for (dns, family) in [
        (settings.dns_v4.map(SocketAddr::from), "ipv4"),
        (settings.dns_v6.map(SocketAddr::from), "ipv6"),
    ] {
        if let Some(d) = dns {
            s.push_str(&exempt(d, "udp"));
            s.push_str(&exempt(d, "tcp"));
            for proto in ["udp", "tcp"] {
                let _ = writeln!(
                    s,
                    "\t\tmeta nfproto {family} {proto} dport 53 counter redirect to :{} {}",
                    d.port(),
                    comment("dns_redirected")
                );
            }
        }
    }
    // Native IPv6 only to an IPv6 listener: without one it is refused in the
    // filter chain, not redirected to `[::1]` on the IPv4 listener's port,
    // where any local user could bind a socket and receive it.
    let v6 = settings.listen_v6.map(|l| ("ipv6", l.port()));
    for (family, port) in std::iter::once(("ipv4", p4)).chain(v6) {
        let _ = writeln!(
            s,
            "\t\tmeta nfproto {family} meta l4proto tcp counter redirect to :{port} {}",
            comment("redirected")
        );
    }
    let _ = writeln!(s, "\t}}");

    // filter: runs before nat (priority -150 < -100), so it sees the
    // original destination, on every packet of the workload's connections.
    let _ = writeln!(s, "\tchain filter_workload {{");
    let _ = writeln!(s, "\t\tct direction reply return");
    // Before the deny list: DNS goes to the proxy whatever resolver was asked
    // (a stub resolver on 127.0.0.53 keeps working), and so does TCP to the
    // address the proxy's DNS answers with (usually 127.0.0.1: a workload
    // that follows the answer is headed for the proxy).
    for (dns, family) in [
        (settings.dns_v4.is_some(), "ipv4"),
        (settings.dns_v6.is_some(), "ipv6"),
    ] {
        if dns {
            for proto in ["udp", "tcp"] {
                let _ = writeln!(s, "\t\tmeta nfproto {family} {proto} dport 53 return");
            }
        }
    }
    if settings.listen_v6.is_none() {
        let _ = writeln!(
            s,
            "\t\tmeta nfproto ipv6 meta l4proto tcp counter reject with tcp reset {}",
            comment("denied")
        );
    }
    for ip in &settings.dns_answers {
        let (fam, ip) = match ip.to_canonical() {
            IpAddr::V4(v4) => ("ip", v4.to_string()),
            // Without an IPv6 listener native IPv6 TCP was reset just above.
            IpAddr::V6(_) if settings.listen_v6.is_none() => continue,
            IpAddr::V6(v6) => ("ip6", v6.to_string()),
        };
        let _ = writeln!(s, "\t\t{fam} daddr {ip} meta l4proto tcp return");
    }
    for (fam, set) in [("ip", "deny4"), ("ip6", "deny6")] {
        let _ = writeln!(
            s,
            "\t\t{fam} daddr @{set} meta l4proto tcp counter reject with icmpx admin-prohibited {}",
            comment("denied")
        );
        let _ = writeln!(
            s,
            "\t\t{fam} daddr @{set} counter drop {}",
            comment("denied")
        );
    }
    let _ = writeln!(s, "\t\tmeta l4proto tcp return");
    let _ = writeln!(
        s,
        "\t\tmeta l4proto udp counter drop {}",
        comment("udp_refused")
    );
    let _ = writeln!(s, "\t\tcounter drop {}", comment("raw_refused"));
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// A probe script for preflight: only checks (`nft -c`), never applied.
pub(crate) fn probe_tables(table: &str) -> String {
    format!(
        "table inet {table}_probe {{\n\tchain n {{ type nat hook output priority -100; meta l4proto tcp meta skuid 4294967294 redirect to :1\n\t}}\n\tchain f {{ type filter hook output priority -150; meta skuid 4294967294 reject with icmpx admin-prohibited\n\t}}\n}}\n"
    )
}

/// A probe of the `socket cgroupv2` expression on one selected cgroup.
pub(crate) fn probe_socket(table: &str, sel: &Selector) -> String {
    format!(
        "table inet {table}_probe {{\n\tchain f {{ type filter hook output priority -150; {}meta skuid 4294967294 counter\n\t}}\n}}\n",
        sel.matcher()
    )
}

/// The cgroups a selector covers, for attribution.
pub(crate) fn selected_cgroups(mount: &Path, selectors: &[Selector]) -> Vec<PathBuf> {
    selectors
        .iter()
        .filter_map(|s| s.cgroup.as_ref())
        .map(|(_, _, rel)| mount.join(rel.trim_start_matches('/')))
        .collect()
}
