//! The `aws_auth` transform: re-signs the workload's AWS SigV4 requests
//! with the real credentials (spec: AWS Request Signing).
//!
//! The workload's SDK signs with placeholder keys. Per matching request:
//! 1. **Scope.** The credential scope (`KEY/DATE/REGION/SERVICE/aws4_request`)
//!    comes from the `Authorization` header or, for a pre-signed URL, the
//!    `X-Amz-Credential` query parameter; neither is `missing_sigv4` (400).
//! 2. **Gating.** `allowed_regions` / `allowed_services` refuse other scopes
//!    (403 `region_not_allowed` / `service_not_allowed`) before any
//!    credential is touched.
//! 3. **Credentials** from two secret sources (plus an optional session
//!    token), or from the AWS default chain (`credentials_provider:
//!    workload_identity`); a failure is `credential_unavailable` (502).
//! 4. **Body.** Hashed from the buffered body, checked like `hmac_sign`'s
//!    (`transforms::signed_body`), or `UNSIGNED-PAYLOAD` with
//!    `unsigned_payload`. A streaming upload (`x-amz-content-sha256:
//!    STREAMING-*`, S3's aws-chunked bodies) is never buffered: its literal is
//!    the payload hash, and a signed one's chunk signatures are made again as
//!    the body streams (`streaming`, `chunked`).
//! 5. **Re-signing** with `aws-sigv4`: the placeholder `Authorization`,
//!    `X-Amz-Date`, `X-Amz-Security-Token` and `X-Amz-Content-Sha256` (and a
//!    pre-signed URL's `X-Amz-*` query parameters) are dropped, and the request
//!    is signed for the scope's region and service, now, over the headers the
//!    workload signed (its `SignedHeaders`) and `host`. S3 gets its own rules
//!    (single URI encoding, no path normalisation). An expired pre-signed
//!    URL is refused (403 `presigned_url_expired`), as AWS would refuse it.
//!
//! **What comes back.** The session token, when the credentials have one
//! (a static `session_token` or temporary credentials from the default
//! chain), goes into the request as `X-Amz-Security-Token` and is noted
//! ([`Flow::note_secret_value`]): the response's headers and, unless
//! `scrub_response_bodies: false`, its body are scrubbed of it
//! ([`crate::scrub_response`]), so an upstream that echoes the request does
//! not hand the workload a credential part it could use elsewhere. The
//! signature is bound to this request and the access key id is an
//! identifier; neither is noted, and the secret access key never leaves the
//! proxy.
//!
//! Audit: `injected` (the headers set), `service`, `region`; on a refusal
//! `rejected` and its context; in the response trace (when `aws_auth` is the
//! first transform that put a value in the request), the scrub's
//! `response_redacted`, `response_body_redacted` and
//! `response_body_decoded`. No key, token or signature is recorded.

mod chunked;
mod presign;
mod streaming;

use std::time::SystemTime;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::header::{HeaderName, AUTHORIZATION, HOST};
use http::{Request, StatusCode, Uri};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::body::Body;
use crate::config::{AwsAuthConfig, AwsCredentials};
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::secrets::aws::AwsShared;
use crate::secrets::{Secret, SecretValue, Sources};
use crate::transforms::signed_body::{self, refuse};
use presign::without_presign;
use streaming::Payload;

/// The SigV4 algorithm this transform re-signs.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Headers of the placeholder signature, replaced by the new one.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// The built transform.
pub struct AwsAuth {
    credentials: Creds,
    allowed_regions: Vec<String>,
    allowed_services: Vec<String>,
    unsigned_payload: bool,
    allow_chunked_body: bool,
    rules: Scope,
    scrub_response_bodies: bool,
}

enum Creds {
    Static {
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    Chain(AwsShared),
}

/// Builds the transform; credential sources come from (and are shared through) `sources`.
pub fn build(cfg: &AwsAuthConfig, sources: &Sources) -> std::sync::Arc<dyn Transform> {
    std::sync::Arc::new(AwsAuth::new(cfg, sources))
}

/// The workload's signature: its scope and the headers it signed.
#[derive(Debug, PartialEq, Eq)]
struct Inbound {
    region: String,
    service: String,
    /// Lowercase names from `SignedHeaders`.
    signed_headers: Vec<String>,
    /// True when it came from a pre-signed URL's query.
    presigned: bool,
}

impl AwsAuth {
    /// The transform, concretely typed (tests).
    pub fn new(cfg: &AwsAuthConfig, sources: &Sources) -> Self {
        let credentials = match &cfg.credentials {
            AwsCredentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Creds::Static {
                access_key_id: sources.secret(access_key_id),
                secret_access_key: sources.secret(secret_access_key),
                session_token: session_token.as_ref().map(|t| sources.secret(t)),
            },
            AwsCredentials::WorkloadIdentity { region } => {
                Creds::Chain(sources.aws_chain(region.clone()))
            }
        };
        AwsAuth {
            credentials,
            allowed_regions: cfg.allowed_regions.clone(),
            allowed_services: cfg.allowed_services.clone(),
            unsigned_payload: cfg.unsigned_payload,
            allow_chunked_body: cfg.allow_chunked_body,
            rules: cfg.rules.clone(),
            scrub_response_bodies: cfg.scrub_response_bodies,
        }
    }

    /// A request to re-sign: one with a method (not a host-only check of a
    /// tunnel target or an sni-only connection) that the rules select.
    fn applies(&self, cx: &Flow) -> bool {
        !cx.method.is_empty() && self.rules.applies(&cx.target())
    }

    async fn credentials(&self, cx: &mut Flow) -> Result<Credentials, TransformError> {
        let unavailable = |cx: &mut Flow, which: &str, detail: String| {
            cx.annotate("credential", which);
            cx.annotate("rejected", "credential_unavailable");
            TransformError {
                status: StatusCode::BAD_GATEWAY,
                reason: "credential_unavailable",
                detail,
            }
        };
        match &self.credentials {
            Creds::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut values = Vec::with_capacity(3);
                let named = [
                    Some(("access_key_id", access_key_id)),
                    Some(("secret_access_key", secret_access_key)),
                    session_token.as_ref().map(|t| ("session_token", t)),
                ];
                for (which, secret) in named.into_iter().flatten() {
                    match secret.get().await {
                        Ok(v) => values.push(v),
                        Err(e) => {
                            let detail = format!("{which} ({}): {e}", secret.name());
                            return Err(unavailable(cx, which, detail));
                        }
                    }
                }
                let token = values.get(2).map(|t| t.expose().to_string());
                Ok(Credentials::new(
                    values[0].expose(),
                    values[1].expose(),
                    token,
                    None,
                    "iron-proxy",
                ))
            }
            Creds::Chain(chain) => chain
                .credentials("aws_auth")
                .await
                .map_err(|e| unavailable(cx, "credentials_provider", e.to_string())),
        }
    }
}

/// The SigV4 scope and signed headers the workload's request carries.
fn inbound(req: &Request<Body>) -> Result<Inbound, &'static str> {
    if let Some(auth) = req.headers().get(AUTHORIZATION) {
        let auth = auth.to_str().map_err(|_| "Authorization is not text")?;
        if let Some(rest) = auth.strip_prefix(ALGORITHM) {
            let mut credential = None;
            let mut signed = None;
            for part in rest.split(',') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("Credential=") {
                    credential = Some(v);
                } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                    signed = Some(v);
                }
            }
            let credential = credential.ok_or("the Authorization header has no Credential")?;
            return scope(credential, signed.unwrap_or("host"), false);
        }
        if auth.starts_with("AWS4-ECDSA-P256-SHA256") {
            return Err("SigV4a (AWS4-ECDSA-P256-SHA256) is not supported, only SigV4");
        }
    }
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match param("X-Amz-Credential") {
        Some(credential) => {
            let signed = param("X-Amz-SignedHeaders").unwrap_or_else(|| "host".into());
            scope(&credential, &signed, true)
        }
        None => Err("no SigV4 Authorization header and no X-Amz-Credential query parameter"),
    }
}

/// Splits `KEY/DATE/REGION/SERVICE/aws4_request`. The region and service go
/// back out in the new signature's `Authorization` header, so they must be
/// text a header carries: a pre-signed URL's `X-Amz-Credential` is
/// percent-decoded and could hold a line break or any byte (`%0A`), which
/// the signer cannot make into a header value (it panicked).
fn scope(credential: &str, signed: &str, presigned: bool) -> Result<Inbound, &'static str> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [_key, _date, region, service, "aws4_request"]
            if !region.is_empty() && !service.is_empty() =>
        {
            if !printable(region) {
                return Err("the SigV4 credential scope's region is not printable ASCII");
            }
            if !printable(service) {
                return Err("the SigV4 credential scope's service is not printable ASCII");
            }
            Ok(Inbound {
                region: region.to_string(),
                service: service.to_string(),
                signed_headers: signed
                    .split(';')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
                presigned,
            })
        }
        _ => Err("the SigV4 credential scope is not KEY/DATE/REGION/SERVICE/aws4_request"),
    }
}

/// The absolute URL the upstream will see: scheme and authority from the
/// destination (the default port left out, as hyper and AWS do), path and
/// query from the request.
fn signing_url(cx: &Flow, path_and_query: &str) -> String {
    let scheme = if cx.dest.tls { "https" } else { "http" };
    let default = if cx.dest.tls { 443 } else { 80 };
    let host = if cx.dest.host.contains(':') {
        format!("[{}]", cx.dest.host)
    } else {
        cx.dest.host.clone()
    };
    if cx.dest.port == default {
        format!("{scheme}://{host}{path_and_query}")
    } else {
        format!("{scheme}://{host}:{}{path_and_query}", cx.dest.port)
    }
}

/// A streaming upload's `x-amz-decoded-content-length` (the object's size,
/// which the chunks must add up to), when it has one.
fn decoded_length(req: &Request<Body>, payload: Payload) -> Result<Option<u64>, &'static str> {
    if !payload.is_streaming() {
        return Ok(None);
    }
    match req.headers().get("x-amz-decoded-content-length") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or("x-amz-decoded-content-length is not a number"),
    }
}

fn failed(cx: &mut Flow, detail: String) -> TransformError {
    cx.annotate("rejected", "signing_failed");
    cx.annotate("error", detail.clone());
    TransformError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "signing_failed",
        detail,
    }
}

#[async_trait]
impl Transform for AwsAuth {
    fn name(&self) -> &str {
        "aws_auth"
    }

    /// The whole body, to hash it: not with `unsigned_payload`, nor for a
    /// streaming upload (`STREAMING-*`), whose body streams through.
    fn wants_request_body(&self, cx: &Flow, req: &http::request::Parts) -> bool {
        !self.unsigned_payload
            && self.applies(cx)
            && Payload::of(&req.headers) == Ok(Payload::Plain)
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
        // An earlier credential transform set Authorization: it wins, and
        // this request is not re-signed.
        if cx.is_credential_header(&http::header::AUTHORIZATION) {
            cx.note_already_set("header:Authorization".into());
            return Ok(Verdict::Continue);
        }
        let found = match inbound(req) {
            Ok(f) => f,
            Err(why) => {
                return Ok(Verdict::Reject(refuse(
                    cx,
                    StatusCode::BAD_REQUEST,
                    "missing_sigv4",
                    format!("aws_auth needs a SigV4-signed request: {why}"),
                )))
            }
        };
        cx.annotate("region", found.region.as_str());
        cx.annotate("service", found.service.as_str());
        if !self.allowed_regions.is_empty() && !self.allowed_regions.contains(&found.region) {
            let msg = format!("aws_auth does not sign for region {}", found.region);
            return Ok(Verdict::Reject(refuse(
                cx,
                StatusCode::FORBIDDEN,
                "region_not_allowed",
                msg,
            )));
        }
        if !self.allowed_services.is_empty() && !self.allowed_services.contains(&found.service) {
            let msg = format!("aws_auth does not sign for service {}", found.service);
            return Ok(Verdict::Reject(refuse(
                cx,
                StatusCode::FORBIDDEN,
                "service_not_allowed",
                msg,
            )));
        }
        let now = SystemTime::now();
        if found.presigned {
            if let Some(when) = presign::expired(req.uri().query().unwrap_or(""), now) {
                cx.annotate("expired", when.as_str());
                return Ok(Verdict::Reject(refuse(
                    cx,
                    StatusCode::FORBIDDEN,
                    "presigned_url_expired",
                    format!("the pre-signed URL expired ({when}); aws_auth does not renew it"),
                )));
            }
        }
        let payload = match Payload::of(req.headers()) {
            Ok(p) => p,
            Err(value) => {
                cx.annotate("payload", value.as_str());
                return Ok(Verdict::Reject(refuse(
                    cx,
                    StatusCode::BAD_REQUEST,
                    "unsupported_streaming_payload",
                    format!(
                        "aws_auth cannot re-sign a {value} upload \
                         (only STREAMING-UNSIGNED-PAYLOAD-TRAILER and \
                         STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER])"
                    ),
                )));
            }
        };
        let decoded_length = match decoded_length(req, payload) {
            Ok(n) => n,
            Err(why) => {
                return Ok(Verdict::Reject(refuse(
                    cx,
                    StatusCode::BAD_REQUEST,
                    streaming::MALFORMED,
                    why.into(),
                )))
            }
        };
        let body = if payload.is_streaming() || self.unsigned_payload {
            None
        } else {
            match signed_body::checked(req, cx, self.allow_chunked_body, self.name()) {
                Ok(b) => Some(b),
                Err(refusal) => return Ok(Verdict::Reject(refusal)),
            }
        };
        let creds = self.credentials(cx).await?;
        // What the request will carry as X-Amz-Security-Token, to be noted.
        let token = creds
            .session_token()
            .map(|t| SecretValue::new(t.to_string()));
        // For re-signing a signed streaming body's chunks.
        let secret = Zeroizing::new(creds.secret_access_key().to_string());

        // Drop the placeholder signature, in the headers and (pre-signed) the query.
        for h in SIGNATURE_HEADERS {
            req.headers_mut().remove(h);
        }
        if found.presigned {
            let path = req.uri().path().to_string();
            let query = without_presign(req.uri().query().unwrap_or(""));
            let pq = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(
                pq.parse()
                    .map_err(|_| failed(cx, "rebuilding the URI".into()))?,
            );
            *req.uri_mut() =
                Uri::from_parts(parts).map_err(|_| failed(cx, "rebuilding the URI".into()))?;
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let url = signing_url(cx, &pq);

        // The headers the workload signed (and host), as they will leave.
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| *k == HOST || found.signed_headers.iter().any(|s| s == k.as_str()))
            .filter(|(k, _)| !SIGNATURE_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        if found.service == "s3" || found.service.starts_with("s3-") || found.service == "s3express"
        {
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&found.region)
            .name(&found.service)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| failed(cx, format!("signing parameters: {e}")))?
            .into();
        let signable_body = match (&body, payload.literal()) {
            (_, Some(literal)) => SignableBody::Precomputed(literal.to_string()),
            (Some(b), None) => SignableBody::Bytes(b),
            (None, None) => SignableBody::UnsignedPayload,
        };
        let signable = SignableRequest::new(
            req.method().as_str(),
            url.as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            signable_body,
        )
        .map_err(|e| failed(cx, format!("the request cannot be signed: {e}")))?;
        let (instructions, seed) = sign(signable, &params)
            .map_err(|e| failed(cx, format!("signing: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        if let Payload::SignedChunks { trailer } = payload {
            let signer =
                chunked::ChunkSigner::new(&secret, now, &found.region, &found.service, seed);
            let inner = std::mem::replace(req.body_mut(), crate::body::empty());
            *req.body_mut() = streaming::resigned(inner, signer, trailer, decoded_length);
        }
        for name in ["authorization", "x-amz-security-token"] {
            let name = HeaderName::from_static(name);
            if let Some(v) = req.headers_mut().get_mut(&name) {
                v.set_sensitive(true);
                cx.mark_credential_header(&name);
            }
        }
        let mut injected = vec![
            Value::from("header:Authorization"),
            Value::from("header:X-Amz-Date"),
            Value::from("header:X-Amz-Content-Sha256"),
        ];
        if let Some(token) = &token {
            injected.push(Value::from("header:X-Amz-Security-Token"));
            cx.note_secret_value(token, "aws_auth", self.scrub_response_bodies);
        }
        cx.annotate("injected", injected);
        if let Some(literal) = payload.literal() {
            cx.annotate("payload", literal);
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
