//! `transforms[]`: the entry shape (`name` + `config`) and the policy
//! transforms (allowlist, header_allowlist, body_capture, annotate).
//! The others have their own files: secrets, credentials (gcp, aws), oauth,
//! hmac, judge, grpc.

use ipnet::IpNet;

use super::credentials::{AwsAuthConfig, GcpAuthConfig};
use super::decode::{str_with, suggest, Cx, Decode, Res};
use super::grpc::GrpcConfig;
use super::hmac::HmacSignConfig;
use super::judge::JudgeConfig;
use super::oauth::OAuthTokenConfig;
use super::secrets::SecretsConfig;
use super::values::HeaderMatcher;
use super::yaml::Node;
use crate::rules::{HostPattern, Rule, Scope};

/// One `transforms[]` entry: the transform named by `name`, with its `config`.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per config load; size does not matter
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

/// Names the spec's pages give transforms that are not their config names,
/// each with the transform meant and what it does: the Concepts page lists
/// "Header Capture", which is `annotate`.
const SPEC_NAMES: [(&str, &str, &str); 3] = [
    (
        "header_capture",
        "annotate",
        "which copies request header values into the audit record",
    ),
    (
        "host_allowlist",
        "allowlist",
        "which allows destination hosts, methods and paths and denies the rest",
    ),
    (
        "llm_judge",
        "judge",
        "which asks an LLM whether each request may go",
    ),
];

/// "unknown transform 'x'": with the transform meant when `name` is close to
/// a transform's name, or to a name the spec's pages use for one
/// ([`SPEC_NAMES`], said with what that transform does), and the valid names.
fn unknown_transform(name: &str) -> String {
    if let Some(m) = super::decode::odd_name("transform", name, &TRANSFORM_NAMES) {
        return format!("unknown {m}");
    }
    let valid = TRANSFORM_NAMES.join(", ");
    let names: Vec<&str> = TRANSFORM_NAMES
        .iter()
        .copied()
        .chain(SPEC_NAMES.iter().map(|(spec, _, _)| *spec))
        .collect();
    let Some(close) = suggest(name, &names) else {
        return format!("unknown transform '{name}' (expected one of: {valid})");
    };
    let meant = match SPEC_NAMES.iter().find(|(spec, _, _)| *spec == close) {
        Some((_, transform, what)) => format!("'{transform}' ({what})"),
        None => format!("'{close}'"),
    };
    format!("unknown transform '{name}', did you mean {meant}? (valid transforms: {valid})")
}

impl Decode for TransformConfig {
    /// A missing or null `config` is an empty one: transforms whose fields all
    /// have defaults (allowlist, secrets, header_allowlist, ...) accept it.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "config"])?;
        let name = m.req_with(cx, "name", |n, cx| {
            str_with(n, cx, |s| {
                TRANSFORM_NAMES
                    .iter()
                    .position(|t| *t == s)
                    .ok_or_else(|| unknown_transform(s))
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

/// An allowlist `domains` entry: a host pattern that is not an IP address.
/// The allowlist matches IP literals against `cidrs` (and `rules`, and a
/// bare `*`) only, so an address here would load as an entry that never
/// matches.
struct DomainPattern(HostPattern);

impl Decode for DomainPattern {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let p = Self::parse(node, cx)?;
        super::common::warn_missing_dot(&p.0, node, cx);
        super::common::warn_host_characters(node, &p.0.to_string(), cx);
        Ok(p)
    }
}

impl DomainPattern {
    fn parse(node: &Node, cx: &mut Cx) -> Res<Self> {
        super::decode::str_with(node, cx, |s| {
            let p: HostPattern = s
                .parse()
                .map_err(|e: crate::rules::RuleError| e.to_string())?;
            match &p {
                HostPattern::Exact(h) => match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => Err(format!(
                        "{s:?} is an IP address, which `domains` never matches; allow it in \
                         `cidrs` as \"{ip}/{}\"",
                        if ip.is_ipv4() { 32 } else { 128 }
                    )),
                    Err(_) => Ok(DomainPattern(p)),
                },
                _ => Ok(DomainPattern(p)),
            }
        })
    }
}

impl Decode for AllowlistConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["domains", "cidrs", "rules", "warn"])?;
        let (domains, cidrs, rules, warn) = (
            m.or_default::<Vec<DomainPattern>>(cx, "domains"),
            m.or_default(cx, "cidrs"),
            m.or_default(cx, "rules"),
            m.or(cx, "warn", false),
        );
        Ok(AllowlistConfig {
            domains: domains?.into_iter().map(|d| d.0).collect(),
            cidrs: cidrs?,
            rules: rules?,
            warn: warn?,
        })
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
        Ok(HeaderAllowlistConfig {
            headers: headers?,
            rules: rules?,
        })
    }
}

/// `body_capture`'s cap when none is given, or 0 (as the reference reads it).
const DEFAULT_CAPTURE_BYTES: u64 = 16_384;

/// `body_capture`: records request bodies in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCaptureConfig {
    /// Capture cap per request, at least 1 (default 16 KiB, also for a `0`).
    pub max_request_body_bytes: u64,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
}

impl Decode for BodyCaptureConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["max_request_body_bytes", "rules"])?;
        // 0 means the default, as the reference implementation reads it (the
        // spec gives no range), with a warning: not a capture of nothing, which
        // would record an empty, "truncated" body for every request. Negative
        // is refused: the reference reads that as the default too, but no one
        // writes -1 to mean 16384.
        let (max, rules) = (
            m.opt_with(cx, "max_request_body_bytes", |n, cx| {
                let v = super::decode::int(n, cx, 0, i64::MAX)?;
                if v == 0 {
                    cx.warn(
                        n.pos,
                        format!(
                            "0 means the default cap, {DEFAULT_CAPTURE_BYTES} bytes, not \
                             \"capture nothing\"; write {DEFAULT_CAPTURE_BYTES} (or leave the \
                             field out) to say so, or remove body_capture to record no bodies"
                        ),
                    );
                }
                Ok(v.unsigned_abs())
            }),
            m.or_default(cx, "rules"),
        );
        Ok(BodyCaptureConfig {
            max_request_body_bytes: max?.filter(|&v| v > 0).unwrap_or(DEFAULT_CAPTURE_BYTES),
            rules: rules?,
        })
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
        Ok(AnnotateConfig {
            annotations: m.or_default(cx, "annotations")?,
        })
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
        let (rules, headers) = (
            m.or_default(cx, "rules"),
            m.or_default::<Vec<HeaderName>>(cx, "headers"),
        );
        Ok(AnnotationGroup {
            rules: rules?,
            headers: headers?.into_iter().map(|h| h.0).collect(),
        })
    }
}
