//! The small top-level sections: `proxy`, `tls`, `management`, `metrics`, `log`.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::decode::{env_or, int, one_of, one_of_any_case, Cx, Decode, Res};
use super::values::{ListenAddr, PositiveDuration};
use super::yaml::Node;

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
    /// Our addition: the bytes of bodies held whole at once, over every
    /// request (default 256 MiB; `0`: no limit) ([`crate::body::budget`]).
    pub max_buffered_bytes: u64,
    /// Wait for upstream response headers (default 30s).
    pub upstream_response_header_timeout: PositiveDuration,
    /// Ranges never dialled. Unset gives [`DEFAULT_DENY_CIDRS`]; `[]` opts out.
    pub upstream_deny_cidrs: Vec<IpNet>,
    /// Connections one client address may have open at once, over all
    /// listeners (1..=1000000); absent or null: no cap (the default).
    pub max_connections_per_client: Option<std::num::NonZeroU32>,
    /// Client connections open at once over all clients and listeners
    /// (1..=1000000); absent or null: two fifths of the open-file limit
    /// ([`crate::ops::fd_limit::default_max_connections`]).
    pub max_connections: Option<std::num::NonZeroU32>,
    /// Our addition: the client addresses admitted to every listener and
    /// the DNS server, loopback always among them; absent or null: any
    /// client (the spec's behaviour); `[]`: loopback alone
    /// ([`crate::client_acl`]).
    pub client_cidrs: Option<Vec<IpNet>>,
}

/// The largest `proxy.max_connections_per_client` and `proxy.max_connections`:
/// above any descriptor limit, so a larger value could only be a mistake.
pub const MAX_CONNECTIONS_PER_CLIENT: i64 = 1_000_000;

/// `upstream_deny_cidrs` when unset: IMDS (v4 and v6) and loopback.
pub const DEFAULT_DENY_CIDRS: [&str; 4] = [
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "127.0.0.0/8",
    "::1/128",
];

/// The default deny list, parsed.
pub fn default_deny_cidrs() -> Vec<IpNet> {
    DEFAULT_DENY_CIDRS
        .iter()
        .map(|c| c.parse().expect("constant CIDRs are valid"))
        .collect()
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
                "max_buffered_bytes",
                "upstream_response_header_timeout",
                "upstream_deny_cidrs",
                "max_connections_per_client",
                "max_connections",
                "client_cidrs",
            ],
        )?;
        let per_client = m.opt_with(cx, "max_connections_per_client", |n, cx| {
            int(n, cx, 1, MAX_CONNECTIONS_PER_CLIENT)
        });
        let total = m.opt_with(cx, "max_connections", |n, cx| {
            int(n, cx, 1, MAX_CONNECTIONS_PER_CLIENT)
        });
        let clients = m.opt(cx, "client_cidrs");
        let http_listen = m.or(cx, "http_listen", ListenAddr::AllInterfaces(80));
        let https_listen = m.or(cx, "https_listen", ListenAddr::AllInterfaces(443));
        let tunnel_listen = m.opt(cx, "tunnel_listen");
        let max_req = m.or(cx, "max_request_body_bytes", 1_048_576u64);
        let max_rsp = m.or(cx, "max_response_body_bytes", 0u64);
        let max_held = m.or(cx, "max_buffered_bytes", crate::body::budget::DEFAULT_TOTAL);
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
            max_buffered_bytes: max_held?,
            upstream_response_header_timeout: timeout?,
            upstream_deny_cidrs: deny?,
            max_connections_per_client: per_client?
                .and_then(|v| u32::try_from(v).ok())
                .and_then(std::num::NonZeroU32::new),
            max_connections: total?
                .and_then(|v| u32::try_from(v).ok())
                .and_then(std::num::NonZeroU32::new),
            client_cidrs: clients?,
        })
    }
}

/// A positive duration of `n` seconds (for defaults).
pub(crate) fn secs(n: u64) -> PositiveDuration {
    PositiveDuration::new(std::time::Duration::from_secs(n))
        .expect("default durations are positive")
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
    /// CA certificate, PEM. Required to start; `None` still validates (with
    /// a warning, an error under `-strict`): the spec's example configs leave
    /// the CA to the deployment (`IRON_TLS_CA_CERT`, a mounted file).
    pub ca_cert: Option<PathBuf>,
    /// CA private key, PEM; as `ca_cert`.
    pub ca_key: Option<PathBuf>,
    /// Leaf certificates kept in the LRU cache (default 1000, at least 1).
    pub cert_cache_size: usize,
    /// Leaf validity in hours (default 72, at least 1).
    pub leaf_cert_expiry_hours: u32,
}

/// A CA field MITM mode needs that the config leaves unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "tls.{field} is not set; MITM mode (the default) needs the CA to start: set it here or in \
     {var}, or set tls.mode: sni-only"
)]
pub struct CaUnset {
    /// `ca_cert` or `ca_key`.
    pub field: &'static str,
    /// The environment override that can set it.
    pub var: &'static str,
}

impl MitmConfig {
    /// The CA certificate and key files, or the first of the two fields
    /// that is not set.
    pub fn ca_paths(&self) -> Result<(&Path, &Path), CaUnset> {
        match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => Ok((cert, key)),
            _ => Err(self.unset()[0]),
        }
    }

    /// Each CA field that is not set.
    pub fn unset(&self) -> Vec<CaUnset> {
        [
            (&self.ca_cert, "ca_cert", "IRON_TLS_CA_CERT"),
            (&self.ca_key, "ca_key", "IRON_TLS_CA_KEY"),
        ]
        .into_iter()
        .filter(|(v, _, _)| v.is_none())
        .map(|(_, field, var)| CaUnset { field, var })
        .collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Mitm,
    SniOnly,
}

impl Decode for TlsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "mode",
                "ca_cert",
                "ca_key",
                "cert_cache_size",
                "leaf_cert_expiry_hours",
            ],
        )?;
        let mode = m.opt_with(cx, "mode", |n, cx| {
            one_of(
                n,
                cx,
                "tls mode",
                &[("mitm", Mode::Mitm), ("sni-only", Mode::SniOnly)],
            )
        });
        let size = m.opt_with(cx, "cert_cache_size", |n, cx| {
            int(n, cx, 1, i64::from(u32::MAX))
        });
        let hours = m.opt_with(cx, "leaf_cert_expiry_hours", |n, cx| {
            int(n, cx, 1, 24 * 365 * 20)
        });
        let (ca_cert, ca_key) = (
            m.opt::<PathBuf>(cx, "ca_cert"),
            m.opt::<PathBuf>(cx, "ca_key"),
        );
        if mode?.unwrap_or(Mode::Mitm) == Mode::SniOnly {
            return Ok(TlsConfig::SniOnly);
        }
        Ok(TlsConfig::Mitm(MitmConfig {
            ca_cert: ca_cert?,
            ca_key: ca_key?,
            cert_cache_size: size?.map_or(1000, |v| usize::try_from(v).unwrap_or(usize::MAX)),
            leaf_cert_expiry_hours: hours?.map_or(72, |v| u32::try_from(v).unwrap_or(u32::MAX)),
        }))
    }
}

/// The variable holding the management API's bearer token unless
/// `management.api_key_env` names another (the spec's default).
pub const DEFAULT_API_KEY_ENV: &str = "IRON_MANAGEMENT_API_KEY";

/// `management:`: the bearer-authenticated management API. Absent means disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Bind address (required; keep it on loopback).
    pub listen: ListenAddr,
    /// Variable holding the bearer token (default `IRON_MANAGEMENT_API_KEY`).
    pub api_key_env: String,
}

/// The keys of `management`.
pub(super) const MANAGEMENT_FIELDS: [&str; 2] = ["listen", "api_key_env"];

impl Decode for ManagementConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &MANAGEMENT_FIELDS)?;
        let listen = m.req(cx, "listen");
        let api_key_env = env_or(&m, cx, "api_key_env", DEFAULT_API_KEY_ENV);
        Ok(ManagementConfig {
            listen: listen?,
            api_key_env: api_key_env?,
        })
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
        MetricsConfig {
            listen: ListenAddr::AllInterfaces(9090),
        }
    }
}

impl Decode for MetricsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["listen"])?;
        Ok(MetricsConfig {
            listen: m.or(cx, "listen", ListenAddr::AllInterfaces(9090))?,
        })
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

/// `log.format`: how operational log lines are written to stderr. Audit
/// records are JSON lines either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `json` (default): one JSON object per line, like the audit records,
    /// so a log pipeline reads the whole stream as JSON lines.
    #[default]
    Json,
    /// `text`: tracing's human-readable format, for a terminal.
    Text,
}

impl LogFormat {
    /// The name as written in config (`json`, `text`).
    pub fn as_str(&self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// `log:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Verbosity (default `info`).
    pub level: LogLevel,
    /// Line format of operational logs (default `json`).
    pub format: LogFormat,
}

impl Decode for LogConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["level", "format"])?;
        let levels = [
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("error", LogLevel::Error),
        ];
        // Any case, as Go's slog.Level reads it: `DEBUG`, `Info`.
        let level = m.opt_with(cx, "level", |n, cx| {
            one_of_any_case(n, cx, "log level", &levels)
        })?;
        let formats = [("json", LogFormat::Json), ("text", LogFormat::Text)];
        let format = m.opt_with(cx, "format", |n, cx| one_of(n, cx, "log format", &formats))?;
        Ok(LogConfig {
            level: level.unwrap_or_default(),
            format: format.unwrap_or_default(),
        })
    }
}
