//! `IRON_*` environment overrides. They are applied to the document tree
//! before decoding, as nodes that remember their variable, so a bad value is
//! reported like any config error but names the variable:
//! `IRON_TLS_MODE: tls.mode: invalid tls mode 'mitn', did you mean 'mitm'? ...`.
//!
//! An empty value counts as unset, except `IRON_PROXY_UPSTREAM_DENY_CIDRS`,
//! where it means "deny nothing" (like `upstream_deny_cidrs: []`).
//! `IRON_DNS_ENABLED=true` creates the `dns` block (so `proxy_ip` must come from
//! the file or `IRON_DNS_PROXY_IP`); `false` removes it. The other `IRON_DNS_*`
//! variables need DNS to be enabled: setting one without a `dns` block is an
//! error rather than a silently ignored value. `IRON_MANAGEMENT_LISTEN` enables
//! the management API.
//!
//! A value that is not UTF-8 is an error naming the variable (never the
//! value, [`not_utf8`]), not an unset variable: `IRON_TLS_MODE=$'mitm\xff'`
//! would otherwise be ignored without a word.

use std::ffi::OsString;

use super::decode::Cx;
use super::yaml::{Kind, Node, Pos};
use super::ConfigError;

/// A value override: variable, section, key, and whether the value is a comma-separated list.
pub(super) const OVERRIDES: [(&str, &str, &str, bool); 21] = [
    ("IRON_DNS_LISTEN", "dns", "listen", false),
    ("IRON_DNS_PROXY_IP", "dns", "proxy_ip", false),
    (
        "IRON_DNS_UPSTREAM_RESOLVER",
        "dns",
        "upstream_resolver",
        false,
    ),
    ("IRON_PROXY_HTTP_LISTEN", "proxy", "http_listen", false),
    ("IRON_PROXY_HTTPS_LISTEN", "proxy", "https_listen", false),
    ("IRON_PROXY_TUNNEL_LISTEN", "proxy", "tunnel_listen", false),
    (
        "IRON_PROXY_MAX_REQUEST_BODY_BYTES",
        "proxy",
        "max_request_body_bytes",
        false,
    ),
    (
        "IRON_PROXY_MAX_RESPONSE_BODY_BYTES",
        "proxy",
        "max_response_body_bytes",
        false,
    ),
    (
        "IRON_PROXY_MAX_BUFFERED_BYTES",
        "proxy",
        "max_buffered_bytes",
        false,
    ),
    (
        "IRON_PROXY_UPSTREAM_RESPONSE_HEADER_TIMEOUT",
        "proxy",
        "upstream_response_header_timeout",
        false,
    ),
    (
        "IRON_PROXY_UPSTREAM_DENY_CIDRS",
        "proxy",
        "upstream_deny_cidrs",
        true,
    ),
    (
        "IRON_PROXY_MAX_CONNECTIONS_PER_CLIENT",
        "proxy",
        "max_connections_per_client",
        false,
    ),
    (
        "IRON_PROXY_MAX_CONNECTIONS",
        "proxy",
        "max_connections",
        false,
    ),
    ("IRON_PROXY_CLIENT_CIDRS", "proxy", "client_cidrs", true),
    ("IRON_TLS_MODE", "tls", "mode", false),
    ("IRON_TLS_CA_CERT", "tls", "ca_cert", false),
    ("IRON_TLS_CA_KEY", "tls", "ca_key", false),
    ("IRON_TLS_CERT_CACHE_SIZE", "tls", "cert_cache_size", false),
    (
        "IRON_TLS_LEAF_CERT_EXPIRY_HOURS",
        "tls",
        "leaf_cert_expiry_hours",
        false,
    ),
    ("IRON_METRICS_LISTEN", "metrics", "listen", false),
    ("IRON_MANAGEMENT_LISTEN", "management", "listen", false),
];

/// Creates (`true`) or removes (`false`) the `dns` block.
pub(super) const DNS_ENABLED: &str = "IRON_DNS_ENABLED";

/// `log.level`; applied after the others (an empty value is unset).
pub(super) const LOG_LEVEL: &str = "IRON_LOG_LEVEL";

/// An error for each variable [`apply`] reads whose value (as `var_os`
/// gives it) is not UTF-8: `IRON_TLS_MODE: the value is not UTF-8`. The
/// value is not shown: it may be anything, a secret's bytes included.
pub(crate) fn not_utf8(var_os: &dyn Fn(&str) -> Option<OsString>) -> Vec<ConfigError> {
    OVERRIDES
        .iter()
        .map(|o| o.0)
        .chain([DNS_ENABLED, LOG_LEVEL])
        .filter(|var| var_os(var).is_some_and(|v| v.to_str().is_none()))
        .map(|var| ConfigError {
            file: var.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "the value is not UTF-8".into(),
        })
        .collect()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Applies the overrides to `root`, recording errors in `cx`.
pub(crate) fn apply(root: &mut Node, env: &dyn Fn(&str) -> Option<String>, cx: &mut Cx) {
    const ENABLED: &str = DNS_ENABLED;
    let mut dns_forced_off = false;
    if let Some(v) = env(ENABLED).filter(|v| !v.is_empty()) {
        match parse_bool(v.trim()) {
            Some(true) => {
                root.map_mut("dns", Pos::Env(ENABLED));
            }
            Some(false) => {
                root.remove("dns");
                dns_forced_off = true;
            }
            None => {
                cx.error_at_path(
                    Pos::Env(ENABLED),
                    "dns".into(),
                    format!("invalid boolean {v:?} (expected true or false)"),
                );
            }
        }
    }
    let log = env(LOG_LEVEL)
        .filter(|v| !v.is_empty())
        .map(|v| (LOG_LEVEL, "log", "level", v, false));
    let overrides = OVERRIDES
        .iter()
        .filter_map(|&(var, section, key, list)| {
            let v = env(var)?;
            (!v.is_empty() || list).then_some((var, section, key, v, list))
        })
        .chain(log);
    for (var, section, key, value, list) in overrides {
        let pos = Pos::Env(var);
        if section == "dns" && root.get("dns").is_none_or(Node::is_null) {
            if !dns_forced_off {
                cx.error_at_path(
                    pos,
                    format!("dns.{key}"),
                    "cannot apply: DNS is disabled (no dns block; add one or set IRON_DNS_ENABLED=true)",
                );
            }
            continue;
        }
        let node = if list {
            let items = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Node::plain(s, pos))
                .collect();
            Node {
                pos,
                kind: Kind::Seq(items),
            }
        } else {
            Node::plain(value.trim(), pos)
        };
        if let Some(target) = root.map_mut(section, pos) {
            target.set(key, node);
        }
    }
}
