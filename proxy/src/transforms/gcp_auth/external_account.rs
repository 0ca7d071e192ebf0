//! Workload Identity Federation: Google's `external_account` credentials
//! (spec: GCP Service Accounts, Workload Identity), what
//! `google-github-actions/auth`, `gcloud iam workload-identity-pools
//! create-cred-config` and GKE/AKS/EKS federation set-ups write to the file
//! `GOOGLE_APPLICATION_CREDENTIALS` names.
//!
//! 1. **Subject token**: the third-party credential, read from
//!    `credential_source`: a `file` (re-read at each mint: Kubernetes
//!    rotates projected tokens in place) or a `url` fetched with its
//!    `headers` (GitHub Actions' OIDC endpoint, Azure's IMDS); `format`
//!    `text` (the whole content, trimmed) or `json` (the string at
//!    `subject_token_field_name`).
//! 2. **Token exchange** (RFC 8693) at `token_url` (Google STS): the subject
//!    token for a federated access token, for `audience` (the workload
//!    identity pool provider). `client_id`/`client_secret`, when present,
//!    authenticate with HTTP Basic; a workforce pool's
//!    `workforce_pool_user_project` goes in `options` otherwise.
//! 3. **Impersonation**, when `service_account_impersonation_url` is set:
//!    the federated token (scope `iam`, the narrowest that will do) buys a
//!    service account's
//!    access token with the configured scopes
//!    (`generateAccessToken`, lifetime `service_account_impersonation.
//!    token_lifetime_seconds`, default 3600 s); the account's e-mail from the
//!    URL is what the audit names. Without it the federated token is the
//!    access token (scopes in the exchange) and the audit says
//!    `external_account`.
//!
//! AWS-sourced credentials (`environment_id: aws1`) sign a `GetCallerIdentity`
//! request instead ([`aws`]); executable-sourced ones run a command that
//! prints the token, only with `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`
//! as in Google's own libraries ([`executable`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::super::oauth_token::{check_minted, MintError, TokenResponse};
use super::post_form;
use crate::secrets::http::HttpClient;
use crate::secrets::scrub::Scrubber;
use crate::secrets::EnvLookup;

mod aws;
mod executable;

/// Google STS, the default `token_url`.
const GOOGLE_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// The scope of the federated token that impersonates a service account:
/// the narrowest one `generateAccessToken` accepts, as google-auth asks.
const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// What Python's `urllib.parse.quote` leaves alone (its default
/// `safe="/"`): google-auth encodes `options` and AWS subject tokens so.
const PY_QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');
/// The largest `token_lifetime_seconds` Google accepts (12 hours; more than
/// one hour needs an organisation policy exception).
const MAX_LIFETIME_SECS: u64 = 43_200;

/// The fields of an `external_account` credentials file this module uses.
#[derive(Deserialize)]
struct ExternalAccount {
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    service_account_impersonation: Option<Impersonation>,
    client_id: Option<String>,
    client_secret: Option<String>,
    workforce_pool_user_project: Option<String>,
    credential_source: Option<CredentialSource>,
}

#[derive(Deserialize)]
struct Impersonation {
    token_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct CredentialSource {
    file: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    format: Option<Format>,
    environment_id: Option<String>,
    executable: Option<executable::ExecutableConfig>,
    region_url: Option<String>,
    regional_cred_verification_url: Option<String>,
    imdsv2_session_token_url: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

/// Where the subject token comes from, checked.
enum Source<'a> {
    File(&'a str),
    Url(&'a str, &'a BTreeMap<String, String>),
    Aws(aws::AwsSource<'a>),
    Exec(&'a executable::ExecutableConfig),
}

/// How the subject token is found in what the source returns.
enum Shape<'a> {
    Text,
    Json(&'a str),
}

/// Mints an access token from `text`, an `external_account` credentials
/// file; returns it and the account the audit names.
pub(super) async fn mint(
    http: &HttpClient,
    env: &EnvLookup,
    text: &str,
    scopes: &[String],
) -> Result<(TokenResponse, String), MintError> {
    let cfg = parse(text)?;
    let Checked {
        audience,
        token_type,
        user_project,
        from,
        shape,
    } = check(&cfg)?;
    let impersonate = cfg.service_account_impersonation_url.as_deref();
    let subject = match &from {
        Source::Aws(src) => aws::subject_token(http, env, src, &audience).await?,
        Source::Exec(exec) => {
            let email = impersonate.map(account_of);
            executable::subject_token(env, exec, &audience, &token_type, email.as_deref()).await?
        }
        _ => subject_token(http, &from, &shape).await?,
    };

    let joined = scopes.join(" ");
    let sts_scope = if impersonate.is_some() {
        IAM_SCOPE
    } else {
        joined.as_str()
    };
    // A client id authenticates the exchange (HTTP Basic, the secret may be
    // empty), as google-auth does.
    let basic = cfg.client_id.as_ref().map(|id| {
        let secret = cfg.client_secret.as_deref().unwrap_or_default();
        let pair = Zeroizing::new(format!("{id}:{secret}"));
        Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ))
    });
    let options = match (user_project, &basic) {
        // JSON as Python writes it, percent-encoded (then form-encoded): the
        // bytes google-auth sends.
        (Some(p), None) => {
            let json = format!("{{\"userProject\": {}}}", serde_json::Value::from(p));
            Some(percent_encoding::utf8_percent_encode(&json, PY_QUOTE).to_string())
        }
        _ => None,
    };
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("audience", audience.as_str()),
        ("scope", sts_scope),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", token_type.as_str()),
    ];
    if let Some(o) = &options {
        form.push(("options", o.as_str()));
    }
    let token_url = cfg.token_url.as_deref().unwrap_or(GOOGLE_STS_URL);
    let federated = post_form(http, token_url, &form, basic.as_ref().map(|b| b.as_str())).await?;
    let Some(url) = impersonate else {
        return Ok((federated, "external_account".into()));
    };
    let lifetime = lifetime(&cfg);
    let token = impersonate_account(http, url, &federated.access_token, scopes, lifetime).await?;
    Ok((token, account_of(url)))
}

/// `text`, an `external_account` credentials file, read.
fn parse(text: &str) -> Result<ExternalAccount, MintError> {
    // Position and kind only: serde's message may quote a value, and the
    // file holds credentials.
    serde_json::from_str(text).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => "a field has the wrong type",
            serde_json::error::Category::Eof => "it ends too early",
            _ => "it is not JSON",
        };
        MintError(format!(
            "the external_account credentials are malformed at line {} column {}: {kind}",
            e.line(),
            e.column()
        ))
    })
}

/// What a mint takes from the credentials, each checked.
struct Checked<'a> {
    audience: String,
    token_type: String,
    user_project: Option<&'a str>,
    from: Source<'a>,
    shape: Shape<'a>,
}

/// Everything about `cfg` that can be checked without minting: the
/// required fields, the pool a user project needs, the subject token's
/// source and the impersonated token's lifetime.
fn check(cfg: &ExternalAccount) -> Result<Checked<'_>, MintError> {
    let required = |v: &Option<String>, name: &str| -> Result<String, MintError> {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MintError(format!("the external_account credentials have no {name}")))
    };
    let audience = required(&cfg.audience, "audience")?;
    let token_type = required(&cfg.subject_token_type, "subject_token_type")?;
    let source = cfg.credential_source.as_ref().ok_or_else(|| {
        MintError("the external_account credentials have no credential_source".into())
    })?;
    let user_project = cfg
        .workforce_pool_user_project
        .as_deref()
        .filter(|p| !p.is_empty());
    if user_project.is_some() && !is_workforce_pool(&audience) {
        return Err(MintError(
            "workforce_pool_user_project is set but the audience is not a workforce pool \
             (//iam.googleapis.com/locations/<location>/workforcePools/...)"
                .into(),
        ));
    }
    let (from, shape) = checked_source(source)?;
    if cfg.service_account_impersonation_url.is_some() {
        let lifetime = lifetime(cfg);
        if !(600..=MAX_LIFETIME_SECS).contains(&lifetime) {
            return Err(MintError(format!(
                "service_account_impersonation.token_lifetime_seconds is {lifetime}: it must be 600 to {MAX_LIFETIME_SECS}"
            )));
        }
    }
    Ok(Checked {
        audience,
        token_type,
        user_project,
        from,
        shape,
    })
}

/// The impersonated token's lifetime the credentials ask for (1 hour by default).
fn lifetime(cfg: &ExternalAccount) -> u64 {
    cfg.service_account_impersonation
        .as_ref()
        .and_then(|i| i.token_lifetime_seconds)
        .unwrap_or(3600)
}

/// [`mint`]'s checks alone, for `validate`: nothing is read or fetched.
pub(super) fn check_text(text: &str) -> Result<(), MintError> {
    check(&parse(text)?).map(|_| ())
}

/// Whether `audience` names a workforce pool (people) rather than a
/// workload identity pool.
fn is_workforce_pool(audience: &str) -> bool {
    audience
        .strip_prefix("//iam.googleapis.com/locations/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(location, rest)| !location.is_empty() && rest.starts_with("workforcePools/"))
}

/// The subject token's source and shape, or why the file cannot be used.
fn checked_source(s: &CredentialSource) -> Result<(Source<'_>, Shape<'_>), MintError> {
    if let Some(env) = &s.environment_id {
        aws::check_environment(env)?;
        let src = aws::AwsSource {
            region_url: s.region_url.as_deref(),
            url: s.url.as_deref(),
            regional_cred_verification_url: s.regional_cred_verification_url.as_deref(),
            imdsv2_session_token_url: s.imdsv2_session_token_url.as_deref(),
        };
        return Ok((Source::Aws(src), Shape::Text));
    }
    if let Some(exec) = &s.executable {
        return Ok((Source::Exec(exec), Shape::Text));
    }
    let from = match (&s.file, &s.url) {
        (Some(f), None) => Source::File(f),
        (None, Some(u)) => Source::Url(u, &s.headers),
        (Some(_), Some(_)) => {
            return Err(MintError(
                "credential_source has both file and url; set one".into(),
            ))
        }
        (None, None) => {
            return Err(MintError(
                "credential_source has neither file nor url".into(),
            ))
        }
    };
    let shape = match s.format.as_ref().map(|f| (f.kind.as_deref(), f)) {
        None | Some((None | Some("text"), _)) => Shape::Text,
        Some((Some("json"), f)) => Shape::Json(
            f.subject_token_field_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    MintError("credential_source.format json needs subject_token_field_name".into())
                })?,
        ),
        Some((Some(other), _)) => {
            return Err(MintError(format!(
                "credential_source.format type {other:?} is not supported (text, json)"
            )))
        }
    };
    Ok((from, shape))
}

/// Reads the subject token from its source.
async fn subject_token(
    http: &HttpClient,
    from: &Source<'_>,
    shape: &Shape<'_>,
) -> Result<Zeroizing<String>, MintError> {
    let (raw, whence) = match from {
        Source::Aws(_) | Source::Exec(_) => {
            return Err(MintError(
                "an AWS- or executable-sourced subject token is not read here".into(),
            ))
        }
        Source::File(path) => {
            let bytes =
                crate::config_source::file::read_named_off_thread(std::path::Path::new(path))
                    .await
                    .map_err(|e| {
                        MintError(format!("reading the subject token file {path}: {e}"))
                    })?;
            (
                Zeroizing::new(bytes),
                format!("the subject token file {path}"),
            )
        }
        Source::Url(url, headers) => {
            // Errors name the URL without a user, password or query (a
            // token may be in any): they reach the audit record and the log.
            let shown = crate::redact_url::for_log(url);
            let mut req = Request::get(*url);
            for (k, v) in headers.iter() {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req
                .body(Full::new(Bytes::new()))
                .map_err(|e| MintError(format!("building the subject token request: {e}")))?;
            let (status, body) = http
                .send(req)
                .await
                .map_err(|e| MintError(format!("the subject token url {shown}: {e}")))?;
            if !status.is_success() {
                return Err(MintError(format!(
                    "the subject token url {shown} answered {status}"
                )));
            }
            (body, format!("the subject token url {shown}"))
        }
    };
    token_in(&raw, shape, &whence)
}

/// The subject token in `raw`, what `whence` (a file or URL, as errors
/// name it) held, found as `shape` says.
fn token_in(raw: &[u8], shape: &Shape<'_>, whence: &str) -> Result<Zeroizing<String>, MintError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| MintError(format!("{whence} is not UTF-8 text")))?;
    let token = match shape {
        Shape::Text => Zeroizing::new(text.trim().to_string()),
        Shape::Json(field) => {
            let v: Value = serde_json::from_str(text)
                .map_err(|_| MintError(format!("{whence} is not JSON")))?;
            match v.get(*field) {
                Some(Value::String(s)) => Zeroizing::new(s.clone()),
                _ => return Err(MintError(format!("{whence} has no string field {field:?}"))),
            }
        }
    };
    if token.is_empty() {
        return Err(MintError(format!("{whence} holds an empty subject token")));
    }
    Ok(token)
}

/// IAM Credentials' `generateAccessToken` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Generated {
    access_token: Option<String>,
    expire_time: Option<String>,
}

/// Trades the federated token for the service account's access token.
async fn impersonate_account(
    http: &HttpClient,
    url: &str,
    federated: &str,
    scopes: &[String],
    lifetime: u64,
) -> Result<TokenResponse, MintError> {
    let body = serde_json::json!({ "scope": scopes, "lifetime": format!("{lifetime}s") });
    let bearer = Zeroizing::new(format!("Bearer {federated}"));
    let req = Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, bearer.as_str())
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| MintError(format!("building the impersonation request: {e}")))?;
    let (status, rsp) = http
        .send(req)
        .await
        .map_err(|e| MintError(format!("{}: {e}", crate::redact_url::for_log(url))))?;
    if !status.is_success() {
        // The text may echo the request, and the federated token with it.
        let scrub = Scrubber::new([federated]);
        return Err(MintError(format!(
            "service account impersonation {status}{}",
            google_error(&rsp)
                .map(|m| format!(": {}", scrub.peer_text(&m)))
                .unwrap_or_default()
        )));
    }
    generated(&rsp, lifetime)
}

/// The token in a `generateAccessToken` answer; `lifetime`, the one asked
/// for, when it names no `expireTime`.
fn generated(rsp: &[u8], lifetime: u64) -> Result<TokenResponse, MintError> {
    let g: Generated = serde_json::from_slice(rsp).map_err(|_| {
        MintError("the impersonation answer is not a generateAccessToken response".into())
    })?;
    let access = g
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| MintError("the impersonation answer has no accessToken".into()))?;
    check_minted(&access)?;
    Ok(TokenResponse {
        access_token: Zeroizing::new(access),
        // No expireTime: the lifetime asked for; one that cannot be read
        // or is past: this request only.
        expires_in: Some(match g.expire_time.as_deref() {
            None => lifetime,
            Some(t) => seconds_until(t).unwrap_or(1),
        }),
        refresh_token: None,
    })
}

/// The message of a Google API error body (`{"error": {"message": ...}}`).
fn google_error(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let msg = e.get("message").and_then(Value::as_str);
    let status = e.get("status").and_then(Value::as_str);
    match (status, msg) {
        (Some(s), Some(m)) => Some(format!("{s} ({m})")),
        (None, Some(m)) => Some(m.to_string()),
        (Some(s), None) => Some(s.to_string()),
        (None, None) => None,
    }
}

/// Seconds from now until an RFC 3339 time; `None` when it is unreadable
/// or past.
fn seconds_until(rfc3339: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let left = (t - time::OffsetDateTime::now_utc()).whole_seconds();
    u64::try_from(left).ok().filter(|s| *s > 0)
}

/// The service account an impersonation URL names
/// (`.../serviceAccounts/{email}:generateAccessToken`).
fn account_of(url: &str) -> String {
    url.rsplit_once("/serviceAccounts/")
        .and_then(|(_, rest)| rest.split_once(':').map(|(acct, _)| acct))
        .map(|a| {
            percent_encoding::percent_decode_str(a)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "external_account".into())
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
