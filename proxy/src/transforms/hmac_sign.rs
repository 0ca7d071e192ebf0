//! The `hmac_sign` transform: signs matching requests with an HMAC over a
//! templated message and sets the headers the upstream expects.
//!
//! Per matching request, in order (spec: HMAC Request Signing):
//! 1. **Body integrity.** The body is buffered (`wants_request_body`). With
//!    a `Content-Length`, an empty body where one was declared is refused
//!    (400 `body_missing`) and a length that differs from the declared one
//!    (413 `body_truncated`); without one, a request that has a body
//!    (chunked on HTTP/1.1, or an HTTP/2 body without a length) is refused
//!    (400 `chunked_body_not_allowed`) unless `allow_chunked_body`, which
//!    signs it as buffered and logs a warning.
//! 2. **Credentials**, each its own secret source; any error fails the
//!    request (502 `credential_unavailable`).
//! 3. **Timestamp** in the configured format, the same for the message and
//!    the headers.
//! 4. **Signature**: the message template rendered, the key (`secret`)
//!    decoded (500 `key_decode_failed`), HMAC-SHA256/512/1 with aws-lc-rs
//!    (the process's one crypto library), base64 or hex.
//! 5. **Headers** rendered and set in order, replacing any the client sent,
//!    spelled on the HTTP/1.1 wire as configured.
//!
//! `.Body` is the body's bytes, as a Go string is: a binary body (gzip,
//! protobuf, an upload) is signed over exactly the bytes the upstream gets.
//!
//! **What comes back.** Each credential a header template references
//! (`{{.Credentials.NAME}}`, the key `secret` included when a header carries
//! it) is noted ([`Flow::note_secret_value`]) once the headers are set: the
//! response's headers and, unless `scrub_response_bodies: false`, its body
//! are scrubbed of its value ([`crate::scrub_response`]), so an upstream
//! that echoes the request does not hand the workload an API key or
//! passphrase. The signature is bound to this request (its time, method,
//! path and body) and is not noted; a credential only the message uses
//! never leaves the proxy.
//!
//! Audit: `injected: ["header:NAME", ...]` on success; on a refusal
//! `rejected` (the reason) and the context: `content_length`,
//! `buffered_length`, `credential`, `header`, `error`; in the response
//! trace (when `hmac_sign` is the first transform that put a value in the
//! request), the scrub's `response_redacted`, `response_body_redacted` and
//! `response_body_decoded`. No key, credential or signature ever reaches
//! the record or an error message.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::body::Body;
use crate::config::{HmacAlgorithm, HmacSignConfig, KeyEncoding, OutputEncoding, TimestampFormat};
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::secrets::{Secret, SecretValue, Sources};
use crate::template::{Template, TemplateContext};
use crate::transforms::{signed_body, wire_case};

/// The credential that holds the HMAC key.
const KEY_CREDENTIAL: &str = "secret";

/// Errors building the transform from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A header name that is not a valid HTTP header name.
    #[error("hmac_sign.headers[{index}].name: invalid header name {name:?}")]
    HeaderName {
        /// Entry index.
        index: usize,
        /// The name as written.
        name: String,
    },
}

impl BuildError {
    /// The field at fault, within the transform's `config`.
    pub fn field(&self) -> String {
        match self {
            BuildError::HeaderName { index, .. } => format!("headers[{index}].name"),
        }
    }
}

/// The built transform.
pub struct HmacSign {
    format: TimestampFormat,
    algorithm: hmac::Algorithm,
    key_encoding: KeyEncoding,
    output_encoding: OutputEncoding,
    message: Template,
    message_uses_body: bool,
    credentials: Vec<Credential>,
    headers: Vec<Header>,
    allow_chunked_body: bool,
    rules: Scope,
    scrub_response_bodies: bool,
}

struct Credential {
    name: String,
    secret: Secret,
    /// A header template references it: its value goes into the request,
    /// and the response is scrubbed of it.
    in_headers: bool,
}

struct Header {
    name: HeaderName,
    /// As written in the config: the audit location and the wire casing.
    written: String,
    value: Template,
}

/// Builds the transform; credential sources come from (and are shared through) `sources`.
pub fn build(cfg: &HmacSignConfig, sources: &Sources) -> Result<Arc<dyn Transform>, BuildError> {
    Ok(Arc::new(HmacSign::new(cfg, sources)?))
}

impl HmacSign {
    /// The transform, concretely typed (tests).
    pub fn new(cfg: &HmacSignConfig, sources: &Sources) -> Result<Self, BuildError> {
        let headers = cfg
            .headers
            .iter()
            .enumerate()
            .map(|(index, h)| {
                Ok(Header {
                    name: HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                        BuildError::HeaderName {
                            index,
                            name: h.name.clone(),
                        }
                    })?,
                    written: h.name.clone(),
                    value: h.value.clone(),
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let message = cfg.signature.message.clone();
        Ok(HmacSign {
            format: cfg.timestamp.format,
            algorithm: match cfg.signature.algorithm {
                HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
                HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
                HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            },
            key_encoding: cfg.signature.key_encoding,
            output_encoding: cfg.signature.output_encoding,
            message_uses_body: message
                .fields()
                .iter()
                .any(|f| f.first().map(String::as_str) == Some("Body")),
            message,
            credentials: cfg
                .credentials
                .iter()
                .map(|(name, source)| Credential {
                    in_headers: headers.iter().any(|h| references(&h.value, name)),
                    name: name.clone(),
                    secret: sources.secret(source),
                })
                .collect(),
            headers,
            allow_chunked_body: cfg.allow_chunked_body,
            rules: cfg.rules.clone(),
            scrub_response_bodies: cfg.scrub_response_bodies,
        })
    }

    /// Whether this request is one to sign. A host-only check (a tunnel's
    /// target, an `sni-only` connection) has no method, path or body: there
    /// is nothing to sign, and the inner requests are checked one by one.
    fn applies(&self, cx: &Flow) -> bool {
        !cx.method.is_empty() && self.rules.applies(&cx.target())
    }
}

/// Whether `template` reads `.Credentials.<name>`.
fn references(template: &Template, name: &str) -> bool {
    template
        .fields()
        .iter()
        .any(|path| matches!(path, [map, key] if map == "Credentials" && key == name))
}

/// A failure that fails the request closed, annotated like a refusal.
fn failure(
    cx: &mut Flow,
    status: StatusCode,
    reason: &'static str,
    detail: String,
) -> TransformError {
    cx.annotate("rejected", reason);
    cx.annotate("error", detail.clone());
    TransformError {
        status,
        reason,
        detail,
    }
}

/// `now` in `format`.
fn timestamp(format: TimestampFormat, now: time::OffsetDateTime) -> String {
    match format {
        TimestampFormat::UnixSeconds => now.unix_timestamp().to_string(),
        TimestampFormat::UnixMillis => (now.unix_timestamp_nanos() / 1_000_000).to_string(),
        TimestampFormat::UnixNanos => now.unix_timestamp_nanos().to_string(),
        TimestampFormat::Rfc3339 => now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string()),
    }
}

/// The HMAC key from the `secret` credential, decoded.
fn decode_key(encoding: KeyEncoding, text: &str) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let text = text.trim();
    let key = match encoding {
        KeyEncoding::Raw => text.as_bytes().to_vec(),
        KeyEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "the key is not valid base64")?,
        KeyEncoding::Hex => hex::decode(text).map_err(|_| "the key is not valid hex")?,
    };
    if key.is_empty() {
        return Err("the key is empty");
    }
    Ok(Zeroizing::new(key))
}

/// HMAC of `message` under `key`, encoded.
fn sign(algorithm: hmac::Algorithm, key: &[u8], message: &[u8], out: OutputEncoding) -> String {
    let tag = hmac::sign(&hmac::Key::new(algorithm, key), message);
    match out {
        OutputEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        OutputEncoding::Hex => hex::encode(tag.as_ref()),
    }
}

/// The request fields of the message template.
fn message_fields(req: &Request<Body>, cx: &Flow) -> [(&'static str, String); 5] {
    let uri = req.uri();
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    let query = uri.query().unwrap_or("");
    let with_query = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    [
        ("Method", req.method().as_str().to_string()),
        ("Path", path.to_string()),
        ("PathWithQuery", with_query),
        ("Query", query.to_string()),
        // The destination host as the exchange normalised it: no port.
        ("Host", cx.dest.host.clone()),
    ]
}

#[async_trait]
impl Transform for HmacSign {
    fn name(&self) -> &str {
        "hmac_sign"
    }

    fn wants_request_body(&self, cx: &Flow, _req: &http::request::Parts) -> bool {
        self.applies(cx)
    }

    fn signs_request_body(&self, cx: &Flow, req: &http::request::Parts) -> bool {
        self.wants_request_body(cx, req)
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if !self.applies(cx) {
            return Ok(Verdict::Continue);
        }
        // An earlier credential transform set one of this signature's
        // headers: it wins, and this request is not signed (a signature
        // with some of its headers missing would be refused upstream).
        let taken: Vec<String> = self
            .headers
            .iter()
            .filter(|h| cx.is_credential_header(&h.name))
            .map(|h| format!("header:{}", h.written))
            .collect();
        if !taken.is_empty() {
            for location in taken {
                cx.note_already_set(location);
            }
            return Ok(Verdict::Continue);
        }
        let body = match signed_body::checked(req, cx, self.allow_chunked_body, self.name()) {
            Ok(b) => b,
            Err(refusal) => return Ok(Verdict::Reject(refusal)),
        };
        let mut creds: Vec<(String, Zeroizing<String>)> =
            Vec::with_capacity(self.credentials.len());
        // The values that go into a header, noted once the headers are set.
        let mut sent: Vec<SecretValue> = Vec::new();
        for c in &self.credentials {
            match c.secret.get().await {
                Ok(v) => {
                    creds.push((c.name.clone(), Zeroizing::new(v.expose().to_string())));
                    if c.in_headers {
                        sent.push(v);
                    }
                }
                Err(e) => {
                    cx.annotate("credential", c.name.as_str());
                    return Err(failure(
                        cx,
                        StatusCode::BAD_GATEWAY,
                        "credential_unavailable",
                        format!("credential {} ({}): {e}", c.name, c.secret.name()),
                    ));
                }
            }
        }
        let ts = timestamp(self.format, time::OffsetDateTime::now_utc());
        let cred_map = || creds.iter().map(|(k, v)| (k.clone(), v.to_string()));

        let mut ctx = TemplateContext::new();
        ctx.set("Timestamp", ts.as_str());
        for (field, value) in message_fields(req, cx) {
            ctx.set(field, value);
        }
        // `.Body` is the body's bytes, binary or not, as a Go string is.
        ctx.set_bytes("Body", if self.message_uses_body { &body } else { &[] });
        ctx.set_map("Credentials", cred_map());
        let message = self.message.render_bytes(&ctx).map_err(|e| {
            failure(
                cx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "message_template_failed",
                format!("signature.message: {e}"),
            )
        })?;

        let key = creds
            .iter()
            .find(|(k, _)| k == KEY_CREDENTIAL)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let key = decode_key(self.key_encoding, key).map_err(|why| {
            failure(
                cx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "key_decode_failed",
                format!("credential {KEY_CREDENTIAL}: {why}"),
            )
        })?;
        let signature = Zeroizing::new(sign(self.algorithm, &key, &message, self.output_encoding));

        let mut hctx = TemplateContext::new();
        hctx.set("Timestamp", ts.as_str());
        hctx.set("Signature", signature.as_str());
        hctx.set_map("Credentials", cred_map());
        let mut values = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            let rendered = h.value.render(&hctx).map(Zeroizing::new);
            let value = rendered.map_err(|e| e.to_string()).and_then(|v| {
                HeaderValue::from_str(&v)
                    .map_err(|_| "the value is not a valid header value".to_string())
            });
            match value {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    values.push(v);
                }
                Err(why) => {
                    cx.annotate("header", h.written.as_str());
                    return Err(failure(
                        cx,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "header_template_failed",
                        format!("headers {}: {why}", h.written),
                    ));
                }
            }
        }
        let mut injected = Vec::with_capacity(self.headers.len());
        for (h, v) in self.headers.iter().zip(values) {
            req.headers_mut().remove(&h.name);
            req.headers_mut().insert(h.name.clone(), v);
            cx.mark_credential_header(&h.name);
            injected.push(Value::from(format!("header:{}", h.written)));
        }
        cx.annotate("injected", injected);
        for value in &sent {
            cx.note_secret_value(value, "hmac_sign", self.scrub_response_bodies);
        }
        let wire: Vec<String> = self.headers.iter().map(|h| h.written.clone()).collect();
        wire_case::set_header_case(req, &wire).await;
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests;
