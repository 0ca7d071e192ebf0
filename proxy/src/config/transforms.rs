//! `transforms[]`: the entry shape (`name` + `config`) and the policy
//! transforms (allowlist, header_allowlist, body_capture, annotate, grpc, judge).
//! Credential transforms live in `secrets.rs` and `credentials.rs`.

use std::path::PathBuf;

use ipnet::IpNet;
use url::Url;

use super::credentials::{AwsAuthConfig, GcpAuthConfig, HmacSignConfig, OAuthTokenConfig};
use super::decode::{int, one_of, str_with, unknown, Cx, Decode, Res};
use super::secrets::SecretsConfig;
use super::sections::secs;
use super::values::{HeaderMatcher, PositiveDuration};
use super::yaml::Node;
use crate::rules::{HostPattern, Rule, Scope};

/// One `transforms[]` entry: the transform named by `name`, with its `config`.
#[derive(Debug, Clone)]
pub enum TransformConfig {
    /// `allowlist`
    Allowlist(AllowlistConfig),
    /// `secrets`
    Secrets(SecretsConfig),
    /// `gcp_auth`
    GcpAuth(GcpAuthConfig),
    /// `oauth_token`
    OauthToken(OAuthTokenConfig),
    /// `aws_auth`
    AwsAuth(AwsAuthConfig),
    /// `hmac_sign`
    HmacSign(HmacSignConfig),
    /// `body_capture`
    BodyCapture(BodyCaptureConfig),
    /// `annotate`
    Annotate(AnnotateConfig),
    /// `grpc`
    Grpc(GrpcConfig),
    /// `judge`
    Judge(JudgeConfig),
    /// `header_allowlist`
    HeaderAllowlist(HeaderAllowlistConfig),
}

/// Transform names as written in config.
pub const TRANSFORM_NAMES: [&str; 11] = [
    "allowlist",
    "secrets",
    "gcp_auth",
    "oauth_token",
    "aws_auth",
    "hmac_sign",
    "body_capture",
    "annotate",
    "grpc",
    "judge",
    "header_allowlist",
];

impl TransformConfig {
    /// The transform's `name` as written in config.
    pub fn name(&self) -> &'static str {
        let i = match self {
            TransformConfig::Allowlist(_) => 0,
            TransformConfig::Secrets(_) => 1,
            TransformConfig::GcpAuth(_) => 2,
            TransformConfig::OauthToken(_) => 3,
            TransformConfig::AwsAuth(_) => 4,
            TransformConfig::HmacSign(_) => 5,
            TransformConfig::BodyCapture(_) => 6,
            TransformConfig::Annotate(_) => 7,
            TransformConfig::Grpc(_) => 8,
            TransformConfig::Judge(_) => 9,
            TransformConfig::HeaderAllowlist(_) => 10,
        };
        TRANSFORM_NAMES[i]
    }
}

impl Decode for TransformConfig {
    /// A missing or null `config` is an empty one: transforms whose fields all
    /// have defaults (allowlist, secrets, header_allowlist, ...) accept it.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "config"])?;
        let name = m.req_with(cx, "name", |n, cx| {
            str_with(n, cx, |s| {
                TRANSFORM_NAMES.iter().position(|t| *t == s).ok_or_else(|| {
                    let mut msg = unknown("transform", s, &TRANSFORM_NAMES);
                    if !msg.contains("expected one of") {
                        msg.push_str(&format!(" (valid transforms: {})", TRANSFORM_NAMES.join(", ")));
                    }
                    msg
                })
            })
        })?;
        let empty = Node::empty_map(m.key_pos("config").unwrap_or(m.pos));
        let config = m.node("config").unwrap_or(&empty);
        cx.key("config", |cx| {
            Ok(match name {
                0 => TransformConfig::Allowlist(Decode::decode(config, cx)?),
                1 => TransformConfig::Secrets(Decode::decode(config, cx)?),
                2 => TransformConfig::GcpAuth(Decode::decode(config, cx)?),
                3 => TransformConfig::OauthToken(Decode::decode(config, cx)?),
                4 => TransformConfig::AwsAuth(Decode::decode(config, cx)?),
                5 => TransformConfig::HmacSign(Decode::decode(config, cx)?),
                6 => TransformConfig::BodyCapture(Decode::decode(config, cx)?),
                7 => TransformConfig::Annotate(Decode::decode(config, cx)?),
                8 => TransformConfig::Grpc(Decode::decode(config, cx)?),
                9 => TransformConfig::Judge(Decode::decode(config, cx)?),
                _ => TransformConfig::HeaderAllowlist(Decode::decode(config, cx)?),
            })
        })
    }
}

/// `allowlist`: default-deny on destinations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowlistConfig {
    /// Host globs allowed with any method and path.
    pub domains: Vec<HostPattern>,
    /// CIDRs allowed with any method and path.
    pub cidrs: Vec<IpNet>,
    /// Rules with method and path filters.
    pub rules: Vec<Rule>,
    /// Log violations instead of blocking.
    pub warn: bool,
}

impl Decode for AllowlistConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["domains", "cidrs", "rules", "warn"])?;
        let (domains, cidrs, rules, warn) =
            (m.or_default(cx, "domains"), m.or_default(cx, "cidrs"), m.or_default(cx, "rules"), m.or(cx, "warn", false));
        Ok(AllowlistConfig { domains: domains?, cidrs: cidrs?, rules: rules?, warn: warn? })
    }
}

/// `header_allowlist`: strips request headers not listed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderAllowlistConfig {
    /// Literal names or `/regex/`es.
    pub headers: Vec<HeaderMatcher>,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
}

impl Decode for HeaderAllowlistConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["headers", "rules"])?;
        let (headers, rules) = (m.or_default(cx, "headers"), m.or_default(cx, "rules"));
        Ok(HeaderAllowlistConfig { headers: headers?, rules: rules? })
    }
}

/// `body_capture`: records request bodies in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCaptureConfig {
    /// Capture cap per request (default 16 KiB).
    pub max_request_body_bytes: u64,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
}

impl Decode for BodyCaptureConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["max_request_body_bytes", "rules"])?;
        let (max, rules) = (m.or(cx, "max_request_body_bytes", 16_384u64), m.or_default(cx, "rules"));
        Ok(BodyCaptureConfig { max_request_body_bytes: max?, rules: rules? })
    }
}

/// `annotate`: copies request header values into the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnotateConfig {
    /// Annotation groups.
    pub annotations: Vec<AnnotationGroup>,
}

/// One `annotate.annotations[]` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationGroup {
    /// Requests it applies to (empty: all).
    pub rules: Scope,
    /// Header names to capture.
    pub headers: Vec<String>,
}

impl Decode for AnnotateConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["annotations"])?;
        Ok(AnnotateConfig { annotations: m.or_default(cx, "annotations")? })
    }
}

struct HeaderName(String);

impl Decode for HeaderName {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        super::common::header_name(node, cx).map(HeaderName)
    }
}

impl Decode for AnnotationGroup {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["rules", "headers"])?;
        let (rules, headers) = (m.or_default(cx, "rules"), m.or_default::<Vec<HeaderName>>(cx, "headers"));
        Ok(AnnotationGroup { rules: rules?, headers: headers?.into_iter().map(|h| h.0).collect() })
    }
}

/// `grpc`: delegates to an external TransformService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Identifier for logs.
    pub name: String,
    /// Server address, `host:port` (or a URI with a scheme).
    pub target: String,
    /// Forward request bodies.
    pub send_request_body: bool,
    /// Forward response bodies.
    pub send_response_body: bool,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
    /// TLS to the server; `None` is plaintext (absent, or `enabled: false`).
    pub tls: Option<GrpcTlsConfig>,
}

/// `grpc.tls` when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTlsConfig {
    /// Custom CA; system roots when absent.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key for mTLS (set together).
    pub client: Option<GrpcClientCert>,
}

/// mTLS client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClientCert {
    /// `cert`
    pub cert: PathBuf,
    /// `key`
    pub key: PathBuf,
}

fn grpc_target(s: &str) -> Result<String, String> {
    let ok = s.contains("://")
        || s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok && !s.contains(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(format!("invalid gRPC target {s:?}: expected host:port such as \"localhost:9500\""))
    }
}

fn grpc_tls(node: &Node, cx: &mut Cx) -> Res<Option<GrpcTlsConfig>> {
    let m = cx.map(node, &["enabled", "ca_cert", "cert", "key"])?;
    let enabled = m.or(cx, "enabled", false);
    let ca_cert = m.opt::<PathBuf>(cx, "ca_cert");
    let (cert, key) = (m.opt::<PathBuf>(cx, "cert"), m.opt::<PathBuf>(cx, "key"));
    let client = match (cert?, key?) {
        (Some(cert), Some(key)) => Some(GrpcClientCert { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(cx.error(m.pos, "'cert' must be set together with 'key'")),
        (None, Some(_)) => return Err(cx.error(m.pos, "'key' must be set together with 'cert'")),
    };
    Ok(enabled?.then_some(GrpcTlsConfig { ca_cert: ca_cert?, client }))
}

impl Decode for GrpcConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "target", "send_request_body", "send_response_body", "rules", "tls"])?;
        let name = m.req(cx, "name");
        let target = m.req_with(cx, "target", |n, cx| str_with(n, cx, grpc_target));
        let send_req = m.or(cx, "send_request_body", false);
        let send_rsp = m.or(cx, "send_response_body", false);
        let rules = m.or_default(cx, "rules");
        let tls = m.opt_with(cx, "tls", grpc_tls);
        Ok(GrpcConfig {
            name: name?,
            target: target?,
            send_request_body: send_req?,
            send_response_body: send_rsp?,
            rules: rules?,
            tls: tls?.flatten(),
        })
    }
}

/// `judge`: an LLM that may deny matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeConfig {
    /// Instance name, unique across judges.
    pub name: String,
    /// The natural-language policy.
    pub prompt: String,
    /// Where it applies (at least one rule).
    pub rules: Scope,
    /// The LLM backend.
    pub provider: JudgeProvider,
    /// What a failed call does (default deny).
    pub fallback: JudgeFallback,
    /// Per-call timeout (default 8s).
    pub timeout: PositiveDuration,
    /// In-flight call cap (default 100, at least 1).
    pub max_concurrent: u32,
    /// Consecutive-failure breaker.
    pub circuit_breaker: CircuitBreakerConfig,
}

/// `judge.fallback`. There is deliberately no `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JudgeFallback {
    /// Reject with 403 (default).
    #[default]
    Deny,
    /// Continue with the next transform.
    Skip,
}

/// `judge.circuit_breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Failures in a row that open the breaker (default 5, at least 1).
    pub consecutive_failures: u32,
    /// How long it stays open (default 10s).
    pub cooldown: PositiveDuration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig { consecutive_failures: 5, cooldown: secs(10) }
    }
}

/// `judge.provider`, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgeProvider {
    /// Anthropic Messages API (base_url default `https://api.anthropic.com`).
    Anthropic(ProviderConfig),
    /// OpenAI Chat Completions (base_url default `https://api.openai.com`).
    OpenAi(ProviderConfig),
}

/// The fields both providers share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Model id.
    pub model: String,
    /// Variable holding the API key.
    pub api_key_env: String,
    /// API base URL.
    pub base_url: Url,
    /// Response token cap (default 256).
    pub max_tokens: u32,
}

/// An http(s) URL with a host.
pub(crate) fn http_url(node: &Node, cx: &mut Cx) -> Res<Url> {
    str_with(node, cx, |s| match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u),
        _ => Err(format!("invalid URL {s:?}: expected http(s)://host[/path]")),
    })
}

impl Decode for JudgeProvider {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["type", "model", "api_key_env", "base_url", "max_tokens"])?;
        let kind = m.req_with(cx, "type", |n, cx| one_of(n, cx, "provider type", &[("anthropic", true), ("openai", false)]));
        let model = m.req(cx, "model");
        let api_key_env = m.req(cx, "api_key_env");
        let base_url = m.opt_with(cx, "base_url", http_url);
        let max_tokens = m.opt_with(cx, "max_tokens", |n, cx| int(n, cx, 1, i64::from(u32::MAX)));
        let anthropic = kind?;
        let default_url = if anthropic { "https://api.anthropic.com" } else { "https://api.openai.com" };
        let cfg = ProviderConfig {
            model: model?,
            api_key_env: api_key_env?,
            base_url: base_url?.unwrap_or_else(|| Url::parse(default_url).expect("constant URL is valid")),
            max_tokens: max_tokens?.map_or(256, |v| u32::try_from(v).unwrap_or(u32::MAX)),
        };
        Ok(if anthropic { JudgeProvider::Anthropic(cfg) } else { JudgeProvider::OpenAi(cfg) })
    }
}

fn positive_u32(node: &Node, cx: &mut Cx) -> Res<u32> {
    int(node, cx, 1, i64::from(u32::MAX)).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

impl Decode for CircuitBreakerConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["consecutive_failures", "cooldown"])?;
        let failures = m.opt_with(cx, "consecutive_failures", positive_u32);
        let cooldown = m.or(cx, "cooldown", secs(10));
        Ok(CircuitBreakerConfig { consecutive_failures: failures?.unwrap_or(5), cooldown: cooldown? })
    }
}

impl Decode for JudgeConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &["name", "prompt", "rules", "provider", "fallback", "timeout", "max_concurrent", "circuit_breaker"],
        )?;
        let name = m.req_with(cx, "name", |n, cx| {
            str_with(n, cx, |s| if s.trim().is_empty() { Err("name must not be empty".into()) } else { Ok(s.to_string()) })
        });
        let prompt = m.req_with(cx, "prompt", |n, cx| {
            str_with(n, cx, |s| if s.trim().is_empty() { Err("prompt must not be empty".into()) } else { Ok(s.to_string()) })
        });
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let provider = m.req(cx, "provider");
        let fallbacks = [("deny", JudgeFallback::Deny), ("skip", JudgeFallback::Skip)];
        let fallback = m.opt_with(cx, "fallback", |n, cx| {
            if n.scalar() == Some("allow") {
                return Err(cx.error(n.pos, "invalid judge fallback 'allow' (expected one of: deny, skip): a failing judge cannot approve a request"));
            }
            one_of(n, cx, "judge fallback", &fallbacks)
        });
        let timeout = m.or(cx, "timeout", secs(8));
        let max_concurrent = m.opt_with(cx, "max_concurrent", positive_u32);
        let circuit_breaker = m.or_default(cx, "circuit_breaker");
        Ok(JudgeConfig {
            name: name?,
            prompt: prompt?,
            rules: Scope(rules?),
            provider: provider?,
            fallback: fallback?.unwrap_or_default(),
            timeout: timeout?,
            max_concurrent: max_concurrent?.unwrap_or(100),
            circuit_breaker: circuit_breaker?,
        })
    }
}
