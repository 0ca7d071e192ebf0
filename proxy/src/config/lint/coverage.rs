//! Findings about what the policy covers: a config with no allowlist lets
//! every destination through, and in `tls.mode: sni-only` the transforms
//! that read or write requests, and rules that restrict methods or paths,
//! never see an HTTPS request (the spec: they "require MITM mode").

use super::Unplaced;
use crate::config::sections::TlsConfig;
use crate::config::transforms::TransformConfig;
use crate::config::Config;
use crate::rules::{HostPattern, MethodSet, Rule};

/// No `allowlist` among the transforms: nothing is refused but what
/// `upstream_deny_cidrs` names.
pub(super) fn no_allowlist(cfg: &Config) -> Option<Unplaced> {
    if cfg
        .transforms
        .iter()
        .any(|t| matches!(t, TransformConfig::Allowlist(_)))
    {
        return None;
    }
    Some(Unplaced {
        path: "transforms".into(),
        message: "no allowlist transform: every destination is allowed (only \
                  proxy.upstream_deny_cidrs is refused); the allowlist is the default-deny \
                  boundary, so add one (with warn: true to roll it out first)"
            .into(),
    })
}

/// Interception whose DNS redirection is off only because the config has no
/// `dns` block: the intercepted workloads may send no UDP, so they resolve
/// no name but what `/etc/hosts` holds. Said outright (`intercept.dns:
/// false`), it is a choice and no finding.
pub(super) fn intercept_without_dns(cfg: &Config) -> Option<Unplaced> {
    let ic = cfg.intercept.as_ref()?;
    if ic.dns.is_some() || cfg.dns.is_some() {
        return None;
    }
    Some(Unplaced {
        path: "intercept".into(),
        message: "intercepted workloads' DNS is not redirected (there is no dns block) and the \
                  rest of their UDP is refused: they resolve no name but what /etc/hosts holds; \
                  add a dns block (dns.listen, dns.proxy_ip; intercept.dns then defaults to on), \
                  or set intercept.dns: false to say that this is meant"
            .into(),
    })
}

/// Top-level domains whose `*.tld` passthrough glob would forward a large
/// share of the public internet's names.
const PUBLIC_TLDS: [&str; 12] = [
    "com", "net", "org", "io", "dev", "app", "ai", "co", "xyz", "info", "cloud", "me",
];

/// A `dns.passthrough` glob so broad that it turns interception off for the
/// public internet: `*`, or every name under a public top-level domain. Such
/// names resolve to their real addresses (workloads connect around the proxy
/// where DNS is what sends them to it), and any workload can send data out
/// in the names it looks up.
pub(super) fn broad_passthrough(cfg: &Config) -> Vec<Unplaced> {
    let Some(dns) = &cfg.dns else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, p) in dns.passthrough.iter().enumerate() {
        let what = match p {
            HostPattern::Any => "every name".to_string(),
            HostPattern::Subdomains(tld) if PUBLIC_TLDS.contains(&tld.as_str()) => {
                format!("every name under .{tld}")
            }
            _ => continue,
        };
        out.push(Unplaced {
            path: format!("dns.passthrough[{i}]"),
            message: format!(
                "this glob forwards {what} to the upstream resolver: those names get their real \
                 addresses (where DNS is what sends workloads to the proxy, they connect around \
                 it) and any workload can send data out in the names it looks up; list the \
                 internal zones that need it (\"*.corp.example\", \"*.svc.cluster.local\")"
            ),
        });
    }
    out
}

/// `dns.upstream_resolver` that is one of the proxy's own DNS addresses:
/// every passthrough name would loop back (answered SERVFAIL), and the
/// proxy's own lookups of the hosts it dials would get `dns.proxy_ip`.
pub(super) fn resolver_is_self(cfg: &Config) -> Option<Unplaced> {
    let dns = cfg.dns.as_ref()?;
    let up = dns.upstream_resolver?;
    let own = dns.listen.socket_addrs().into_iter().any(|l| {
        l.port() == up.port()
            && (l.ip() == up.ip()
                || (l.ip().is_unspecified() && up.ip().to_canonical().is_loopback()))
    });
    own.then(|| Unplaced {
        path: "dns.upstream_resolver".into(),
        message: format!(
            "{up} is this proxy's own DNS server (dns.listen {}): passthrough names would be \
             forwarded to itself (answered SERVFAIL) and the proxy would resolve the hosts it \
             dials to dns.proxy_ip; name the resolver the proxy itself should use",
            dns.listen
        ),
    })
}

/// In `sni-only` mode: each transform that acts on requests, and each
/// allowlist rule that restricts methods or paths.
pub(super) fn sni_only(cfg: &Config) -> Vec<Unplaced> {
    if cfg.tls != TlsConfig::SniOnly {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, t) in cfg.transforms.iter().enumerate() {
        match t {
            TransformConfig::Allowlist(a) => {
                for (j, rule) in a.rules.iter().enumerate() {
                    if restricts_requests(rule) {
                        out.push(Unplaced {
                            path: format!("transforms[{i}].config.rules[{j}]"),
                            message: "tls.mode is sni-only: an HTTPS connection is judged on its \
                                      host alone (no method or path), so this rule, which \
                                      restricts methods or paths, never admits one (it applies \
                                      to plain-HTTP requests only); allow the host without \
                                      methods and paths, or use tls.mode: mitm"
                                .into(),
                        });
                    }
                }
            }
            other => out.push(Unplaced {
                path: format!("transforms[{i}]"),
                message: format!(
                    "tls.mode is sni-only: HTTPS connections pass through undecrypted, so {} \
                     never acts on them (only on plain-HTTP requests); it needs tls.mode: mitm",
                    other.name()
                ),
            }),
        }
    }
    if cfg.mcp.is_some() {
        out.push(Unplaced {
            path: "mcp".into(),
            message: "tls.mode is sni-only: MCP over HTTPS passes through undecrypted, so these \
                      policies apply to plain-HTTP MCP servers only; they need tls.mode: mitm"
                .into(),
        });
    }
    out
}

/// True for a rule that names methods or paths.
fn restricts_requests(rule: &Rule) -> bool {
    rule.methods != MethodSet::All || !rule.paths.is_empty()
}
