//! The `secrets` transform: static credentials injected into, or swapped
//! into, matching requests. The backwards-compatible form with the replace
//! fields at the top of an entry is normalized into `replace`.

use super::common::{bad_header_char, check_header_template, header_name, template};
use super::decode::{str_with, Cx, Decode, MapDe, Res};
use super::sources::SecretSourceConfig;
use super::values::HeaderMatcher;
use super::yaml::Node;
use crate::rules::Scope;
use crate::template::Template;

/// `secrets`: a list of independent entries.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretsConfig {
    /// The entries, evaluated independently.
    pub secrets: Vec<SecretEntry>,
    /// `scrub_response_bodies` (our addition; default true): mask, in the
    /// response body, the credential values this transform put in the
    /// request, as the response headers always are.
    pub scrub_response_bodies: bool,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            secrets: Vec::new(),
            scrub_response_bodies: true,
        }
    }
}

/// One `secrets.secrets[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretEntry {
    /// Where the real value comes from.
    pub source: SecretSourceConfig,
    /// Inject or replace.
    pub mode: SecretMode,
    /// Where it applies (empty: every request).
    pub rules: Scope,
}

/// Exactly one of `inject` or `replace`.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretMode {
    /// Set a header or query parameter unconditionally.
    Inject(InjectConfig),
    /// Swap a proxy token for the real value.
    Replace(ReplaceConfig),
}

/// `inject`: exactly one target.
#[derive(Debug, Clone, PartialEq)]
pub enum InjectConfig {
    /// `header:` (casing kept), with an optional `formatter` (default: the raw value).
    Header {
        /// Header name as written.
        name: String,
        /// Template over `.Value`.
        formatter: Option<Template>,
    },
    /// `query_param:` set to the raw value. A `formatter` is not used here (the
    /// spec: "Not used with `query_param`"); it loads, with a warning.
    QueryParam {
        /// Parameter name.
        name: String,
    },
}

/// `replace`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaceConfig {
    /// The placeholder the workload sends (non-empty).
    pub proxy_value: String,
    /// Headers scanned; empty scans all.
    pub match_headers: Vec<HeaderMatcher>,
    /// Scan the body.
    pub match_body: bool,
    /// Scan the URL path.
    pub match_path: bool,
    /// Scan the query string.
    pub match_query: bool,
    /// Reject (403) matching requests that lack the token.
    pub require: bool,
}

const REPLACE_FIELDS: [&str; 6] = [
    "proxy_value",
    "match_headers",
    "match_body",
    "match_path",
    "match_query",
    "require",
];

impl Decode for SecretsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["secrets", "scrub_response_bodies"])?;
        let secrets = m.or_default(cx, "secrets");
        let scrub_response_bodies = m.or(cx, "scrub_response_bodies", true);
        Ok(SecretsConfig {
            secrets: secrets?,
            scrub_response_bodies: scrub_response_bodies?,
        })
    }
}

/// Reads the replace fields from `m` (a `replace:` block, or a legacy entry).
fn replace_fields(m: &MapDe<'_>, cx: &mut Cx) -> Res<ReplaceConfig> {
    let proxy_value = m.req_with(cx, "proxy_value", |n, cx| {
        str_with(n, cx, |s| {
            if s.is_empty() {
                Err("proxy_value must not be empty".into())
            } else {
                Ok(s.to_string())
            }
        })
    });
    let match_headers = m.or_default(cx, "match_headers");
    let match_body = m.or(cx, "match_body", false);
    let match_path = m.or(cx, "match_path", false);
    let match_query = m.or(cx, "match_query", false);
    let require = m.or(cx, "require", false);
    let cfg = ReplaceConfig {
        proxy_value: proxy_value?,
        match_headers: match_headers?,
        match_body: match_body?,
        match_path: match_path?,
        match_query: match_query?,
        require: require?,
    };
    unmatchable_in_headers(m, cx, &cfg)?;
    Ok(cfg)
}

/// A `proxy_value` with a character no header value may hold (a trailing
/// newline from a YAML block scalar, most often) is never found in a
/// header, where every entry looks. An error when headers are all the entry
/// scans (it could never swap anything, and with `require` would refuse
/// every request); a warning when it scans the body or the query too, where
/// the token can still be found.
fn unmatchable_in_headers(m: &MapDe<'_>, cx: &mut Cx, cfg: &ReplaceConfig) -> Res<()> {
    let (Some(bad), Some(node)) = (bad_header_char(&cfg.proxy_value), m.node("proxy_value")) else {
        return Ok(());
    };
    let what = format!(
        "proxy_value holds {} at character {}, which no HTTP header value may hold, so the \
         token is never found in a header",
        bad.what(),
        bad.at
    );
    let hint = bad.hint();
    cx.key("proxy_value", |cx| {
        if cfg.match_body || cfg.match_query {
            cx.warn(
                node.pos,
                format!("{what}; only in the body or the query{hint}"),
            );
            Ok(())
        } else {
            Err(cx.error(
                node.pos,
                format!("{what}, and headers are all this entry scans{hint}"),
            ))
        }
    })
}

impl Decode for ReplaceConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &REPLACE_FIELDS)?;
        replace_fields(&m, cx)
    }
}

impl Decode for InjectConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["header", "query_param", "formatter"])?;
        let header = m.opt_with(cx, "header", header_name);
        let query = m.opt_with(cx, "query_param", |n, cx| {
            str_with(n, cx, |s| {
                if s.is_empty() {
                    Err("query_param must not be empty".into())
                } else {
                    Ok(s.to_string())
                }
            })
        });
        let formatter = m.opt_with(cx, "formatter", |n, cx| {
            template(n, cx, &["Value"], Some(&[]))
        });
        match (header?, query?) {
            (Some(name), None) => {
                let formatter = formatter?;
                if let (Some(t), Some(n)) = (&formatter, m.node("formatter")) {
                    cx.key("formatter", |cx| check_header_template(n, cx, t))?;
                }
                Ok(InjectConfig::Header { name, formatter })
            }
            (None, Some(name)) => {
                // Still decoded above, so a broken template is an error here too.
                formatter?;
                if let Some(n) = m.node("formatter") {
                    cx.key("formatter", |cx| {
                        cx.warn(
                            n.pos,
                            "'formatter' is not used with 'query_param': the parameter is set \
                             to the raw secret value; remove 'formatter' (or inject a 'header' \
                             to format the value)",
                        )
                    });
                }
                Ok(InjectConfig::QueryParam { name })
            }
            (Some(_), Some(_)) => {
                Err(cx.error(m.pos, "'header' and 'query_param' are mutually exclusive"))
            }
            (None, None) => Err(cx.error(m.pos, "one of 'header' or 'query_param' is required")),
        }
    }
}

impl Decode for SecretEntry {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let fields = ["source", "inject", "replace", "rules"];
        let all: Vec<&str> = fields
            .iter()
            .chain(REPLACE_FIELDS.iter())
            .copied()
            .collect();
        let m = cx.map(node, &all)?;
        let source = m.req(cx, "source");
        let rules = m.or_default(cx, "rules");
        let legacy = REPLACE_FIELDS
            .iter()
            .find_map(|f| m.key_pos(f).map(|p| (*f, p)));
        // Both blocks are decoded even when they conflict, so their own errors show too.
        let inject = m.opt::<InjectConfig>(cx, "inject");
        let replace = m.opt::<ReplaceConfig>(cx, "replace");
        if m.has("inject") && m.has("replace") {
            let pos = m.key_pos("replace").unwrap_or(m.pos);
            return Err(cx.error(pos, "'inject' and 'replace' are mutually exclusive"));
        }
        if let Some((field, pos)) = legacy {
            if m.has("inject") {
                return Err(cx.error(
                    pos,
                    format!("'{field}' is a replace-mode field, but this entry uses 'inject'"),
                ));
            }
            if m.has("replace") {
                let msg = format!("'{field}' belongs inside 'replace': do not mix the legacy top-level replace fields with a 'replace' block");
                return Err(cx.error(pos, msg));
            }
        }
        let mode = match (inject?, replace?) {
            (Some(i), _) => Ok(SecretMode::Inject(i)),
            (None, Some(r)) => Ok(SecretMode::Replace(r)),
            (None, None) if legacy.is_some() => replace_fields(&m, cx).map(SecretMode::Replace),
            (None, None) => Err(cx.error(m.pos, "one of 'inject' or 'replace' is required")),
        };
        Ok(SecretEntry {
            source: source?,
            mode: mode?,
            rules: rules?,
        })
    }
}
