//! Findings about what the policy covers: a config with no allowlist lets
//! every destination through, and in `tls.mode: sni-only` the transforms
//! that read or write requests, and rules that restrict methods or paths,
//! never see an HTTPS request (the spec: they "require MITM mode").

use super::Unplaced;
use crate::config::sections::TlsConfig;
use crate::config::transforms::TransformConfig;
use crate::config::Config;
use crate::rules::{MethodSet, Rule};

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
