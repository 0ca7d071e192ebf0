//! The top-level sections other than transforms and mcp: `dns`, `proxy`,
//! `tls`, `management`, `metrics`, `log`, and our `intercept`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::decode::{int, one_of, str_with, Cx, Decode, Res};
use super::values::{ListenAddr, PositiveDuration};
use super::yaml::{Kind, Node};
use crate::rules::HostPattern;

/// `dns:`: the built-in DNS server, which answers every name with `proxy_ip`.
/// Absent means no DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Bind address (default `:53`).
    pub listen: ListenAddr,
    /// The address every intercepted name resolves to (A, or AAAA when IPv6).
    pub proxy_ip: IpAddr,
    /// Our addition: an IPv6 address served for AAAA queries when `proxy_ip` is IPv4.
    pub proxy_ip6: Option<Ipv6Addr>,
    /// Resolver for passthrough names and for upstream connections; the OS default when absent.
    pub upstream_resolver: Option<SocketAddr>,
    /// Names forwarded to the upstream resolver instead of intercepted.
    pub passthrough: Vec<HostPattern>,
    /// Static records, which win over interception and passthrough.
    pub records: Vec<DnsRecord>,
}

/// One `dns.records[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Lowercase name without trailing dot.
    pub name: String,
    /// The record.
    pub value: DnsRecordValue,
}

/// The typed value of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecordValue {
    /// `type: A` with an address (an IPv6 address is served as AAAA).
    A(IpAddr),
    /// `type: CNAME` with a lowercase target name.
    Cname(String),
}

fn hostname(s: &str) -> Result<String, String> {
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("invalid host name {s:?}"));
    }
    Ok(name)
}

fn ip(node: &Node, cx: &mut Cx) -> Res<IpAddr> {
    str_with(node, cx, |s| s.parse::<IpAddr>().map_err(|_| format!("invalid IP address {s:?}")))
}

/// `host:port`, or a bare IP meaning port 53.
fn resolver(node: &Node, cx: &mut Cx) -> Res<SocketAddr> {
    str_with(node, cx, |s| {
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| format!("invalid resolver address {s:?}: expected ip:port such as \"8.8.8.8:53\" or \"[2001:4860:4860::8888]:53\""))
    })
}

#[derive(Clone, Copy)]
enum RecordType {
    A,
    Cname,
}

impl Decode for DnsRecord {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "type", "value"])?;
        let name = m.req_with(cx, "name", |n, cx| str_with(n, cx, hostname));
        let kind = m.req_with(cx, "type", |n, cx| one_of(n, cx, "record type", &[("A", RecordType::A), ("CNAME", RecordType::Cname)]));
        let value = match kind {
            Ok(RecordType::A) => m.req_with(cx, "value", ip).map(DnsRecordValue::A),
            Ok(RecordType::Cname) => m.req_with(cx, "value", |n, cx| str_with(n, cx, hostname)).map(DnsRecordValue::Cname),
            Err(f) => Err(f),
        };
        Ok(DnsRecord { name: name?, value: value? })
    }
}

impl Decode for DnsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["listen", "proxy_ip", "proxy_ip6", "upstream_resolver", "passthrough", "records"])?;
        let listen = m.or(cx, "listen", ListenAddr::AllInterfaces(53));
        let proxy_ip = m.req_with(cx, "proxy_ip", ip);
        let proxy_ip6 = m.opt_with(cx, "proxy_ip6", |n, cx| {
            str_with(n, cx, |s| s.parse::<Ipv6Addr>().map_err(|_| format!("invalid IPv6 address {s:?}")))
        });
        let upstream_resolver = m.opt_with(cx, "upstream_resolver", resolver);
        let passthrough = m.or_default(cx, "passthrough");
        let records = m.or_default(cx, "records");
        Ok(DnsConfig {
            listen: listen?,
            proxy_ip: proxy_ip?,
            proxy_ip6: proxy_ip6?,
            upstream_resolver: upstream_resolver?,
            passthrough: passthrough?,
            records: records?,
        })
    }
}

/// `proxy:`: listeners and upstream limits. Always present (all fields have defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Plain HTTP listener (default `:80`).
    pub http_listen: ListenAddr,
    /// HTTPS listener (default `:443`).
    pub https_listen: ListenAddr,
    /// CONNECT/SOCKS5 listener; disabled when absent.
    pub tunnel_listen: Option<ListenAddr>,
    /// Request body buffering cap, when a transform needs the body (default 1 MiB).
    pub max_request_body_bytes: u64,
    /// Response body buffering cap; `0` (the default) means unlimited.
    pub max_response_body_bytes: u64,
    /// Wait for upstream response headers (default 30s).
    pub upstream_response_header_timeout: PositiveDuration,
    /// Ranges never dialled. Unset gives [`DEFAULT_DENY_CIDRS`]; `[]` opts out.
    pub upstream_deny_cidrs: Vec<IpNet>,
}

/// `upstream_deny_cidrs` when unset: IMDS (v4 and v6) and loopback.
pub const DEFAULT_DENY_CIDRS: [&str; 4] = ["169.254.169.254/32", "fd00:ec2::254/128", "127.0.0.0/8", "::1/128"];

/// The default deny list, parsed.
pub fn default_deny_cidrs() -> Vec<IpNet> {
    DEFAULT_DENY_CIDRS.iter().map(|c| c.parse().expect("constant CIDRs are valid")).collect()
}

impl Decode for ProxyConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "http_listen",
                "https_listen",
                "tunnel_listen",
                "max_request_body_bytes",
                "max_response_body_bytes",
                "upstream_response_header_timeout",
                "upstream_deny_cidrs",
            ],
        )?;
        let http_listen = m.or(cx, "http_listen", ListenAddr::AllInterfaces(80));
        let https_listen = m.or(cx, "https_listen", ListenAddr::AllInterfaces(443));
        let tunnel_listen = m.opt(cx, "tunnel_listen");
        let max_req = m.or(cx, "max_request_body_bytes", 1_048_576u64);
        let max_rsp = m.or(cx, "max_response_body_bytes", 0u64);
        let timeout = m.or(cx, "upstream_response_header_timeout", secs(30));
        // An explicit empty list opts out; null or absent gives the defaults.
        let deny = match m.node("upstream_deny_cidrs") {
            Some(_) => m.req(cx, "upstream_deny_cidrs"),
            None => Ok(default_deny_cidrs()),
        };
        Ok(ProxyConfig {
            http_listen: http_listen?,
            https_listen: https_listen?,
            tunnel_listen: tunnel_listen?,
            max_request_body_bytes: max_req?,
            max_response_body_bytes: max_rsp?,
            upstream_response_header_timeout: timeout?,
            upstream_deny_cidrs: deny?,
        })
    }
}

/// A positive duration of `n` seconds (for defaults).
pub(crate) fn secs(n: u64) -> PositiveDuration {
    PositiveDuration::new(std::time::Duration::from_secs(n)).expect("default durations are positive")
}

/// `tls:`: how HTTPS is handled. `mode: mitm` is the default and needs the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// Terminate TLS with leaf certificates minted from the CA.
    Mitm(MitmConfig),
    /// Peek at the SNI and pass TLS through (the CA fields are ignored).
    SniOnly,
}

/// The CA and leaf-cache settings of MITM mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MitmConfig {
    /// CA certificate, PEM.
    pub ca_cert: PathBuf,
    /// CA private key, PEM.
    pub ca_key: PathBuf,
    /// Leaf certificates kept in the LRU cache (default 1000, at least 1).
    pub cert_cache_size: usize,
    /// Leaf validity in hours (default 72, at least 1).
    pub leaf_cert_expiry_hours: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Mitm,
    SniOnly,
}

impl Decode for TlsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["mode", "ca_cert", "ca_key", "cert_cache_size", "leaf_cert_expiry_hours"])?;
        let mode = m.opt_with(cx, "mode", |n, cx| one_of(n, cx, "tls mode", &[("mitm", Mode::Mitm), ("sni-only", Mode::SniOnly)]));
        let size = m.opt_with(cx, "cert_cache_size", |n, cx| int(n, cx, 1, i64::from(u32::MAX)));
        let hours = m.opt_with(cx, "leaf_cert_expiry_hours", |n, cx| int(n, cx, 1, 24 * 365 * 20));
        let (ca_cert, ca_key) = (m.opt::<PathBuf>(cx, "ca_cert"), m.opt::<PathBuf>(cx, "ca_key"));
        if mode?.unwrap_or(Mode::Mitm) == Mode::SniOnly {
            return Ok(TlsConfig::SniOnly);
        }
        let need = |cx: &mut Cx, v: Option<PathBuf>, key: &str| {
            v.ok_or_else(|| cx.error(m.pos, format!("missing required field '{key}' (required in mitm mode, the default; or set mode: sni-only)")))
        };
        let (ca_cert, ca_key) = (ca_cert?, ca_key?);
        let (ca_cert, ca_key) = (need(cx, ca_cert, "ca_cert"), need(cx, ca_key, "ca_key"));
        Ok(TlsConfig::Mitm(MitmConfig {
            ca_cert: ca_cert?,
            ca_key: ca_key?,
            cert_cache_size: size?.map_or(1000, |v| usize::try_from(v).unwrap_or(usize::MAX)),
            leaf_cert_expiry_hours: hours?.map_or(72, |v| u32::try_from(v).unwrap_or(u32::MAX)),
        }))
    }
}

/// `management:`: the bearer-authenticated management API. Absent means disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Bind address (required; keep it on loopback).
    pub listen: ListenAddr,
    /// Variable holding the bearer token (default `IRON_MANAGEMENT_API_KEY`).
    pub api_key_env: String,
}

impl Decode for ManagementConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["listen", "api_key_env"])?;
        let listen = m.req(cx, "listen");
        let api_key_env = m.or(cx, "api_key_env", "IRON_MANAGEMENT_API_KEY".to_string());
        Ok(ManagementConfig { listen: listen?, api_key_env: api_key_env? })
    }
}

/// `metrics:`: the Prometheus endpoint. The spec documents no way to disable
/// it, so it is always on: an absent block means `listen: ":9090"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Bind address (default `:9090`).
    pub listen: ListenAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: ListenAddr::AllInterfaces(9090) }
    }
}

impl Decode for MetricsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["listen"])?;
        Ok(MetricsConfig { listen: m.or(cx, "listen", ListenAddr::AllInterfaces(9090))? })
    }
}

/// `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info` (default)
    #[default]
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl LogLevel {
    /// The name as written in config (`debug`, `info`, `warn`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `log:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Verbosity (default `info`).
    pub level: LogLevel,
}

impl Decode for LogConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["level"])?;
        let levels =
            [("debug", LogLevel::Debug), ("info", LogLevel::Info), ("warn", LogLevel::Warn), ("error", LogLevel::Error)];
        let level = m.opt_with(cx, "level", |n, cx| one_of(n, cx, "log level", &levels))?;
        Ok(LogConfig { level: level.unwrap_or_default() })
    }
}

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
        let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
        if (plain && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')) || !valid {
            return Err(cx.error(node.pos, format!("invalid uid or user name {text:?}")));
        }
        Ok(UidSpec::Name(text.to_string()))
    }
}

impl Decode for InterceptConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["mode", "cgroups", "uids", "listen", "dns", "pin_path"])?;
        let modes = [("ebpf", InterceptMode::Ebpf), ("nftables", InterceptMode::Nftables)];
        let mode = m.opt_with(cx, "mode", |n, cx| one_of(n, cx, "intercept mode", &modes));
        let cgroups = m.or_default::<Vec<PathBuf>>(cx, "cgroups");
        let uids = m.or_default::<Vec<UidSpec>>(cx, "uids");
        let listen = m.or(cx, "listen", ListenAddr::Addr(SocketAddr::from(([127, 0, 0, 1], 15001))));
        let dns = m.opt(cx, "dns");
        let pin_path = m.opt_with(cx, "pin_path", |n, cx| {
            str_with(n, cx, |s| if s.starts_with('/') { Ok(PathBuf::from(s)) } else { Err(format!("pin_path {s:?} must be absolute")) })
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
            pin_path: pin_path?.unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/iron-proxy")),
        })
    }
}
