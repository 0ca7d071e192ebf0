//! Valid configurations that probably do not do what their author meant.
//! `validate` prints these as warnings (never errors, even under `-strict`:
//! the spec allows each of them), and the proxy logs them at WARN when it
//! starts and on each reload.

use std::fmt;
use std::ops::Range;

use super::transforms::TransformConfig;
use super::Config;
use crate::rules::Scope;

/// One finding, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Field path, e.g. `transforms[3]`.
    pub path: String,
    /// What is probably wrong, and what to do instead.
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
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

/// `transforms[k] (name)` for each transform `k` in `range` that has a scope
/// (as `scopes` gives them) that may meet `rules`.
fn meeting(
    cfg: &Config,
    range: Range<usize>,
    scopes: fn(&TransformConfig) -> Vec<&Scope>,
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

/// The configuration's findings, in config order.
pub fn lint(cfg: &Config) -> Vec<Lint> {
    let mut out = Vec::new();
    let n = cfg.transforms.len();
    for (i, t) in cfg.transforms.iter().enumerate() {
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
            _ => continue,
        };
        out.push(Lint {
            path: format!("transforms[{i}]"),
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(transforms: &str) -> Config {
        let text = format!(
            "tls:\n  mode: sni-only\ntransforms:\n{transforms}\
             \x20 - name: allowlist\n    config:\n      domains: [\"api.test\"]\n"
        );
        super::super::parse(&text, "t.yaml", &|_| None).expect("valid config")
    }

    const JUDGE: &str = "  - name: judge\n    config:\n      name: j1\n      prompt: p\n      \
                         rules: [{host: api.test}]\n      provider: {type: anthropic, model: m, \
                         api_key_env: K}\n";
    const SECRETS: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: \
                           {type: env, var: S}\n          replace:\n            proxy_value: tok\n\
                           \x20           match_headers: [Authorization]\n          rules: \
                           [{host: api.test}]\n";

    const HEADERS: &str = "  - name: header_allowlist\n    config:\n      headers: [Accept]\n";

    #[test]
    fn a_header_allowlist_before_a_header_writer_is_flagged_and_after_is_not() {
        let before = lint(&config(&format!("{HEADERS}{SECRETS}")));
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0].path, "transforms[0]");
        assert!(
            before[0]
                .message
                .starts_with("header_allowlist runs before transforms[1] (secrets), which writes request headers on hosts both apply to: the headers it works with are stripped before it runs; place header_allowlist after it"),
            "{}",
            before[0]
        );
        assert_eq!(lint(&config(&format!("{SECRETS}{HEADERS}"))), vec![]);
        // Scoped to another host than the secrets: they never meet.
        let elsewhere = HEADERS.replace(
            "headers: [Accept]\n",
            "headers: [Accept]\n      rules: [{host: other.test}]\n",
        );
        assert_eq!(lint(&config(&format!("{elsewhere}{SECRETS}"))), vec![]);
        // A judge writes no headers.
        assert_eq!(lint(&config(&format!("{HEADERS}{JUDGE}"))), vec![]);
        // A grpc server may set headers too; both are named.
        let grpc = "  - name: grpc\n    config:\n      name: g\n      target: \"localhost:9500\"\n";
        let both = lint(&config(&format!("{HEADERS}{SECRETS}{grpc}")));
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(
            both[0].message.starts_with(
                "header_allowlist runs before transforms[1] (secrets), transforms[2] (grpc), \
                 which write request headers on hosts both apply to: the headers they work with \
                 are stripped before they run; place header_allowlist after them"
            ),
            "{}",
            both[0]
        );
    }

    #[test]
    fn a_judge_after_secrets_is_flagged_and_before_is_not() {
        let after = lint(&config(&format!("{SECRETS}{JUDGE}")));
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0].path, "transforms[1]");
        assert!(
            after[0]
                .message
                .contains("judge \"j1\" runs after transforms[0] (secrets)"),
            "{}",
            after[0]
        );
        assert_eq!(lint(&config(&format!("{JUDGE}{SECRETS}"))), vec![]);
        assert_eq!(lint(&config(JUDGE)), vec![]);
        // Secrets for another host: the judge never sees them.
        let elsewhere = SECRETS.replace("{host: api.test}", "{host: other.test}");
        assert_eq!(lint(&config(&format!("{elsewhere}{JUDGE}"))), vec![]);
    }
}
