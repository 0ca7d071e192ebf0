//! `s3://bucket/key`: the object's URL, and one SigV4-signed `GetObject`.
//!
//! Credentials and the region come from the shared AWS chain
//! ([`AwsShared`]: environment, shared files, web identity, ECS container
//! credentials, IMDSv2). The endpoint is `AWS_ENDPOINT_URL_S3`, else
//! `AWS_ENDPOINT_URL` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`),
//! addressed path-style (`{endpoint}/{bucket}/{key}`); else the public
//! virtual-hosted endpoint `https://{bucket}.s3.{region}.amazonaws.com/{key}`
//! (`.com.cn` in China regions), or path-style
//! `https://s3.{region}.amazonaws.com/{bucket}/{key}` for a bucket whose name
//! has dots (the wildcard certificate does not cover them).
//!
//! Errors name the object (`s3://bucket/key`), never the credentials or
//! the signature.

use std::fmt;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SigningSettings, UriPathNormalizationMode,
};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::secrets::aws::{dns_suffix, sign_request, AwsShared};

use super::{FETCH_TIMEOUT, MAX_CONFIG_BYTES};

/// The URL scheme of an S3 config source.
pub const SCHEME: &str = "s3://";

/// The longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// One S3 object, as `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    bucket: String,
    key: String,
}

/// Why an S3 config could not be fetched. Names the object; never holds
/// credentials or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// The `s3://` URL is malformed.
    #[error("{url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the environment nor the AWS config names a region.
    #[error("{0}: no AWS region: set AWS_REGION")]
    NoRegion(S3Object),
    /// The credential chain found no credentials.
    #[error("{0}: no AWS credentials: {1}")]
    NoCredentials(S3Object, String),
    /// The configured endpoint is not a URL with a scheme and a host.
    #[error("{object}: invalid S3 endpoint URL {endpoint:?} (from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)")]
    Endpoint {
        /// The object.
        object: S3Object,
        /// The configured endpoint, without userinfo or query.
        endpoint: String,
    },
    /// The request could not be signed.
    #[error("{0}: signing the request: {1}")]
    Signing(S3Object, String),
    /// The request failed in transit (connect, TLS, a body over the limit).
    #[error("{object}: GetObject: {detail}")]
    Transport {
        /// The object.
        object: S3Object,
        /// What failed.
        detail: String,
    },
    /// S3 answered with an error: `403 Forbidden: AccessDenied: ...`.
    #[error("{object}: GetObject: {detail}")]
    Status {
        /// The object.
        object: S3Object,
        /// The status, S3's error code and message.
        detail: String,
    },
    /// The fetch did not finish in time.
    #[error("{0}: GetObject timed out after {1:?}")]
    Timeout(S3Object, std::time::Duration),
}

impl S3Object {
    /// Parses `s3://bucket/key`. The bucket must be a valid S3 bucket name
    /// (3 to 63 lowercase letters, digits, dots and hyphens, starting and
    /// ending with a letter or digit); the key must not be empty.
    pub fn parse(url: &str) -> Result<Self, S3Error> {
        let bad = |reason: &str| S3Error::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not an s3://bucket/key URL"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("no object key: use s3://bucket/key"))?;
        if bucket.is_empty() {
            return Err(bad("no bucket: use s3://bucket/key"));
        }
        if key.is_empty() {
            return Err(bad("no object key: use s3://bucket/key"));
        }
        if let Err(reason) = check_bucket(bucket) {
            return Err(bad(&format!("invalid bucket name: {reason}")));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(bad("object key longer than 1024 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(bad("object key has control characters"));
        }
        Ok(S3Object {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's URL: path-style under `endpoint` when one is configured,
    /// else the public endpoint of `region`.
    pub fn url(&self, region: &str, endpoint: Option<&str>) -> String {
        let key = encode_key(&self.key);
        let bucket = &self.bucket;
        let suffix = dns_suffix(region);
        match endpoint {
            Some(e) => format!("{}/{bucket}/{key}", e.trim_end_matches('/')),
            None if bucket.contains('.') => format!("https://s3.{region}.{suffix}/{bucket}/{key}"),
            None => format!("https://{bucket}.s3.{region}.{suffix}/{key}"),
        }
    }

    /// Fetches the object, within [`FETCH_TIMEOUT`] and [`MAX_CONFIG_BYTES`].
    pub async fn fetch(&self, aws: &AwsShared) -> Result<Vec<u8>, S3Error> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get(aws))
            .await
            .map_err(|_| S3Error::Timeout(self.clone(), FETCH_TIMEOUT))?
    }

    async fn get(&self, aws: &AwsShared) -> Result<Vec<u8>, S3Error> {
        let region = aws
            .default_region()
            .await
            .ok_or_else(|| S3Error::NoRegion(self.clone()))?;
        let creds = aws
            .credentials("s3")
            .await
            .map_err(|e| S3Error::NoCredentials(self.clone(), backend_detail(e)))?;
        let endpoint = aws.configured_endpoint("AWS_ENDPOINT_URL_S3");
        if let Some(e) = &endpoint {
            let uri: Option<http::Uri> = e.parse().ok();
            if !uri.is_some_and(|u| u.scheme().is_some() && u.host().is_some()) {
                return Err(S3Error::Endpoint {
                    object: self.clone(),
                    endpoint: crate::redact_url::for_log(e),
                });
            }
        }
        let url = self.url(&region, endpoint.as_deref());
        let signing = |e: String| S3Error::Signing(self.clone(), e);
        let mut req = Request::builder()
            .method("GET")
            .uri(&url)
            .body(())
            .map_err(|e| signing(e.to_string()))?;
        sign_request(
            &mut req,
            &[],
            creds.clone(),
            &region,
            "s3",
            s3_signing_settings(),
        )
        .map_err(signing)?;
        let req = req.map(|()| Full::new(Bytes::new()));
        // The URL carries no signature (that is in the headers); a user and
        // password or a query from `AWS_ENDPOINT_URL*` are left out.
        let rsp = aws
            .http()
            .send_limited(req, MAX_CONFIG_BYTES)
            .await
            .map_err(|e| S3Error::Transport {
                object: self.clone(),
                detail: format!("{}: {e}", crate::redact_url::for_log(&url)),
            })?;
        let status = rsp.status();
        if status.is_success() {
            return Ok(rsp.body().to_vec());
        }
        // The advice names the header's region only when it has a region's shape:
        // the endpoint writes it.
        let bucket_region = rsp
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .filter(|r| is_region(r))
            .map(str::to_string);
        let mut detail = status_detail(status, &String::from_utf8_lossy(rsp.body()), &creds);
        if let Some(r) = bucket_region.filter(|r| *r != region) {
            detail.push_str(&format!(" (the bucket is in {r}; set AWS_REGION={r})"));
        }
        Err(S3Error::Status {
            object: self.clone(),
            detail,
        })
    }
}

impl fmt::Display for S3Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

/// Signing as S3 wants it: the path signed as sent (already encoded, not
/// normalized) and the `x-amz-content-sha256` header.
fn s3_signing_settings() -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s
}

/// The detail of a credentials error, without the backend prefix.
fn backend_detail(e: crate::secrets::SecretError) -> String {
    match e {
        crate::secrets::SecretError::Backend { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// Why `bucket` is not a valid bucket name, if it is not.
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&bucket.len()) {
        return Err("must be 3 to 63 characters");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(bucket.bytes().next()) || !alnum(bucket.bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return Err("must not contain '..'");
    }
    Ok(())
}

/// Percent-encodes an object key for the request path: every byte but the
/// unreserved characters and `/`, as S3 (and its signature) expect.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An S3 error answer in words: its status, then its error document's
/// `Code` and `Message`, each as peer text is shown (control characters
/// escaped, cut to 512 characters) and scrubbed of the signing keys, as an
/// AWS JSON error is: they end up in the start-up error and the reload's
/// answer and log, and the endpoint (any `AWS_ENDPOINT_URL`) writes them.
fn status_detail(status: http::StatusCode, body: &str, creds: &Credentials) -> String {
    let shown = crate::secrets::scrub::Scrubber::new(
        [Some(creds.secret_access_key()), creds.session_token()]
            .into_iter()
            .flatten(),
    );
    let mut detail = status.to_string();
    for tag in ["Code", "Message"] {
        if let Some(text) = xml_element(body, tag) {
            detail.push_str(": ");
            detail.push_str(&shown.peer_text(text));
        }
    }
    detail
}

/// Whether `r` has the shape of an AWS region name (`eu-west-1`,
/// `us-gov-west-1`, `cn-north-1`): lowercase letters, digits and dashes.
fn is_region(r: &str) -> bool {
    (4..=32).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.contains('-')
}

/// The text of the first `<tag>...</tag>` in an S3 error document.
fn xml_element<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + len].trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
