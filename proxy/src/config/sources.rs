//! Secret sources (`source:`, and every credential field of the signing
//! transforms): where a secret value comes from, tagged by `type`.

use std::fmt;
use std::str::FromStr;

use super::aws_region;
use super::decode::{env_or, env_var_name, one_of, parse_str, str_with, Cx, Decode, MapDe, Res};
use super::values::NonNegativeDuration;
use super::yaml::Node;

/// A 1Password secret reference, `op://vault/item/[section/]field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// Vault name or id.
    pub vault: String,
    /// Item name or id.
    pub item: String,
    /// Optional section.
    pub section: Option<String>,
    /// Field name.
    pub field: String,
}

impl FromStr for OpRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid 1Password reference {s:?}: expected op://vault/item/[section/]field")
        };
        let rest = s.strip_prefix("op://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [v, i, f] => Ok(OpRef {
                vault: v.to_string(),
                item: i.to_string(),
                section: None,
                field: f.to_string(),
            }),
            [v, i, sec, f] => Ok(OpRef {
                vault: v.to_string(),
                item: i.to_string(),
                section: Some(sec.to_string()),
                field: f.to_string(),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op://{}/{}/", self.vault, self.item)?;
        if let Some(s) = &self.section {
            write!(f, "{s}/")?;
        }
        f.write_str(&self.field)
    }
}

/// Where a secret value comes from (`source:`, and every credential field of
/// the signing transforms). Each variant carries the optional `json_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSourceConfig {
    /// `type: env`: an environment variable of the proxy process, read once.
    /// A `ttl` (every source takes one, the spec says) loads and has no
    /// effect here: the environment does not change while the proxy runs.
    Env {
        /// Variable name.
        var: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
    },
    /// `type: aws_sm`: AWS Secrets Manager.
    AwsSm {
        /// ARN or name.
        secret_id: String,
        /// Region; the SDK default when absent.
        region: Option<String>,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval; zero reads once.
        ttl: NonNegativeDuration,
    },
    /// `type: aws_ssm`: AWS Systems Manager Parameter Store.
    AwsSsm {
        /// Parameter name or ARN.
        name: String,
        /// Region; the SDK default when absent.
        region: Option<String>,
        /// Decrypt SecureString parameters (default true).
        with_decryption: bool,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval; zero reads once.
        ttl: NonNegativeDuration,
    },
    /// `type: 1password`: 1Password with a service account token.
    OnePassword {
        /// The `op://` reference.
        secret_ref: OpRef,
        /// Variable holding the service account token (default `OP_SERVICE_ACCOUNT_TOKEN`).
        token_env: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval; zero reads once.
        ttl: NonNegativeDuration,
    },
    /// `type: 1password_connect`: a 1Password Connect server.
    OnePasswordConnect {
        /// The `op://` reference.
        secret_ref: OpRef,
        /// Variable holding the Connect URL (default `OP_CONNECT_HOST`).
        host_env: String,
        /// Variable holding the Connect token (default `OP_CONNECT_TOKEN`).
        token_env: String,
        /// Field to extract when the value is JSON.
        json_key: Option<String>,
        /// Refresh interval; zero reads once.
        ttl: NonNegativeDuration,
    },
}

impl SecretSourceConfig {
    /// The `json_key`, whatever the type.
    pub fn json_key(&self) -> Option<&str> {
        match self {
            SecretSourceConfig::Env { json_key, .. }
            | SecretSourceConfig::AwsSm { json_key, .. }
            | SecretSourceConfig::AwsSsm { json_key, .. }
            | SecretSourceConfig::OnePassword { json_key, .. }
            | SecretSourceConfig::OnePasswordConnect { json_key, .. } => json_key.as_deref(),
        }
    }

    /// The refresh interval (zero for `env`, which is read once).
    pub fn ttl(&self) -> NonNegativeDuration {
        match self {
            SecretSourceConfig::Env { .. } => NonNegativeDuration::default(),
            SecretSourceConfig::AwsSm { ttl, .. }
            | SecretSourceConfig::AwsSsm { ttl, .. }
            | SecretSourceConfig::OnePassword { ttl, .. }
            | SecretSourceConfig::OnePasswordConnect { ttl, .. } => *ttl,
        }
    }

    /// Environment variables this source reads (the value itself, or a token/host).
    pub fn env_vars(&self) -> Vec<(&'static str, &str)> {
        match self {
            SecretSourceConfig::Env { var, .. } => vec![("var", var)],
            SecretSourceConfig::AwsSm { .. } | SecretSourceConfig::AwsSsm { .. } => vec![],
            SecretSourceConfig::OnePassword { token_env, .. } => vec![("token_env", token_env)],
            SecretSourceConfig::OnePasswordConnect {
                host_env,
                token_env,
                ..
            } => {
                vec![("host_env", host_env), ("token_env", token_env)]
            }
        }
    }
}

#[derive(Clone, Copy)]
enum SourceType {
    Env,
    AwsSm,
    AwsSsm,
    OnePassword,
    OnePasswordConnect,
}

const SOURCE_TYPES: &[(&str, SourceType)] = &[
    ("env", SourceType::Env),
    ("aws_sm", SourceType::AwsSm),
    ("aws_ssm", SourceType::AwsSsm),
    ("1password", SourceType::OnePassword),
    ("1password_connect", SourceType::OnePasswordConnect),
];

/// A required name that must not be empty (`secret_id`, `name`): an empty
/// one names no secret, and every fetch would fail at the first request.
fn non_empty(m: &MapDe<'_>, cx: &mut Cx, key: &'static str) -> Res<String> {
    m.req_with(cx, key, |n, cx| {
        str_with(n, cx, |s| {
            if s.is_empty() {
                Err(format!("{key} must not be empty"))
            } else {
                Ok(s.to_string())
            }
        })
    })
}

/// An AWS secret source's `region`: a host-name label (it goes into the
/// endpoint's host, [`aws_region::label_problem`]); a near miss of a
/// region's name loads with a warning ([`aws_region::warning`]).
fn region(m: &MapDe<'_>, cx: &mut Cx) -> Res<Option<String>> {
    m.opt_with(cx, "region", |n, cx| {
        let region = str_with(n, cx, |s| match aws_region::label_problem(s) {
            Some(p) => Err(p),
            None => Ok(s.to_string()),
        })?;
        let consequence = "The secret is fetched from AWS in this region, and AWS has no region \
                           of this name.";
        if let Some(w) = aws_region::warning(&region, consequence) {
            cx.warn(n.pos, w);
        }
        Ok(region)
    })
}

impl Decode for SecretSourceConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let Some(type_node) = node.get("type").filter(|n| !n.is_null()) else {
            // Report through the generic path: not a mapping, or no type.
            let m = cx.map(node, &["type"])?;
            return Err(cx.error(m.pos, "missing required field 'type' (env, aws_sm, aws_ssm, 1password or 1password_connect)"));
        };
        let kind = cx.key("type", |cx| {
            one_of(type_node, cx, "secret source type", SOURCE_TYPES)
        })?;
        let ttl = |m: &MapDe<'_>, cx: &mut Cx| m.or_default::<NonNegativeDuration>(cx, "ttl");
        let op_ref = |m: &MapDe<'_>, cx: &mut Cx| m.req_with(cx, "secret_ref", parse_str::<OpRef>);
        Ok(match kind {
            SourceType::Env => {
                let m = cx.map(node, &["type", "var", "json_key", "ttl"])?;
                let (var, json_key) = (m.req_with(cx, "var", env_var_name), m.opt(cx, "json_key"));
                if !ttl(&m, cx)?.is_zero() {
                    let pos = m.node("ttl").map_or(m.pos, |n| n.pos);
                    cx.key("ttl", |cx| {
                        cx.warn(
                            pos,
                            "'ttl' has no effect on an env source: the proxy's environment does \
                             not change while it runs, so the variable is read once; \
                             remove 'ttl'",
                        )
                    });
                }
                SecretSourceConfig::Env {
                    var: var?,
                    json_key: json_key?,
                }
            }
            SourceType::AwsSm => {
                let m = cx.map(node, &["type", "secret_id", "region", "json_key", "ttl"])?;
                let (secret_id, region, json_key, ttl) = (
                    non_empty(&m, cx, "secret_id"),
                    region(&m, cx),
                    m.opt(cx, "json_key"),
                    ttl(&m, cx),
                );
                SecretSourceConfig::AwsSm {
                    secret_id: secret_id?,
                    region: region?,
                    json_key: json_key?,
                    ttl: ttl?,
                }
            }
            SourceType::AwsSsm => {
                let m = cx.map(
                    node,
                    &[
                        "type",
                        "name",
                        "region",
                        "with_decryption",
                        "json_key",
                        "ttl",
                    ],
                )?;
                let name = non_empty(&m, cx, "name");
                let region = region(&m, cx);
                let with_decryption = m.or(cx, "with_decryption", true);
                let (json_key, ttl) = (m.opt(cx, "json_key"), ttl(&m, cx));
                SecretSourceConfig::AwsSsm {
                    name: name?,
                    region: region?,
                    with_decryption: with_decryption?,
                    json_key: json_key?,
                    ttl: ttl?,
                }
            }
            SourceType::OnePassword => {
                let m = cx.map(
                    node,
                    &["type", "secret_ref", "token_env", "json_key", "ttl"],
                )?;
                let secret_ref = op_ref(&m, cx);
                let token_env = env_or(&m, cx, "token_env", "OP_SERVICE_ACCOUNT_TOKEN");
                let (json_key, ttl) = (m.opt(cx, "json_key"), ttl(&m, cx));
                SecretSourceConfig::OnePassword {
                    secret_ref: secret_ref?,
                    token_env: token_env?,
                    json_key: json_key?,
                    ttl: ttl?,
                }
            }
            SourceType::OnePasswordConnect => {
                let m = cx.map(
                    node,
                    &[
                        "type",
                        "secret_ref",
                        "host_env",
                        "token_env",
                        "json_key",
                        "ttl",
                    ],
                )?;
                let secret_ref = op_ref(&m, cx);
                let host_env = env_or(&m, cx, "host_env", "OP_CONNECT_HOST");
                let token_env = env_or(&m, cx, "token_env", "OP_CONNECT_TOKEN");
                let (json_key, ttl) = (m.opt(cx, "json_key"), ttl(&m, cx));
                SecretSourceConfig::OnePasswordConnect {
                    secret_ref: secret_ref?,
                    host_env: host_env?,
                    token_env: token_env?,
                    json_key: json_key?,
                    ttl: ttl?,
                }
            }
        })
    }
}
