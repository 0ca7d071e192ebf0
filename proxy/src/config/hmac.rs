//! The `hmac_sign` transform: HMAC signatures over a templated message. The
//! message and header templates are checked at load against the fields they
//! may use, including the configured credential names.

use super::common::{header_name, header_template, template};
use super::decode::{entries, one_of, Cx, Decode, Failed, Res};
use super::sources::SecretSourceConfig;
use super::yaml::{Kind, Node};
use crate::rules::{Rule, Scope};
use crate::template::Template;

/// `hmac_sign`: HMAC signatures over a templated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSignConfig {
    /// `timestamp:`
    pub timestamp: HmacTimestamp,
    /// `signature:`
    pub signature: HmacSignature,
    /// Credential name to source, in order; always contains `secret` (the key).
    pub credentials: Vec<(String, SecretSourceConfig)>,
    /// Headers to set, in order.
    pub headers: Vec<HmacHeader>,
    /// Sign chunked bodies.
    pub allow_chunked_body: bool,
    /// Where it applies (at least one rule).
    pub rules: Scope,
    /// `scrub_response_bodies` (our addition; default true): mask, in the
    /// response body, the credentials this transform put in the request's
    /// headers, as the response headers always are.
    pub scrub_response_bodies: bool,
}

/// `timestamp:`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacTimestamp {
    /// The format.
    pub format: TimestampFormat,
}

/// `timestamp.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `unix_seconds`
    UnixSeconds,
    /// `unix_millis`
    UnixMillis,
    /// `unix_nanos`
    UnixNanos,
    /// `rfc3339`
    Rfc3339,
}

/// `signature:`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSignature {
    /// Hash.
    pub algorithm: HmacAlgorithm,
    /// How the key is decoded before use.
    pub key_encoding: KeyEncoding,
    /// How the signature is encoded.
    pub output_encoding: OutputEncoding,
    /// The signed message template.
    pub message: Template,
}

/// `signature.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// `sha256`
    Sha256,
    /// `sha512`
    Sha512,
    /// `sha1`
    Sha1,
}

/// `signature.key_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    /// `raw`
    Raw,
    /// `base64`
    Base64,
    /// `hex`
    Hex,
}

/// `signature.output_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEncoding {
    /// `base64`
    Base64,
    /// `hex`
    Hex,
}

/// One `headers[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacHeader {
    /// Header name as written.
    pub name: String,
    /// Value template over `.Timestamp`, `.Signature`, `.Credentials.<name>`.
    pub value: Template,
}

/// Fields of the message template; `Credentials` is checked against the credential names.
pub const HMAC_MESSAGE_FIELDS: [&str; 8] = [
    "Timestamp",
    "Method",
    "Path",
    "PathWithQuery",
    "Query",
    "Host",
    "Body",
    "Credentials",
];
/// Fields of header value templates.
pub const HMAC_HEADER_FIELDS: [&str; 3] = ["Timestamp", "Signature", "Credentials"];

impl Decode for HmacSignConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "timestamp",
                "signature",
                "credentials",
                "headers",
                "allow_chunked_body",
                "rules",
                "scrub_response_bodies",
            ],
        )?;
        let credentials = m.req_with(cx, "credentials", |n, cx| {
            let list = entries::<SecretSourceConfig>(n, cx)?;
            if !list.iter().any(|(k, _)| k == "secret") {
                return Err(cx.error(n.pos, "missing credential 'secret' (the HMAC key)"));
            }
            Ok(list)
        });
        // Templates are checked against the credential names; if those failed, only the fixed fields.
        let names: Option<Vec<&str>> = credentials
            .as_ref()
            .ok()
            .map(|c| c.iter().map(|(k, _)| k.as_str()).collect());
        let names = names.as_deref();
        let timestamp = m.req_with(cx, "timestamp", |n, cx| {
            let t = cx.map(n, &["format"])?;
            let formats = [
                ("unix_seconds", TimestampFormat::UnixSeconds),
                ("unix_millis", TimestampFormat::UnixMillis),
                ("unix_nanos", TimestampFormat::UnixNanos),
                ("rfc3339", TimestampFormat::Rfc3339),
            ];
            Ok(HmacTimestamp {
                format: t.req_with(cx, "format", |n, cx| {
                    one_of(n, cx, "timestamp format", &formats)
                })?,
            })
        });
        let signature = m.req_with(cx, "signature", |n, cx| {
            let s = cx.map(
                n,
                &["algorithm", "key_encoding", "output_encoding", "message"],
            )?;
            let algos = [
                ("sha256", HmacAlgorithm::Sha256),
                ("sha512", HmacAlgorithm::Sha512),
                ("sha1", HmacAlgorithm::Sha1),
            ];
            let keys = [
                ("raw", KeyEncoding::Raw),
                ("base64", KeyEncoding::Base64),
                ("hex", KeyEncoding::Hex),
            ];
            let outs = [
                ("base64", OutputEncoding::Base64),
                ("hex", OutputEncoding::Hex),
            ];
            let algorithm = s.req_with(cx, "algorithm", |n, cx| one_of(n, cx, "algorithm", &algos));
            let key_encoding = s.req_with(cx, "key_encoding", |n, cx| {
                one_of(n, cx, "key encoding", &keys)
            });
            let output_encoding = s.req_with(cx, "output_encoding", |n, cx| {
                one_of(n, cx, "output encoding", &outs)
            });
            let message = s.req_with(cx, "message", |n, cx| {
                template(n, cx, &HMAC_MESSAGE_FIELDS, names)
            });
            Ok(HmacSignature {
                algorithm: algorithm?,
                key_encoding: key_encoding?,
                output_encoding: output_encoding?,
                message: message?,
            })
        });
        let headers = m.req_with(cx, "headers", |n, cx| hmac_headers(n, cx, names));
        let chunked = m.or(cx, "allow_chunked_body", false);
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let scrub_response_bodies = m.or(cx, "scrub_response_bodies", true);
        Ok(HmacSignConfig {
            timestamp: timestamp?,
            signature: signature?,
            credentials: credentials?,
            headers: headers?,
            allow_chunked_body: chunked?,
            rules: Scope(rules?),
            scrub_response_bodies: scrub_response_bodies?,
        })
    }
}

/// `headers[]`: at least one, each value template checked against the credential names.
fn hmac_headers(node: &Node, cx: &mut Cx, names: Option<&[&str]>) -> Res<Vec<HmacHeader>> {
    let Kind::Seq(items) = &node.kind else {
        return Err(cx.error(
            node.pos,
            format!("expected a list, found {}", node.type_name()),
        ));
    };
    if items.is_empty() {
        return Err(cx.error(node.pos, "at least one header is required"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut failed = false;
    for (i, item) in items.iter().enumerate() {
        let header = cx.index(i, |cx| {
            let h = cx.map(item, &["name", "value"])?;
            let name = h.req_with(cx, "name", header_name);
            let value = h.req_with(cx, "value", |n, cx| {
                header_template(n, cx, &HMAC_HEADER_FIELDS, names)
            });
            Ok(HmacHeader {
                name: name?,
                value: value?,
            })
        });
        match header {
            Ok(h) => out.push(h),
            Err(Failed) => failed = true,
        }
    }
    if failed {
        Err(Failed)
    } else {
        Ok(out)
    }
}
