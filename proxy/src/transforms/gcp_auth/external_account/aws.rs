//! AWS-sourced `external_account` credentials (`environment_id: aws1`):
//! the subject token is a signed AWS STS `GetCallerIdentity` request that
//! Google STS replays to AWS to learn the caller's identity, serialized as
//! google-auth does (URL-encoded JSON of `url`, `method` and `headers`).
//!
//! - **Region**: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
//!   `credential_source.region_url` (the metadata server's availability
//!   zone, its last letter dropped).
//! - **Credentials**: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with
//!   `AWS_SESSION_TOKEN`), else `credential_source.url`: the metadata
//!   server's role name, then that role's credentials.
//! - **IMDSv2**: with `imdsv2_session_token_url`, a session token is asked
//!   for first and sent with each metadata request.
//! - **Signature**: SigV4 (aws-sigv4) over `host`, `x-amz-date` and
//!   `x-amz-security-token`, service from the host's first label; the
//!   `x-goog-cloud-target-resource` header (the audience) is added after
//!   signing, as google-auth adds it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::super::super::oauth_token::MintError;
use crate::secrets::http::HttpClient;
use crate::secrets::EnvLookup;

/// The `credential_source` fields of an AWS-sourced file.
pub(super) struct AwsSource<'a> {
    pub(super) region_url: Option<&'a str>,
    pub(super) url: Option<&'a str>,
    pub(super) regional_cred_verification_url: Option<&'a str>,
    pub(super) imdsv2_session_token_url: Option<&'a str>,
}

/// The signed request, in the order and shape Google STS reads.
#[derive(Serialize)]
struct Signed<'a> {
    headers: Vec<Header<'a>>,
    method: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct Header<'a> {
    key: &'a str,
    value: &'a str,
}

/// Checks `environment_id` (`aws1`; other versions are refused).
pub(super) fn check_environment(id: &str) -> Result<(), MintError> {
    match id.strip_prefix("aws") {
        Some("1") => Ok(()),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Err(MintError(
            format!("credential_source.environment_id {id:?}: only version 1 (aws1) is supported"),
        )),
        _ => Err(MintError(format!(
            "credential_source.environment_id {id:?} is not supported (aws1)"
        ))),
    }
}

/// The subject token: a signed `GetCallerIdentity` request for `audience`.
pub(super) async fn subject_token(
    http: &HttpClient,
    env: &EnvLookup,
    src: &AwsSource<'_>,
    audience: &str,
) -> Result<Zeroizing<String>, MintError> {
    let verify = src
        .regional_cred_verification_url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            MintError("credential_source has no regional_cred_verification_url".into())
        })?;
    let var = |name: &str| env.var(name).filter(|v| !v.is_empty());
    let mut imds = Imds {
        http,
        session_url: src.imdsv2_session_token_url,
        token: None,
    };
    let region = match var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
        Some(r) => r,
        None => {
            let url = src.region_url.ok_or_else(|| {
                MintError("no AWS region: set AWS_REGION or credential_source.region_url".into())
            })?;
            let zone = imds.get(url).await?;
            let zone = zone.trim();
            // us-east-2b: the region is the zone without its letter.
            zone.get(..zone.len().saturating_sub(1))
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    MintError(format!(
                        "{} answered no availability zone",
                        crate::redact_url::for_log(url)
                    ))
                })?
                .to_string()
        }
    };
    let creds = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment")
        }
        _ => {
            let url = src.url.ok_or_else(|| {
                MintError(
                    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or \
                     credential_source.url"
                        .into(),
                )
            })?;
            imds.role_credentials(url).await?
        }
    };
    signed_request(
        &creds,
        &region,
        &verify.replace("{region}", &region),
        audience,
    )
}

/// Signs `POST url` and serializes it for Google STS.
fn signed_request(
    creds: &Credentials,
    region: &str,
    url: &str,
    audience: &str,
) -> Result<Zeroizing<String>, MintError> {
    let err = |e: &dyn std::fmt::Display| MintError(format!("signing the AWS request: {e}"));
    let uri: http::Uri = url.parse().map_err(|_| {
        MintError(format!(
            "regional_cred_verification_url {:?} is not a URL",
            crate::redact_url::for_log(url)
        ))
    })?;
    let host = uri
        .host()
        .filter(|_| uri.scheme_str() == Some("https"))
        .ok_or_else(|| {
            MintError(format!(
                "regional_cred_verification_url {:?} is not an https URL",
                crate::redact_url::for_log(url)
            ))
        })?;
    // sts.us-east-2.amazonaws.com: service sts.
    let service = host.split('.').next().unwrap_or(host);
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err(&e))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        [("host", host)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| err(&e))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| err(&e))?.into_parts();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .body(())
        .map_err(|e| err(&e))?;
    instructions.apply_to_request_http1x(&mut req);
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let authorization = h("authorization").ok_or_else(|| err(&"no Authorization header"))?;
    let date = h("x-amz-date").ok_or_else(|| err(&"no x-amz-date header"))?;
    let mut headers = vec![
        Header {
            key: "Authorization",
            value: authorization,
        },
        Header {
            key: "host",
            value: host,
        },
        Header {
            key: "x-amz-date",
            value: date,
        },
    ];
    if let Some(token) = h("x-amz-security-token") {
        headers.push(Header {
            key: "x-amz-security-token",
            value: token,
        });
    }
    headers.push(Header {
        key: "x-goog-cloud-target-resource",
        value: audience,
    });
    let json = Zeroizing::new(
        serde_json::to_string(&Signed {
            headers,
            method: "POST",
            url,
        })
        .map_err(|e| err(&e))?,
    );
    Ok(Zeroizing::new(
        percent_encoding::utf8_percent_encode(&json, super::PY_QUOTE).to_string(),
    ))
}

/// The EC2 metadata server, with an IMDSv2 session when configured.
struct Imds<'a> {
    http: &'a HttpClient,
    session_url: Option<&'a str>,
    token: Option<Zeroizing<String>>,
}

/// A role's credentials as the metadata server answers them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
}

impl Imds<'_> {
    /// GET `url`: the answer's text.
    async fn get(&mut self, url: &str) -> Result<Zeroizing<String>, MintError> {
        if let (Some(session), None) = (self.session_url, &self.token) {
            let req = Request::put(session)
                .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
                .body(Full::new(Bytes::new()))
                .map_err(|e| MintError(format!("building the IMDSv2 session request: {e}")))?;
            self.token = Some(self.send(session, req).await?);
        }
        let mut req = Request::get(url);
        if let Some(t) = &self.token {
            req = req.header("X-aws-ec2-metadata-token", t.as_str());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| MintError(format!("building the metadata request: {e}")))?;
        self.send(url, req).await
    }

    async fn send(
        &self,
        url: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<Zeroizing<String>, MintError> {
        // Errors name the URL without a user, password or query.
        let shown = crate::redact_url::for_log(url);
        let (status, body) = self
            .http
            .send(req)
            .await
            .map_err(|e| MintError(format!("{shown}: {e}")))?;
        if !status.is_success() {
            return Err(MintError(format!("{shown} answered {status}")));
        }
        String::from_utf8(body.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| MintError(format!("{shown} answered something that is not text")))
    }

    /// The credentials of the instance's role: its name from `url`, then
    /// `url/<role>`.
    async fn role_credentials(&mut self, url: &str) -> Result<Credentials, MintError> {
        let role = self.get(url).await?;
        let role = role.trim();
        if role.is_empty() || role.contains('/') {
            return Err(MintError(format!(
                "{} answered no role name",
                crate::redact_url::for_log(url)
            )));
        }
        let creds_url = format!("{}/{role}", url.trim_end_matches('/'));
        let text = self.get(&creds_url).await?;
        let c: RoleCredentials = serde_json::from_str(&text).map_err(|_| {
            MintError(format!(
                "{} answered no AccessKeyId/SecretAccessKey",
                crate::redact_url::for_log(&creds_url)
            ))
        })?;
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            c.token,
            None,
            "metadata",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_ids_other_than_aws1_are_refused() {
        assert!(check_environment("aws1").is_ok());
        let MintError(e) = check_environment("aws2").unwrap_err();
        assert!(e.contains("only version 1"), "{e}");
        let MintError(e) = check_environment("azure1").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn the_signed_request_is_serialized_as_google_auth_does() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("tok".into()), None, "t");
        let url = "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
        let token = signed_request(&creds, "us-east-2", url, "//iam.googleapis.com/p").unwrap();
        let json = percent_encoding::percent_decode_str(token.as_str())
            .decode_utf8()
            .unwrap()
            .into_owned();
        // Python's quote(): '/' kept, ':' '{' '"' ',' '?' '=' '&' encoded.
        assert!(
            token.starts_with("%7B%22headers%22%3A%5B%7B%22key%22"),
            "{}",
            token.as_str()
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], url);
        let keys: Vec<&str> = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "Authorization",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-cloud-target-resource"
            ]
        );
        let auth = v["headers"][0]["value"].as_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-2/sts/aws4_request")
                && auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
            "{auth}"
        );
        assert_eq!(v["headers"][4]["value"], "//iam.googleapis.com/p");
        let plain = "http://sts.us-east-2.amazonaws.com";
        let MintError(e) = signed_request(&creds, "us-east-2", plain, "a").unwrap_err();
        assert!(e.contains("not an https URL"), "{e}");
    }
}
