//! The `gcp_auth` transform: Google Cloud access tokens minted from a
//! service account and injected as `Authorization: Bearer` (spec: GCP
//! Service Accounts).
//!
//! - **Stubs first**, before the rules: a request to Google's OAuth2 token
//!   endpoint (`oauth2.googleapis.com/token`) is answered with the stub token,
//!   and the metadata server (`metadata.google.internal`, `169.254.169.254`) is
//!   emulated for the configured account ([`metadata`]: the ping, the account's
//!   e-mail and scopes, the project, the stub token), so Google SDKs finish
//!   their Application Default Credentials discovery without credentials (and
//!   without a packet to the metadata address).
//! - **Minting**: from a service-account keyfile (`keyfile_path`, or a secret
//!   source `keyfile`), an RFC 7523 assertion (RS256; `iss` the
//!   `client_email`, `scope`, `aud` the keyfile's `token_uri`, `sub` for
//!   domain-wide delegation) exchanged at `token_uri`. With
//!   `credentials_provider: workload_identity`, Google's default chain:
//!   `GOOGLE_APPLICATION_CREDENTIALS` (a service-account keyfile, an
//!   `authorized_user` refresh token, or `external_account` Workload
//!   Identity Federation: [`external_account`]), else the metadata server
//!   (`GCE_METADATA_HOST`, default `metadata.google.internal`).
//! - One cached token per transform, refreshed in the background ahead of
//!   expiry ([`cache`]); a keyfile whose content changes discards it. The
//!   cache is kept across reloads ([`Sources::keep`]) by what the token is
//!   minted from (the credentials' path, secret source or the default
//!   chain, `subject`, `scopes`), so a reload that keeps the entry mints no
//!   new token.
//! - **First match wins**: once a credential transform (an earlier `gcp_auth`
//!   entry included) has set Authorization on a request, later `gcp_auth`
//!   entries leave it alone: no mint, no injection, only the annotation
//!   `already_set`.
//! - A mint that fails refuses the request: 403 `token_unavailable`.
//! - **What comes back**: the token injected is noted
//!   ([`Flow::note_secret_value`]), so the response's headers and, unless
//!   `scrub_response_bodies: false`, its body are scrubbed of it
//!   ([`crate::scrub_response`]).
//!
//! Audit: `service_account` and `injected`; `already_set`; `stubbed`; `error`
//! and `rejected`; in the response trace (when `gcp_auth` is the first
//! transform that put a value in the request), the scrub's
//! `response_redacted`, `response_body_redacted` and `response_body_decoded`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::oauth_token::{
    exchange, inject, rsa_key, sign_jwt, stub_response, unavailable, unix_now, MintError,
    TokenResponse,
};
use crate::body::Body;
use crate::config::{GcpAuthConfig, GcpCredentials};
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::secrets::http::HttpClient;
use crate::secrets::scrub::Scrubber;
use crate::secrets::{EnvLookup, Secret, SecretValue, Sources};

/// Google's OAuth2 token endpoint, the default `token_uri`.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The built transform.
pub struct GcpAuth {
    minter: Arc<Minter>,
    rules: Scope,
    cache: Arc<cache::TokenCache>,
    scrub_response_bodies: bool,
}

/// Everything a mint needs; shared with background refreshes.
struct Minter {
    source: Source,
    subject: Option<String>,
    scopes: Vec<String>,
    http: HttpClient,
    env: EnvLookup,
}

enum Source {
    Path(PathBuf),
    Secret(Secret),
    DefaultChain,
}

/// The fields of a credentials JSON file this transform uses.
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
    // authorized_user
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// A credentials file, read and checked as far as it can be without minting.
enum Credentials {
    ServiceAccount {
        email: String,
        key: Zeroizing<String>,
        key_id: Option<String>,
        token_uri: String,
    },
    AuthorizedUser {
        id: Zeroizing<String>,
        secret: Zeroizing<String>,
        refresh: Zeroizing<String>,
        token_uri: String,
    },
    /// Checked by [`external_account`] itself.
    ExternalAccount,
}

impl Credentials {
    /// Reads `text`; `subject`: the transform asks for domain-wide delegation.
    fn read(text: &str, subject: bool) -> Result<Self, MintError> {
        let file: CredentialsFile =
            serde_json::from_str(text).map_err(|e| MintError(not_a_keyfile(text, &e)))?;
        let token_uri = file
            .token_uri
            .clone()
            .unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
        match file.kind.as_deref() {
            Some("service_account") => Ok(Credentials::ServiceAccount {
                email: file
                    .client_email
                    .ok_or_else(|| MintError("the keyfile has no client_email".into()))?,
                key: Zeroizing::new(
                    file.private_key
                        .ok_or_else(|| MintError("the keyfile has no private_key".into()))?,
                ),
                key_id: file.private_key_id,
                token_uri,
            }),
            Some("authorized_user") if !subject => {
                let field = |v: Option<String>, name: &str| {
                    v.map(Zeroizing::new)
                        .ok_or_else(|| MintError(format!("the credentials have no {name}")))
                };
                Ok(Credentials::AuthorizedUser {
                    id: field(file.client_id, "client_id")?,
                    secret: field(file.client_secret, "client_secret")?,
                    refresh: field(file.refresh_token, "refresh_token")?,
                    token_uri,
                })
            }
            Some("external_account") if !subject => Ok(Credentials::ExternalAccount),
            Some("authorized_user" | "external_account") => Err(MintError(
                "subject (domain-wide delegation) needs a service-account keyfile".into(),
            )),
            other => Err(MintError(format!(
                "credentials of type {:?} are not supported (service_account, authorized_user, external_account)",
                other.unwrap_or("")
            ))),
        }
    }
}

/// Why `text` did not read as a credentials file, without quoting it
/// (serde's messages quote the value they met). Valid JSON of another type
/// is named by its type: a keyfile stored in a secret manager as a JSON
/// string holding the JSON (encoded twice) is the common case, and "not
/// valid JSON" would send its owner looking for a syntax error.
fn not_a_keyfile(text: &str, e: &serde_json::Error) -> String {
    if e.classify() != serde_json::error::Category::Data {
        return format!("the credentials are not valid JSON: line {}", e.line());
    }
    let kind = match text.trim_start().bytes().next() {
        Some(b'"') => {
            return "the credentials are a JSON string, not an object: the keyfile's JSON was \
                    encoded a second time (as a string holding it); store the keyfile's JSON \
                    object itself"
                .into()
        }
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(b'{') => {
            return format!(
                "the credentials are not a keyfile: a field has the wrong type (line {})",
                e.line()
            )
        }
        _ => "number",
    };
    format!("the credentials are a JSON {kind}, not an object (a keyfile is a JSON object)")
}

/// Checks a keyfile's `text` as a mint would read it, without minting:
/// its type and fields, a service account's private key, an external
/// account's subject token source. For `validate`, which would otherwise
/// pass a keyfile that fails every request at its first mint. The error
/// never quotes the file.
pub fn check_keyfile(text: &str, cfg: &GcpAuthConfig) -> Result<(), String> {
    let checked = match Credentials::read(text, cfg.subject.is_some()) {
        Ok(Credentials::ServiceAccount { key, .. }) => rsa_key(&key).map(|_| ()),
        Ok(Credentials::AuthorizedUser { .. }) => Ok(()),
        Ok(Credentials::ExternalAccount) => external_account::check_text(text),
        Err(e) => Err(e),
    };
    checked.map_err(|e| e.0)
}

/// Builds the transform.
pub fn build(cfg: &GcpAuthConfig, sources: &Sources) -> Arc<dyn Transform> {
    Arc::new(GcpAuth::new(cfg, sources))
}

impl GcpAuth {
    /// The transform, concretely typed (tests).
    pub fn new(cfg: &GcpAuthConfig, sources: &Sources) -> Self {
        let source = match &cfg.credentials {
            GcpCredentials::KeyfilePath(p) => Source::Path(p.clone()),
            GcpCredentials::Keyfile(s) => Source::Secret(sources.secret(s)),
            GcpCredentials::WorkloadIdentity => Source::DefaultChain,
        };
        let key = Self::keep_key(&source, cfg);
        GcpAuth {
            minter: Arc::new(Minter {
                source,
                subject: cfg.subject.clone(),
                scopes: cfg.scopes.clone(),
                http: sources.http_client(),
                env: sources.env().clone(),
            }),
            rules: cfg.rules.clone(),
            cache: sources.keep(&key, cache::TokenCache::default),
            scrub_response_bodies: cfg.scrub_response_bodies,
        }
    }

    /// What the token cache is kept across reloads under: where the
    /// credentials come from (a path, a source by its names, the default
    /// chain), `subject` and `scopes`. Never a value.
    fn keep_key(source: &Source, cfg: &GcpAuthConfig) -> String {
        let mut parts = match source {
            Source::Path(p) => vec!["keyfile_path".into(), p.display().to_string()],
            Source::Secret(s) => vec!["keyfile".into(), s.identity()],
            Source::DefaultChain => vec!["workload_identity".into()],
        };
        parts.extend(["subject".into(), cfg.subject.clone().unwrap_or_default()]);
        parts.push("scopes".into());
        parts.extend(cfg.scopes.iter().cloned());
        Sources::keep_key("gcp_auth/token", &parts)
    }

    /// A valid token and the account it is for: cached, or minted now.
    async fn token(&self) -> Result<(Zeroizing<String>, String), MintError> {
        let text = self.minter.credentials_text().await?;
        let fingerprint: [u8; 32] =
            sha2::Sha256::digest(text.as_ref().map(|t| t.as_bytes()).unwrap_or(b"metadata")).into();
        let minter = self.minter.clone();
        let mint = move || async move { minter.mint(text.as_ref().map(|t| t.as_str())).await };
        self.cache.token(fingerprint, mint).await
    }

    /// Who the emulated metadata server says the workload is: the keyfile's account and
    /// project, else `default` (the credentials are not needed to answer, so an unreadable
    /// file only loses the e-mail and project).
    async fn identity(&self) -> metadata::Identity<'_> {
        let file = match self.minter.credentials_text().await {
            Ok(Some(text)) => serde_json::from_str::<CredentialsFile>(&text).ok(),
            _ => None,
        };
        let (email, project_id) = match file {
            Some(f) => {
                let email = f
                    .client_email
                    .filter(|_| f.kind.as_deref() == Some("service_account"));
                (email, f.project_id)
            }
            None => (None, None),
        };
        metadata::Identity {
            email: email.unwrap_or_else(|| "default".into()),
            project_id,
            scopes: &self.minter.scopes,
        }
    }

    /// The stubbed answer to an SDK's own token or metadata request, if this is one.
    async fn stub(&self, req: &Request<Body>, cx: &mut Flow) -> Option<Verdict> {
        let path = req.uri().path();
        if cx.dest.host.eq_ignore_ascii_case("oauth2.googleapis.com") {
            if path.trim_end_matches('/') != "/token" {
                return None;
            }
            cx.annotate("stubbed", "oauth2_token_endpoint");
            return Some(Verdict::Stub(stub_response()));
        }
        let flavor = req
            .headers()
            .get_all("metadata-flavor")
            .iter()
            .any(|v| v == "Google");
        let query = metadata::classify(&cx.dest.host, path, req.uri().query(), flavor)?;
        if query == metadata::Query::Token {
            let mut rsp = stub_response();
            metadata::flavor(&mut rsp);
            cx.annotate("stubbed", "oauth2_token_endpoint");
            return Some(Verdict::Stub(rsp));
        }
        let rsp = metadata::answer(&query, &self.identity().await)?;
        cx.annotate("stubbed", "metadata_server");
        Some(Verdict::Stub(rsp))
    }
}

impl Minter {
    /// The credentials JSON text, or `None` for the metadata server.
    async fn credentials_text(&self) -> Result<Option<Zeroizing<String>>, MintError> {
        let read = async |p: &std::path::Path| {
            crate::config_source::file::read_named_off_thread(p)
                .await
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8")
                    })
                })
                .map(Zeroizing::new)
                .map_err(|e| MintError(format!("reading {}: {e}", p.display())))
        };
        match &self.source {
            Source::Path(p) => read(p).await.map(Some),
            Source::Secret(s) => s
                .get()
                .await
                .map(|v| Some(Zeroizing::new(v.expose().to_string())))
                .map_err(|e| MintError(format!("keyfile ({}): {e}", s.name()))),
            Source::DefaultChain => match self.env.var("GOOGLE_APPLICATION_CREDENTIALS") {
                Some(p) if !p.is_empty() => read(std::path::Path::new(&p)).await.map(Some),
                _ => Ok(None),
            },
        }
    }

    /// A new token and its account, from the credentials `text` or the metadata server.
    async fn mint(&self, text: Option<&str>) -> Result<cache::Minted, MintError> {
        match text {
            Some(text) => self.mint_from_file(text).await,
            None => self.mint_from_metadata().await,
        }
    }
    async fn mint_from_file(&self, text: &str) -> Result<(TokenResponse, String), MintError> {
        match Credentials::read(text, self.subject.is_some())? {
            Credentials::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
            } => {
                let now = unix_now();
                let mut claims = serde_json::json!({
                    "iss": email,
                    "scope": self.scopes.join(" "),
                    "aud": token_uri,
                    "iat": now,
                    "exp": now + 3600,
                });
                if let Some(sub) = &self.subject {
                    claims["sub"] = Value::from(sub.as_str());
                }
                let assertion = sign_jwt(&key, key_id.as_deref(), &claims)?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ];
                let t = post_form(&self.http, &token_uri, &form, None).await?;
                Ok((t, email))
            }
            Credentials::AuthorizedUser {
                id,
                secret,
                refresh,
                token_uri,
            } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("refresh_token", refresh.as_str()),
                ];
                let t = post_form(&self.http, &token_uri, &form, None).await?;
                Ok((t, "authorized_user".into()))
            }
            Credentials::ExternalAccount => {
                external_account::mint(&self.http, &self.env, text, &self.scopes).await
            }
        }
    }

    /// A token from the metadata server (GKE Workload Identity, GCE, Cloud Run).
    async fn mint_from_metadata(&self) -> Result<(TokenResponse, String), MintError> {
        if self.subject.is_some() {
            return Err(MintError(
                "subject (domain-wide delegation) cannot be used with metadata-server credentials"
                    .into(),
            ));
        }
        let host = self
            .env
            .var("GCE_METADATA_HOST")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| metadata::HOSTS[0].into());
        let scopes = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("scopes", &self.scopes.join(","))
            .finish();
        let uri = format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?{scopes}"
        );
        let req = Request::builder()
            .uri(&uri)
            .header("Metadata-Flavor", "Google")
            .body(Full::new(Bytes::new()))
            .map_err(|e| MintError(format!("building the metadata request: {e}")))?;
        let t = exchange(&self.http, &uri, req)
            .await?
            .map_err(|r| MintError(Scrubber::default().peer_text(&r.detail)))?;
        Ok((t, "default".into()))
    }
}

/// The form fields of a token request that hold credentials.
const SECRET_FIELDS: [&str; 6] = [
    "assertion",
    "client_secret",
    "refresh_token",
    "subject_token",
    "actor_token",
    "password",
];

/// POSTs a form to an OAuth2 token endpoint, with `basic` as the
/// `Authorization` header value (HTTP Basic client authentication) when set.
/// The endpoint's error text may echo what it was sent: the credentials in
/// the form and in the Basic header are kept out of it.
async fn post_form(
    http: &HttpClient,
    uri: &str,
    form: &[(&str, &str)],
    basic: Option<&str>,
) -> Result<TokenResponse, MintError> {
    let body = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish(),
    );
    let mut req = Request::post(uri).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(b) = basic {
        req = req.header(AUTHORIZATION, b);
    }
    let req = req
        .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
        .map_err(|e| MintError(format!("building the token request: {e}")))?;
    exchange(http, uri, req).await?.map_err(|r| {
        let mut scrub = Scrubber::new(
            form.iter()
                .filter(|(name, _)| SECRET_FIELDS.contains(name))
                .map(|(_, v)| *v),
        );
        if let Some(b) = basic {
            scrub.add(b);
            let pair = b
                .strip_prefix("Basic ")
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
            if let Some(pair) = pair.map(Zeroizing::new) {
                let pair = String::from_utf8_lossy(&pair);
                if let Some((_, secret)) = pair.split_once(':') {
                    scrub.add(secret);
                }
            }
        }
        MintError(scrub.peer_text(&r.detail))
    })
}

#[async_trait]
impl Transform for GcpAuth {
    fn name(&self) -> &str {
        "gcp_auth"
    }

    fn may_answer_host(&self, t: &crate::rules::Target<'_>) -> bool {
        t.host.eq_ignore_ascii_case("oauth2.googleapis.com")
            || metadata::HOSTS
                .iter()
                .any(|h| t.host.eq_ignore_ascii_case(h))
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if cx.method.is_empty() {
            return Ok(Verdict::Continue);
        }
        if let Some(stub) = self.stub(req, cx).await {
            return Ok(stub);
        }
        if !self.rules.applies(&cx.target()) {
            return Ok(Verdict::Continue);
        }
        // An earlier credential transform (another `gcp_auth` entry
        // included) set Authorization: it wins, and nothing is minted.
        if cx.is_credential_header(&AUTHORIZATION) {
            cx.note_already_set("header:Authorization".into());
            return Ok(Verdict::Continue);
        }
        let (token, account) = match self.token().await {
            Ok(t) => t,
            Err(MintError(detail)) => {
                let what = "Google Cloud token";
                return Ok(unavailable(cx, StatusCode::FORBIDDEN, what, detail));
            }
        };
        let value = Zeroizing::new(format!("Bearer {}", token.as_str()));
        inject(
            req,
            cx,
            &AUTHORIZATION,
            "Authorization",
            &value,
            StatusCode::FORBIDDEN,
        )?;
        cx.annotate("service_account", account);
        // The token alone (not `Bearer `) is what an echo hands back.
        let token = SecretValue::from(token);
        cx.note_secret_value(&token, "gcp_auth", self.scrub_response_bodies);
        Ok(Verdict::Continue)
    }
}

mod cache;
mod external_account;
mod metadata;

#[cfg(test)]
mod tests;
