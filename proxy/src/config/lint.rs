//! Valid configurations that probably do not do what their author meant.
//! `validate` prints these as warnings (never errors, even under `-strict`:
//! the spec allows each of them), and the proxy logs them at WARN when it
//! starts and on each reload.
//!
//! They are found at load, while the document is at hand to say where each
//! field was set, and kept in the [`Config`]; [`lint`] hands them out. Those
//! about one value that decoding settles (a `formatter` with `query_param`, a
//! `ttl` on an `env` source, `body_capture`'s `max_request_body_bytes: 0`) are
//! recorded by the decoder where it reads the value (`Cx::warn`); those about
//! how transforms and sections meet are found over the decoded config ([`find`]).

use std::fmt;
use std::ops::Range;

use super::secrets::{InjectConfig, SecretMode};
use super::transforms::{AnnotationGroup, TransformConfig};
use super::values::ListenAddr;
use super::{Config, Location};
use crate::rules::Scope;

/// One finding, with the field it is about and where that field was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Where the field was set: `proxy.yaml:14:5`, or the `IRON_*` variable.
    pub location: Location,
    /// Field path, e.g. `transforms[3]`; empty for a finding about an
    /// `IRON_*` variable that is not a config field at all.
    pub path: String,
    /// What is probably wrong, and what to do instead.
    pub message: String,
}

/// A finding before it is placed: the field path and the message.
pub(crate) struct Unplaced {
    /// Field path, e.g. `transforms[3]`.
    pub path: String,
    /// What is probably wrong, and what to do instead.
    pub message: String,
}

impl Unplaced {
    /// The finding, set at `location`.
    pub(crate) fn at(self, location: Location) -> Lint {
        Lint {
            location,
            path: self.path,
            message: self.message,
        }
    }
}

impl Lint {
    /// The line `validate` prints: `proxy.yaml:14:5: warning: transforms[3]: message`
    /// (without the path for a finding about the environment itself).
    pub fn warning_line(&self) -> String {
        match self.path.as_str() {
            "" => format!("{}: warning: {}", self.location, self.message),
            path => format!("{}: warning: {path}: {}", self.location, self.message),
        }
    }
}

impl fmt::Display for Lint {
    /// As config errors are shown: `proxy.yaml:14:5: transforms[3]: message`
    /// (`IRON_TLS_MOD: message` for a finding about a variable itself).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Where a transform puts real credentials (or values derived from them)
/// into requests: its scopes, or none when it injects nothing.
fn credential_scopes(t: &TransformConfig) -> Vec<&Scope> {
    match t {
        TransformConfig::Secrets(s) => s.secrets.iter().map(|e| &e.rules).collect(),
        TransformConfig::OauthToken(o) => o.tokens.iter().map(|e| &e.rules).collect(),
        TransformConfig::GcpAuth(g) => vec![&g.rules],
        TransformConfig::AwsAuth(a) => vec![&a.rules],
        TransformConfig::HmacSign(h) => vec![&h.rules],
        _ => Vec::new(),
    }
}

/// Where a transform writes request headers: the credential transforms'
/// scopes, and a `grpc` transform's (its server may set headers).
fn header_writing_scopes(t: &TransformConfig) -> Vec<&Scope> {
    match t {
        TransformConfig::Grpc(g) => vec![&g.rules],
        _ => credential_scopes(t),
    }
}

/// Where a credential transform may set request header `name` to a real
/// credential or a value derived from one: the scopes of its entries that
/// write that header.
fn credential_header_scopes<'t>(t: &'t TransformConfig, name: &str) -> Vec<&'t Scope> {
    let is = |written: &str| written.eq_ignore_ascii_case(name);
    match t {
        TransformConfig::Secrets(s) => s
            .secrets
            .iter()
            .filter(|e| match &e.mode {
                SecretMode::Inject(InjectConfig::Header { name, .. }) => is(name),
                SecretMode::Inject(InjectConfig::QueryParam { .. }) => false,
                // No `match_headers` scans every header; names are matched lowercase.
                SecretMode::Replace(r) => {
                    let lower = name.to_ascii_lowercase();
                    r.match_headers.is_empty() || r.match_headers.iter().any(|m| m.matches(&lower))
                }
            })
            .map(|e| &e.rules)
            .collect(),
        TransformConfig::OauthToken(o) => o
            .tokens
            .iter()
            .filter(|e| is(&e.header))
            .map(|e| &e.rules)
            .collect(),
        TransformConfig::GcpAuth(g) if is("authorization") => vec![&g.rules],
        TransformConfig::AwsAuth(a) if is("authorization") || is("x-amz-security-token") => {
            vec![&a.rules]
        }
        TransformConfig::HmacSign(h) if h.headers.iter().any(|w| is(&w.name)) => vec![&h.rules],
        _ => Vec::new(),
    }
}

/// The request headers a transform sets to a credential (or a value derived
/// from one), as written, each with the scope it sets it on: `secrets`'
/// injected headers and the headers its replacements name literally, the
/// header `oauth_token` sets, `gcp_auth`'s and `aws_auth`'s `Authorization`
/// (and SigV4's `X-Amz-Date`), `hmac_sign`'s headers.
fn credential_headers(t: &TransformConfig) -> Vec<(&str, &Scope)> {
    match t {
        TransformConfig::Secrets(s) => s
            .secrets
            .iter()
            .flat_map(|e| match &e.mode {
                SecretMode::Inject(InjectConfig::Header { name, .. }) => {
                    vec![(name.as_str(), &e.rules)]
                }
                SecretMode::Inject(InjectConfig::QueryParam { .. }) => Vec::new(),
                SecretMode::Replace(r) => r
                    .match_headers
                    .iter()
                    .filter_map(|m| m.literal())
                    .map(|name| (name, &e.rules))
                    .collect(),
            })
            .collect(),
        TransformConfig::OauthToken(o) => o
            .tokens
            .iter()
            .map(|e| (e.header.as_str(), &e.rules))
            .collect(),
        TransformConfig::GcpAuth(g) => vec![("Authorization", &g.rules)],
        TransformConfig::AwsAuth(a) => vec![("Authorization", &a.rules), ("X-Amz-Date", &a.rules)],
        TransformConfig::HmacSign(h) => h
            .headers
            .iter()
            .map(|w| (w.name.as_str(), &h.rules))
            .collect(),
        _ => Vec::new(),
    }
}

/// A `header_allowlist` at `transforms[i]` that does not list a header a
/// transform before it sets to a credential, on a host both apply to: the
/// header is stripped before the request leaves, though the transform's
/// trace says it injected it. The headers, each with the transforms that
/// set it.
fn stripped_credential_headers(
    cfg: &Config,
    i: usize,
    h: &super::HeaderAllowlistConfig,
) -> Vec<(String, Vec<String>)> {
    let kept = crate::transforms::header_allowlist::HeaderAllowlist::new(h);
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for k in 0..i {
        let t = &cfg.transforms[k];
        for (name, scope) in credential_headers(t) {
            if kept.allows(&name.to_ascii_lowercase()) || !scope.may_overlap(&h.rules) {
                continue;
            }
            let writer = format!("transforms[{k}] ({})", t.name());
            match out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, writers)) if writers.contains(&writer) => {}
                Some((_, writers)) => writers.push(writer),
                None => out.push((name.to_string(), vec![writer])),
            }
        }
    }
    out
}

/// The finding for [`stripped_credential_headers`], if any.
fn stripped_credentials(
    cfg: &Config,
    i: usize,
    h: &super::HeaderAllowlistConfig,
) -> Option<Unplaced> {
    let stripped = stripped_credential_headers(cfg, i, h);
    if stripped.is_empty() {
        return None;
    }
    let list: Vec<String> = stripped
        .iter()
        .map(|(name, writers)| format!("{name} (set by {})", writers.join(", ")))
        .collect();
    let (them, headers) = if stripped.len() == 1 {
        ("it", "that header")
    } else {
        ("them", "those headers")
    };
    Some(Unplaced {
        path: format!("transforms[{i}]"),
        message: format!(
            "header_allowlist does not list {}: on hosts both apply to, it strips {headers} \
             after the credential is set, and the upstream never receives {them}; add {them} \
             to its headers",
            list.join(", ")
        ),
    })
}

/// Where a transform swaps real credentials into request bodies: the scopes
/// of `secrets` entries that replace with `match_body`.
fn body_credential_scopes(t: &TransformConfig) -> Vec<&Scope> {
    match t {
        TransformConfig::Secrets(s) => s
            .secrets
            .iter()
            .filter(|e| matches!(&e.mode, SecretMode::Replace(r) if r.match_body))
            .map(|e| &e.rules)
            .collect(),
        _ => Vec::new(),
    }
}

/// `transforms[k] (name)` for each transform `k` in `range` that has a scope
/// (as `scopes` gives them) that may meet `rules`.
fn meeting(
    cfg: &Config,
    range: Range<usize>,
    scopes: impl Fn(&TransformConfig) -> Vec<&Scope>,
    rules: &Scope,
) -> Vec<String> {
    range
        .filter(|&k| {
            scopes(&cfg.transforms[k])
                .iter()
                .any(|s| s.may_overlap(rules))
        })
        .map(|k| format!("transforms[{k}] ({})", cfg.transforms[k].name()))
        .collect()
}

/// Whether transform `k` may set a header that annotation group `g`
/// captures, on a host `g` applies to.
fn sets_captured_header(cfg: &Config, k: usize, g: &AnnotationGroup) -> bool {
    !meeting(
        cfg,
        k..k + 1,
        |t| any_credential_header_scopes(t, &g.headers),
        &g.rules,
    )
    .is_empty()
}

/// [`credential_header_scopes`] for any of `names`.
fn any_credential_header_scopes<'t>(t: &'t TransformConfig, names: &[String]) -> Vec<&'t Scope> {
    names
        .iter()
        .flat_map(|h| credential_header_scopes(t, h))
        .collect()
}

/// The configuration's findings: those about single values in file order,
/// then the rest in config order. They were found when it was loaded (the
/// document, which says where each field was set, is not kept).
pub fn lint(cfg: &Config) -> Vec<Lint> {
    cfg.findings.clone()
}

/// The findings about `cfg`, in config order, for the loader to place.
pub(crate) fn find(cfg: &Config) -> Vec<Unplaced> {
    let mut out = Vec::new();
    let n = cfg.transforms.len();
    for (i, t) in cfg.transforms.iter().enumerate() {
        if let TransformConfig::HeaderAllowlist(h) = t {
            out.extend(stripped_credentials(cfg, i, h));
        }
        let message = match t {
            // A judge placed after a transform that injects credentials sends
            // them to its LLM provider (spec: LLM Judge, Pipeline Ordering).
            TransformConfig::Judge(j) => {
                let injected = meeting(cfg, 0..i, credential_scopes, &j.rules);
                if injected.is_empty() {
                    continue;
                }
                format!(
                    "judge {:?} runs after {}, so for the hosts both apply to its LLM provider \
                     sees the real credentials they inject; place the judge before them unless \
                     your threat model accepts that",
                    j.name,
                    injected.join(", ")
                )
            }
            // A header_allowlist placed before a transform that writes headers
            // (spec: Header Allowlist, Pipeline Position: after every such one).
            TransformConfig::HeaderAllowlist(h) => {
                let writers = meeting(cfg, i + 1..n, header_writing_scopes, &h.rules);
                if writers.is_empty() {
                    continue;
                }
                let (verb, they, work, run, them) = if writers.len() == 1 {
                    ("writes", "it", "works", "runs", "it")
                } else {
                    ("write", "they", "work", "run", "them")
                };
                format!(
                    "header_allowlist runs before {}, which {verb} request headers on hosts \
                     both apply to: the headers {they} {work} with are stripped before {they} \
                     {run}; place header_allowlist after {them} (the spec's pipeline position)",
                    writers.join(", ")
                )
            }
            // An annotate placed after a credential transform that sets a header
            // it captures would copy the credential into the audit record (spec:
            // body_capture, annotate). It records such a header as "[redacted]"
            // instead, but its author meant the workload's proxy token.
            TransformConfig::Annotate(a) => {
                let writers: Vec<String> = (0..i)
                    .filter(|&k| {
                        a.annotations
                            .iter()
                            .any(|g| sets_captured_header(cfg, k, g))
                    })
                    .map(|k| format!("transforms[{k}] ({})", cfg.transforms[k].name()))
                    .collect();
                if writers.is_empty() {
                    continue;
                }
                let (verb, them) = if writers.len() == 1 {
                    ("sets", "it")
                } else {
                    ("set", "them")
                };
                format!(
                    "annotate runs after {}, which {verb} request headers it captures on hosts \
                     both apply to: the audit record would hold the real credentials (annotate \
                     records those headers as \"[redacted]\" instead); place annotate before \
                     {them} to record the workload's proxy tokens",
                    writers.join(", ")
                )
            }
            // A body_capture placed after secrets that swap credentials into
            // bodies records the real credentials (spec: body_capture).
            TransformConfig::BodyCapture(b) => {
                let swappers = meeting(cfg, 0..i, body_credential_scopes, &b.rules);
                if swappers.is_empty() {
                    continue;
                }
                let (verb, them) = if swappers.len() == 1 {
                    ("swaps", "it")
                } else {
                    ("swap", "them")
                };
                format!(
                    "body_capture runs after {}, which {verb} real credentials into request \
                     bodies on hosts both apply to: the audit record would hold the \
                     credentials; place body_capture before {them} (the spec's position)",
                    swappers.join(", ")
                )
            }
            _ => continue,
        };
        out.push(Unplaced {
            path: format!("transforms[{i}]"),
            message,
        });
    }
    out.extend(precedence::credentials(cfg));
    out.extend(precedence::header_allowlists(cfg));
    out.extend(coverage::no_allowlist(cfg));
    out.extend(coverage::sni_only(cfg));
    out.extend(coverage::intercept_without_dns(cfg));
    out.extend(coverage::broad_passthrough(cfg));
    out.extend(coverage::resolver_is_self(cfg));
    out.extend(management_off_loopback(cfg));
    out
}

/// The management API on an address other hosts can reach. It always wants
/// its bearer token (it refuses to start without one), but it speaks plain
/// HTTP: on a shared network the token can be read off the wire and replayed,
/// and whoever has it can swap in any policy with `POST /v1/reload`. The
/// spec asks for loopback unless a separate network protects the API.
fn management_off_loopback(cfg: &Config) -> Option<Unplaced> {
    let mg = cfg.management.as_ref()?;
    let exposed = match &mg.listen {
        ListenAddr::AllInterfaces(_) => "every interface".to_string(),
        ListenAddr::Addr(a) if a.ip().to_canonical().is_loopback() => return None,
        ListenAddr::Addr(a) if a.ip().is_unspecified() => "every interface".to_string(),
        ListenAddr::Addr(a) => a.ip().to_string(),
    };
    let message = format!(
        "the management API listens on {exposed} ({listen}) over plain HTTP: the bearer token \
         from ${var} crosses the network unencrypted, and whoever reads it can load any policy \
         with POST /v1/reload; set management.listen to \"127.0.0.1:{port}\" and reach it \
         through SSH or a TLS proxy, unless only a trusted management network can reach this \
         address",
        listen = mg.listen,
        var = mg.api_key_env,
        port = mg.listen.port(),
    );
    Some(Unplaced {
        path: "management.listen".into(),
        message,
    })
}

mod coverage;
mod precedence;

#[cfg(test)]
mod tests;
