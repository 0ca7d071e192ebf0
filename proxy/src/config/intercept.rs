//! The `intercept:` section (ours): which workloads' connections are
//! redirected to the proxy, and how.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::decode::{one_of, str_with, Cx, Decode, Res};
use super::values::ListenAddr;
use super::yaml::{Kind, Node};

/// Where programs, maps and links are pinned unless `intercept.pin_path` says otherwise.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/iron-proxy";

/// `intercept:` (ours): transparent interception of chosen workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    /// How connections are redirected (default eBPF).
    pub mode: InterceptMode,
    /// cgroup v2 paths, absolute or relative to the cgroup2 mount (resolved at runtime).
    pub cgroups: Vec<PathBuf>,
    /// Users whose connections are intercepted.
    pub uids: Vec<UidSpec>,
    /// The transparent listener (default `127.0.0.1:15001`).
    pub listen: ListenAddr,
    /// Redirect the workloads' DNS to our server; `None` means "when a `dns` block
    /// exists": use [`InterceptConfig::dns_enabled`].
    pub dns: Option<bool>,
    /// bpffs directory for pinned links and maps (default `/sys/fs/bpf/iron-proxy`).
    pub pin_path: PathBuf,
}

impl InterceptConfig {
    /// Whether workload DNS is redirected: `dns:` if set, else whether the config has a `dns` block.
    pub fn dns_enabled(&self, cfg: &super::Config) -> bool {
        self.dns.unwrap_or(cfg.dns.is_some())
    }
}

/// `intercept.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterceptMode {
    /// cgroup BPF programs (default).
    #[default]
    Ebpf,
    /// nftables rules.
    Nftables,
}

/// One `intercept.uids[]` entry: a number or a user name (looked up at runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidSpec {
    /// A numeric uid.
    Id(u32),
    /// A user name.
    Name(String),
}

impl Decode for UidSpec {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let text = super::decode::scalar(node, cx, "a uid or user name")?;
        if let Ok(id) = text.parse::<u32>() {
            return Ok(UidSpec::Id(id));
        }
        let plain = matches!(node.kind, Kind::Scalar { plain: true, .. });
        let valid = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
        if (plain && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')) || !valid {
            return Err(cx.error(node.pos, format!("invalid uid or user name {text:?}")));
        }
        Ok(UidSpec::Name(text.to_string()))
    }
}

/// The keys of `intercept`.
pub(super) const INTERCEPT_FIELDS: [&str; 6] =
    ["mode", "cgroups", "uids", "listen", "dns", "pin_path"];

impl Decode for InterceptConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &INTERCEPT_FIELDS)?;
        let modes = [
            ("ebpf", InterceptMode::Ebpf),
            ("nftables", InterceptMode::Nftables),
        ];
        let mode = m.opt_with(cx, "mode", |n, cx| one_of(n, cx, "intercept mode", &modes));
        let cgroups = m.or_default::<Vec<PathBuf>>(cx, "cgroups");
        let uids = m.or_default::<Vec<UidSpec>>(cx, "uids");
        let listen = m.or(
            cx,
            "listen",
            ListenAddr::Addr(SocketAddr::from(([127, 0, 0, 1], 15001))),
        );
        let dns = m.opt(cx, "dns");
        let pin_path = m.opt_with(cx, "pin_path", |n, cx| {
            str_with(n, cx, |s| {
                if s.starts_with('/') {
                    Ok(PathBuf::from(s))
                } else {
                    Err(format!("pin_path {s:?} must be absolute"))
                }
            })
        });
        let (cgroups, uids) = (cgroups?, uids?);
        if cgroups.is_empty() && uids.is_empty() {
            return Err(cx.error(m.pos, "at least one of 'cgroups' or 'uids' is required"));
        }
        Ok(InterceptConfig {
            mode: mode?.unwrap_or_default(),
            cgroups,
            uids,
            listen: listen?,
            dns: dns?,
            pin_path: pin_path?.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_PATH)),
        })
    }
}
