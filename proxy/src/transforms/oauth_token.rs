//! The `oauth_token` transform: OAuth2 access tokens minted at the boundary
//! and injected as `Authorization: Bearer` (spec: OAuth2 Token Injection).
//!
//! Each `tokens[]` entry is one grant (RFC 6749 `refresh_token`,
//! `client_credentials`, `password`; RFC 7523 `jwt_bearer`) with its
//! credentials, each a secret source. Per request:
//! - a request to an entry's `token_endpoint` is answered by the proxy with
//!   the stub token (`stub` action, `stubbed: oauth2_token_endpoint`), so a
//!   sandboxed SDK can run its OAuth2 handshake without real credentials;
//! - otherwise the first entry whose rules match sets its header (default
//!   `Authorization`, prefix `Bearer `) to a cached token, or to one minted
//!   now: one mint at a time per entry (single flight), tokens reused until
//!   ten seconds before `expires_in`. A mint that fails refuses the request
//!   (502 `token_unavailable`) rather than letting it out unauthenticated.
//!
//! Client authentication is HTTP Basic when the entry has a `client_secret`,
//! falling back once to form parameters if the endpoint refuses it (as
//! golang.org/x/oauth2's auto-detection does), and remembered per entry.
//! A credential whose value changes (a source with a `ttl`, rotated in its
//! store) discards the cached token. A refresh token the endpoint rotates is
//! kept in memory for later exchanges, never written back; it is dropped if
//! the value of the configured `refresh_token` (or `client_id`) changes: a
//! new seed from the operator wins over the rotated token.
//!
//! **Reloads.** What an entry learns at run time (the cached token, the
//! client authentication style, the rotated refresh token) is not part of
//! the transform, which every reload builds again: it is kept in the
//! process-long [`Sources`] ([`Sources::keep`]), keyed by what identifies the
//! entry (grant, token endpoint, the sources of its credentials by name, not
//! by value, scopes, audience, token endpoint headers), so a rebuilt entry
//! with the same identity carries on with it, and one whose identity changed
//! starts afresh. The rotated refresh token is kept apart, keyed by the
//! token endpoint and the `client_id` and `refresh_token` sources alone, so
//! that a reload changing the scopes (or another entry of the same token
//! family) does not send a refresh token the endpoint has already revoked.
//! Either goes when no entry of the config in force uses it.
//!
//! **What comes back.** The token injected is noted
//! ([`Flow::note_secret_value`]): the response's headers and, unless
//! `scrub_response_bodies: false`, its body are scrubbed of it
//! ([`crate::scrub_response`]), so an upstream that echoes the request (an
//! error quoting the `Authorization` header) does not hand the workload a
//! token it could use elsewhere until it expires.
//!
//! Audit: `grant` and `injected` on success, `stubbed` for the token
//! endpoint, `grant`, `error` and `rejected: token_unavailable` on failure;
//! in the response trace (when `oauth_token` is the first transform that put
//! a value in the request), the scrub's `response_redacted`,
//! `response_body_redacted` and `response_body_decoded`. No token, secret or
//! assertion is ever recorded.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::Digest as _;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::body::Body;
use crate::config::{OAuthGrant, OAuthTokenConfig, OAuthTokenEntry};
use crate::pipeline::{Flow, Rejection, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::secrets::http::HttpClient;
use crate::secrets::scrub::Scrubber;
use crate::secrets::{Secret, SecretValue, Sources};

/// The token the stubbed endpoint hands out.
pub const STUB_TOKEN: &str = "iron-proxy-stub-token";
/// A token this close to expiry is minted again (golang.org/x/oauth2 uses 10 s).
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Lifetime of a `jwt_bearer` assertion.
const ASSERTION_LIFETIME: u64 = 3600;
/// The longest `expires_in` taken as given: an endpoint's `u64::MAX` would
/// overflow the clock, and a year is "does not expire" for a cached token.
const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;
/// How long a token request may take, as long as a secret fetch: the
/// requests waiting for the token wait no longer.
const EXCHANGE_TIMEOUT: Duration = crate::secrets::cache::FETCH_TIMEOUT;
/// How long a failed mint answers for the requests after it, so that a
/// failing endpoint is not asked once per waiting request.
const FAILURE_HOLD: Duration = Duration::from_secs(2);

/// Errors building the transform from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A header name that is not a valid HTTP header name.
    #[error("oauth_token.tokens[{index}]: invalid header name {name:?}")]
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
            BuildError::HeaderName { index, .. } => format!("tokens[{index}].header"),
        }
    }
}

/// The built transform.
pub struct OAuthToken {
    entries: Vec<Entry>,
    http: HttpClient,
    scrub_response_bodies: bool,
}

struct Entry {
    grant: Grant,
    endpoint: url::Url,
    scopes: Vec<String>,
    rules: Scope,
    header: HeaderName,
    header_written: String,
    prefix: String,
    endpoint_headers: Vec<(HeaderName, Secret)>,
    /// What this entry learned, shared with the same entry of the
    /// configs before and after a reload.
    learned: Arc<Learned>,
    /// The refresh token the endpoint rotated to (`refresh_token` grant
    /// only), shared by every entry of the same token family.
    family: Option<Arc<Family>>,
}

/// An entry's run-time state, kept across reloads ([`Sources::keep`]).
#[derive(Default)]
struct Learned {
    /// 0: not known yet, 1: Basic header, 2: form parameters.
    auth_style: AtomicU8,
    state: tokio::sync::Mutex<State>,
}

/// A `refresh_token` grant's token family: the refresh token the endpoint
/// rotated to, kept across reloads. Locked for the whole exchange, so two
/// entries of one family never send the same refresh token twice.
#[derive(Default)]
struct Family {
    rotated: tokio::sync::Mutex<Rotated>,
}

#[derive(Default)]
struct Rotated {
    /// Fingerprint of the configured `refresh_token` and `client_id` values
    /// the rotated token descends from: a new seed discards it.
    seed: Option<[u8; 32]>,
    token: Option<Zeroizing<String>>,
}

enum Grant {
    RefreshToken {
        refresh_token: Secret,
        client_id: Secret,
        client_secret: Option<Secret>,
    },
    ClientCredentials {
        client_id: Secret,
        client_secret: Secret,
    },
    Password {
        username: Secret,
        password: Secret,
        client_id: Secret,
        client_secret: Option<Secret>,
    },
    JwtBearer {
        issuer: Secret,
        subject: Secret,
        private_key: Secret,
        private_key_id: Option<Secret>,
        audience: String,
    },
}

impl Grant {
    fn name(&self) -> &'static str {
        match self {
            Grant::RefreshToken { .. } => "refresh_token",
            Grant::ClientCredentials { .. } => "client_credentials",
            Grant::Password { .. } => "password",
            Grant::JwtBearer { .. } => "jwt_bearer",
        }
    }

    /// Every credential, named as in the config, optional ones when set.
    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut out: Vec<(&'static str, &Secret)> = Vec::new();
        fn push<'a>(
            out: &mut Vec<(&'static str, &'a Secret)>,
            name: &'static str,
            s: Option<&'a Secret>,
        ) {
            if let Some(s) = s {
                out.push((name, s));
            }
        }
        let mut add = |name, s| push(&mut out, name, s);
        match self {
            Grant::RefreshToken {
                refresh_token,
                client_id,
                client_secret,
            } => {
                add("refresh_token", Some(refresh_token));
                add("client_id", Some(client_id));
                add("client_secret", client_secret.as_ref());
            }
            Grant::ClientCredentials {
                client_id,
                client_secret,
            } => {
                add("client_id", Some(client_id));
                add("client_secret", Some(client_secret));
            }
            Grant::Password {
                username,
                password,
                client_id,
                client_secret,
            } => {
                add("username", Some(username));
                add("password", Some(password));
                add("client_id", Some(client_id));
                add("client_secret", client_secret.as_ref());
            }
            Grant::JwtBearer {
                issuer,
                subject,
                private_key,
                private_key_id,
                ..
            } => {
                add("issuer", Some(issuer));
                add("subject", Some(subject));
                add("private_key", Some(private_key));
                add("private_key_id", private_key_id.as_ref());
            }
        }
        out
    }
}

#[derive(Default)]
struct State {
    /// Fingerprint of the credential values the cached state was made from.
    fingerprint: Option<[u8; 32]>,
    token: Option<Cached>,
    /// The last mint's failure and when: repeated for [`FAILURE_HOLD`].
    failed: Option<(Instant, String)>,
}

/// A minted token and when it stops being worth using (tokio's clock, so tests can pause it).
pub(crate) struct Cached {
    access: Zeroizing<String>,
    expires: Option<Instant>,
}

impl Cached {
    /// The endpoint's answer; no (or a zero) `expires_in` never expires.
    pub(crate) fn new(minted: &TokenResponse) -> Self {
        Cached {
            access: minted.access_token.clone(),
            expires: minted
                .expires_in
                .filter(|s| *s > 0)
                .and_then(|s| Instant::now().checked_add(Duration::from_secs(s))),
        }
    }

    /// The token, unless it expires within [`EXPIRY_MARGIN`].
    pub(crate) fn usable(&self) -> Option<Zeroizing<String>> {
        self.expires
            .is_none_or(|e| e > Instant::now() + EXPIRY_MARGIN)
            .then(|| self.access.clone())
    }
}

/// The refusal of a request no token could be minted for: `status`, reason
/// `token_unavailable`, the cause in `error`.
pub(crate) fn unavailable(
    cx: &mut Flow,
    status: StatusCode,
    what: &str,
    detail: String,
) -> Verdict {
    cx.annotate("error", detail.clone());
    cx.annotate("rejected", "token_unavailable");
    Verdict::Reject(Rejection {
        status,
        reason: "token_unavailable".into(),
        // The cause is the operator's to read (the record's `error`): it may
        // name backends and addresses the workload has no business knowing.
        message: format!("no {what} for this request; the proxy's audit record says why"),
        answer: None,
    })
}

/// Sets `name` to `value` (sensitive, every earlier value replaced), marks
/// it as a credential header for this request, and annotates `injected`
/// with `written`, the name as configured.
pub(crate) fn inject(
    req: &mut Request<Body>,
    cx: &mut Flow,
    name: &HeaderName,
    written: &str,
    value: &str,
    status: StatusCode,
) -> Result<(), TransformError> {
    let mut hv = HeaderValue::from_str(value).map_err(|_| TransformError {
        status,
        reason: "token_unavailable",
        detail: "the access token is not a valid header value".into(),
    })?;
    hv.set_sensitive(true);
    req.headers_mut().remove(name);
    req.headers_mut().insert(name.clone(), hv);
    cx.mark_credential_header(name);
    cx.annotate("injected", vec![Value::from(format!("header:{written}"))]);
    Ok(())
}

/// Resolved credentials by config name.
struct Creds(Vec<(&'static str, Zeroizing<String>)>);

impl Creds {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint_of(|_| true)
    }

    /// The fingerprint of the values a rotated refresh token descends from.
    fn seed(&self) -> [u8; 32] {
        self.fingerprint_of(|n| matches!(n, "refresh_token" | "client_id"))
    }

    fn fingerprint_of(&self, which: impl Fn(&str) -> bool) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        for (n, v) in self.0.iter().filter(|(n, _)| which(n)) {
            h.update(n.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }
}

/// A [`Sources::keep`] key of this transform ([`Sources::keep_key`]).
fn keep_key(kind: &str, parts: &[String]) -> String {
    Sources::keep_key(&format!("oauth_token/{kind}"), parts)
}

/// Why a token could not be had; never holds a credential or token.
#[derive(Debug)]
pub(crate) struct MintError(pub(crate) String);

/// Builds the transform; credential sources come from (and are shared through) `sources`.
pub fn build(cfg: &OAuthTokenConfig, sources: &Sources) -> Result<Arc<dyn Transform>, BuildError> {
    Ok(Arc::new(OAuthToken::new(cfg, sources)?))
}

impl OAuthToken {
    /// The transform, concretely typed (tests).
    pub fn new(cfg: &OAuthTokenConfig, sources: &Sources) -> Result<Self, BuildError> {
        let entries = cfg
            .tokens
            .iter()
            .enumerate()
            .map(|(index, e)| Entry::new(index, e, sources))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OAuthToken {
            entries,
            http: sources.http_client(),
            scrub_response_bodies: cfg.scrub_response_bodies,
        })
    }
}

impl Entry {
    fn new(index: usize, e: &OAuthTokenEntry, sources: &Sources) -> Result<Self, BuildError> {
        let s = |c| sources.secret(c);
        let grant = match &e.grant {
            OAuthGrant::RefreshToken {
                refresh_token,
                client_id,
                client_secret,
            } => Grant::RefreshToken {
                refresh_token: s(refresh_token),
                client_id: s(client_id),
                client_secret: client_secret.as_ref().map(s),
            },
            OAuthGrant::ClientCredentials {
                client_id,
                client_secret,
            } => Grant::ClientCredentials {
                client_id: s(client_id),
                client_secret: s(client_secret),
            },
            OAuthGrant::Password {
                username,
                password,
                client_id,
                client_secret,
            } => Grant::Password {
                username: s(username),
                password: s(password),
                client_id: s(client_id),
                client_secret: client_secret.as_ref().map(s),
            },
            OAuthGrant::JwtBearer {
                issuer,
                subject,
                private_key,
                private_key_id,
                audience,
            } => Grant::JwtBearer {
                issuer: s(issuer),
                subject: s(subject),
                private_key: s(private_key),
                private_key_id: private_key_id.as_ref().map(s),
                audience: audience.clone(),
            },
        };
        let name_of = |name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| BuildError::HeaderName {
                index,
                name: name.to_string(),
            })
        };
        let endpoint_headers = e
            .token_endpoint_headers
            .iter()
            .map(|(n, src)| Ok((name_of(n)?, s(src))))
            .collect::<Result<Vec<_>, BuildError>>()?;
        let (learned_key, family_key) =
            Self::identity(&grant, &e.token_endpoint, &e.scopes, &endpoint_headers);
        Ok(Entry {
            learned: sources.keep(&learned_key, Learned::default),
            family: family_key.map(|k| sources.keep(&k, Family::default)),
            grant,
            endpoint: e.token_endpoint.clone(),
            scopes: e.scopes.clone(),
            rules: e.rules.clone(),
            header: name_of(&e.header)?,
            header_written: e.header.clone(),
            prefix: e.value_prefix.clone(),
            endpoint_headers,
        })
    }

    /// The keys this entry's run-time state is kept under: everything that
    /// shapes the token request (grant, endpoint, credential sources,
    /// scopes, audience, endpoint headers), and for a `refresh_token` grant
    /// its token family (endpoint, `client_id` and `refresh_token` sources).
    /// Sources count by [`Secret::identity`] (their names), so a reload that
    /// keeps them keeps the state; a value that changes is caught by the
    /// fingerprints instead.
    fn identity(
        grant: &Grant,
        endpoint: &url::Url,
        scopes: &[String],
        endpoint_headers: &[(HeaderName, Secret)],
    ) -> (String, Option<String>) {
        let mut parts: Vec<String> = vec![grant.name().into(), endpoint.to_string()];
        for (name, secret) in grant.secrets() {
            parts.extend([name.to_string(), secret.identity()]);
        }
        parts.push("scopes".into());
        parts.extend(scopes.iter().cloned());
        if let Grant::JwtBearer { audience, .. } = grant {
            parts.extend(["audience".into(), audience.clone()]);
        }
        parts.push("token_endpoint_headers".into());
        for (name, secret) in endpoint_headers {
            parts.extend([name.to_string(), secret.identity()]);
        }
        let family = match grant {
            Grant::RefreshToken {
                refresh_token,
                client_id,
                ..
            } => Some(keep_key(
                "family",
                &[
                    endpoint.to_string(),
                    client_id.identity(),
                    refresh_token.identity(),
                ],
            )),
            _ => None,
        };
        (keep_key("entry", &parts), family)
    }

    /// True for a request to this entry's token endpoint (host, port and path).
    /// Whether its token endpoint is on `host` (normalised), any port.
    fn is_endpoint_host(&self, host: &str) -> bool {
        let own = self.endpoint.host_str().unwrap_or("");
        let own = own.trim_start_matches('[').trim_end_matches(']');
        crate::rules::normalize_host(own).eq_ignore_ascii_case(host)
    }

    fn is_endpoint(&self, cx: &Flow, path: &str) -> bool {
        let host = self.endpoint.host_str().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        crate::rules::normalize_host(host).eq_ignore_ascii_case(&cx.dest.host)
            && self.endpoint.port_or_known_default() == Some(cx.dest.port)
            && self.endpoint.path().trim_end_matches('/') == path.trim_end_matches('/')
    }

    /// A valid token: the cached one, or a new one (one mint at a time).
    async fn token(&self, http: &HttpClient) -> Result<Zeroizing<String>, MintError> {
        let mut creds = Vec::new();
        for (name, secret) in self.grant.secrets() {
            let v = secret
                .get()
                .await
                .map_err(|e| MintError(format!("credential {name} ({}): {e}", secret.name())))?;
            creds.push((name, Zeroizing::new(v.expose().to_string())));
        }
        self.token_with(http, &Creds(creds)).await
    }

    /// [`Entry::token`] with the credentials' current values.
    async fn token_with(
        &self,
        http: &HttpClient,
        creds: &Creds,
    ) -> Result<Zeroizing<String>, MintError> {
        let fingerprint = creds.fingerprint();
        let mut state = self.learned.state.lock().await;
        if state.fingerprint != Some(fingerprint) {
            // New or rotated credentials: nothing made from the old ones stays.
            *state = State {
                fingerprint: Some(fingerprint),
                ..State::default()
            };
        }
        if let Some(t) = state.token.as_ref().and_then(Cached::usable) {
            return Ok(t);
        }
        if let Some((at, detail)) = &state.failed {
            if at.elapsed() < FAILURE_HOLD {
                return Err(MintError(detail.clone()));
            }
        }
        // The family's lock is taken after the entry's, and held for the
        // exchange: the refresh token sent is the latest one.
        let mut family = match &self.family {
            Some(f) => Some(f.rotated.lock().await),
            None => None,
        };
        if let Some(f) = family.as_mut() {
            let seed = creds.seed();
            if f.seed != Some(seed) {
                // A new seed (or the first exchange): the configured refresh
                // token is the one to send, not one rotated from an older seed.
                **f = Rotated {
                    seed: Some(seed),
                    token: None,
                };
            }
        }
        let rotated = family.as_ref().and_then(|f| f.token.as_deref());
        let minted = match self.mint(http, creds, rotated.map(|r| r.as_str())).await {
            Ok(m) => m,
            Err(e) => {
                state.failed = Some((Instant::now(), e.0.clone()));
                return Err(e);
            }
        };
        state.failed = None;
        state.token = Some(Cached::new(&minted));
        if let (Some(r), Some(f)) = (minted.refresh_token, family.as_mut()) {
            f.token = Some(r);
        }
        Ok(minted.access_token)
    }

    /// What a token request sends that the endpoint's error text must not
    /// carry into the record: every credential but the client id (no
    /// secret), the rotated refresh token, and the form's own values (a
    /// `jwt_bearer` assertion is replayable until it expires). The scrubber
    /// finds them in any encoding, the Basic header's included.
    fn scrubber(&self, creds: &Creds, rotated: Option<&str>, form: &[(&str, String)]) -> Scrubber {
        let mut scrub = Scrubber::new(
            creds
                .0
                .iter()
                .filter(|(name, _)| *name != "client_id")
                .map(|(_, v)| v.as_str()),
        );
        scrub.add(rotated.unwrap_or_default());
        for (name, value) in form {
            if matches!(
                *name,
                "refresh_token" | "password" | "assertion" | "client_secret"
            ) {
                scrub.add(value);
            }
        }
        scrub
    }

    /// One token request, with the client-authentication fallback.
    async fn mint(
        &self,
        http: &HttpClient,
        creds: &Creds,
        rotated_refresh: Option<&str>,
    ) -> Result<TokenResponse, MintError> {
        let mut form: Vec<(&str, String)> = Vec::new();
        match &self.grant {
            Grant::RefreshToken { .. } => {
                form.push(("grant_type", "refresh_token".into()));
                let refresh = rotated_refresh
                    .or(creds.get("refresh_token"))
                    .unwrap_or_default();
                form.push(("refresh_token", refresh.to_string()));
            }
            Grant::ClientCredentials { .. } => {
                form.push(("grant_type", "client_credentials".into()));
            }
            Grant::Password { .. } => {
                form.push(("grant_type", "password".into()));
                form.push(("username", creds.get("username").unwrap_or("").into()));
                form.push(("password", creds.get("password").unwrap_or("").into()));
            }
            Grant::JwtBearer { audience, .. } => {
                form.push((
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ));
                form.push(("assertion", self.assertion(creds, audience)?.to_string()));
            }
        }
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        let client = match &self.grant {
            Grant::JwtBearer { .. } => None,
            _ => Some((
                creds.get("client_id").unwrap_or(""),
                creds.get("client_secret"),
            )),
        };
        let basic_possible = matches!(client, Some((_, Some(_))));
        let style = self.learned.auth_style.load(Ordering::Relaxed);
        let first_basic = basic_possible && style != 2;
        let first = self.post(http, &form, client, first_basic).await?;
        let rsp = match first {
            Ok(t) => {
                if basic_possible {
                    self.learned
                        .auth_style
                        .store(if first_basic { 1 } else { 2 }, Ordering::Relaxed);
                }
                return Ok(t);
            }
            // An endpoint that refuses the client in the Basic header (400 or
            // 401 per RFC 6749 5.2; any 4xx, as some answer 403) may want it
            // in the form instead. One that fails (5xx) is not asked twice.
            Err(e) if first_basic && style == 0 && e.status.is_client_error() => {
                // The endpoint may want the client in the form instead.
                let second = self.post(http, &form, client, false).await?;
                match second {
                    Ok(t) => {
                        self.learned.auth_style.store(2, Ordering::Relaxed);
                        return Ok(t);
                    }
                    Err(_) => e,
                }
            }
            Err(e) => e,
        };
        // The endpoint's own text: it may echo what it was sent, the
        // token_endpoint_headers' values included.
        let mut scrub = self.scrubber(creds, rotated_refresh, &form);
        for (_, secret) in &self.endpoint_headers {
            if let Ok(v) = secret.get().await {
                scrub.add(v.expose());
            }
        }
        Err(MintError(scrub.peer_text(&rsp.detail)))
    }

    /// POSTs the token request; `Ok(Err(refusal))` is the endpoint's refusal.
    async fn post(
        &self,
        http: &HttpClient,
        form: &[(&str, String)],
        client: Option<(&str, Option<&str>)>,
        basic: bool,
    ) -> Result<Result<TokenResponse, Refusal>, MintError> {
        let mut extra = Vec::with_capacity(self.endpoint_headers.len());
        for (name, secret) in &self.endpoint_headers {
            let v = secret.get().await.map_err(|e| {
                MintError(format!(
                    "token_endpoint_headers {name} ({}): {e}",
                    secret.name()
                ))
            })?;
            let mut hv = HeaderValue::from_str(v.expose()).map_err(|_| {
                MintError(format!(
                    "token_endpoint_headers {name}: not a valid header value"
                ))
            })?;
            hv.set_sensitive(true);
            extra.push((name.clone(), hv));
        }
        let (req, body) = self.token_request(form, client, basic, extra)?;
        let req = req
            .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
            .map_err(|e| MintError(format!("building the token request: {e}")))?;
        exchange(http, self.endpoint.as_str(), req).await
    }

    /// The token request's head and form body.
    fn token_request(
        &self,
        form: &[(&str, String)],
        client: Option<(&str, Option<&str>)>,
        basic: bool,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<(http::request::Builder, Zeroizing<String>), MintError> {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        let mut req = Request::builder()
            .method("POST")
            .uri(self.endpoint.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json");
        match client {
            Some((id, Some(secret))) if basic => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let pair = Zeroizing::new(format!("{}:{}", enc(id), enc(secret)));
                let value = Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                ));
                let mut hv = HeaderValue::from_str(&value)
                    .map_err(|_| MintError("the client credentials are not header-safe".into()))?;
                hv.set_sensitive(true);
                req = req.header(AUTHORIZATION, hv);
            }
            Some((id, secret)) => {
                body.append_pair("client_id", id);
                if let Some(secret) = secret {
                    body.append_pair("client_secret", secret);
                }
            }
            None => {}
        }
        for (name, hv) in extra {
            req = req.header(name, hv);
        }
        Ok((req, Zeroizing::new(body.finish())))
    }

    /// The signed RFC 7523 assertion (RS256), as golang.org/x/oauth2/jwt builds it.
    fn assertion(&self, creds: &Creds, audience: &str) -> Result<Zeroizing<String>, MintError> {
        let now = unix_now();
        let mut claims = serde_json::json!({
            "iss": creds.get("issuer").unwrap_or(""),
            "sub": creds.get("subject").unwrap_or(""),
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        if !self.scopes.is_empty() {
            claims["scope"] = Value::from(self.scopes.join(" "));
        }
        sign_jwt(
            creds.get("private_key").unwrap_or(""),
            creds.get("private_key_id"),
            &claims,
        )
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A compact RS256 JWT over `claims`, signed with the PEM RSA key `pem`
/// (aws-lc-rs), with `kid` in the header when given.
pub(crate) fn sign_jwt(
    pem: &str,
    kid: Option<&str>,
    claims: &Value,
) -> Result<Zeroizing<String>, MintError> {
    let key = rsa_key(pem)?;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = Value::from(kid);
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &rng,
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| MintError("signing the JWT assertion failed".into()))?;
    Ok(Zeroizing::new(format!("{signing_input}.{}", b64(&sig))))
}

/// A token endpoint's refusal: its status, and its `error` and
/// `error_description` in words.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
}

/// Sends a token request to `endpoint`; `Ok(Err(refusal))` is the endpoint's
/// refusal, `Err` anything else. An error names the endpoint without its
/// user, password and query ([`crate::redact_url`]): it reaches the audit
/// record and the log.
pub(crate) async fn exchange(
    http: &HttpClient,
    endpoint: &str,
    req: Request<Full<Bytes>>,
) -> Result<Result<TokenResponse, Refusal>, MintError> {
    let shown = || crate::redact_url::for_log(endpoint);
    let (status, rsp) = tokio::time::timeout(EXCHANGE_TIMEOUT, http.send(req))
        .await
        .map_err(|_| {
            MintError(format!(
                "{}: no answer within {}s",
                shown(),
                EXCHANGE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| MintError(format!("{}: {e}", shown())))?;
    token_answer(status, &rsp)
}

/// A token endpoint's answer read: the token of a success, the `error` and
/// `error_description` of a refusal (the caller scrubs them of what it
/// sent), or why the answer is neither.
pub(crate) fn token_answer(
    status: StatusCode,
    rsp: &[u8],
) -> Result<Result<TokenResponse, Refusal>, MintError> {
    if !status.is_success() {
        #[derive(Deserialize)]
        struct OAuthError {
            error: Option<String>,
            error_description: Option<String>,
        }
        let detail = match serde_json::from_slice::<OAuthError>(rsp) {
            Ok(OAuthError {
                error: Some(e),
                error_description,
            }) => format!(
                "token endpoint {status}: {e}{}",
                error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            _ => format!("token endpoint {status}"),
        };
        return Ok(Err(Refusal { status, detail }));
    }
    let parsed: RawToken = serde_json::from_slice(rsp).map_err(|_| {
        MintError("the token endpoint's answer is not an OAuth2 token response".into())
    })?;
    let Some(access) = parsed.access_token.filter(|t| !t.is_empty()) else {
        return Err(MintError(
            "the token endpoint's answer has no access_token".into(),
        ));
    };
    check_minted(&access)?;
    Ok(Ok(TokenResponse {
        access_token: Zeroizing::new(access),
        expires_in: parsed.expires_in.as_deref().and_then(expires_in),
        // An empty one is no new token: the one held stays (golang.org/x/oauth2
        // keeps it too), rather than an empty refresh_token being sent next.
        refresh_token: parsed
            .refresh_token
            .filter(|r| !r.is_empty())
            .map(Zeroizing::new),
    }))
}

/// An answer's `expires_in` (a number, or a string of one), at most
/// [`MAX_EXPIRES_IN`]; a negative one means already expired: `1`, this
/// request only (0 and none mean "does not expire"). Read from the JSON
/// text: a number beyond f64 (`1e400`) would fail the whole answer's parse.
fn expires_in(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    let text = match serde_json::from_str::<String>(text) {
        Ok(s) => std::borrow::Cow::Owned(s),
        Err(_) => std::borrow::Cow::Borrowed(text),
    };
    let text = text.trim();
    // A fraction (`3599.5`) is rounded down, but one under a second (`0.5`,
    // or `1e-400`, which f64 reads as 0) is not zero, "does not expire": it
    // is this request only, as a negative one is. An infinity saturates.
    let n: i128 = match text.parse::<i128>() {
        Ok(n) => n,
        Err(_) => {
            let whole = text.parse::<f64>().ok().filter(|f| !f.is_nan())?.floor() as i128;
            let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
            let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
            match (whole, nonzero) {
                (0, true) if text.starts_with('-') => -1,
                (0, true) => 1,
                (whole, _) => whole,
            }
        }
    };
    Some(if n < 0 {
        1
    } else {
        u64::try_from(n).unwrap_or(u64::MAX).min(MAX_EXPIRES_IN)
    })
}

/// Refuses a minted access token that cannot be used: one that cannot go
/// in a header (a control character: the token would be cached and every
/// request refused until it expires, or for ever without `expires_in`), and
/// iron-proxy's own stub token: it means the token request reached an
/// iron-proxy token-endpoint stub (this proxy through some path the connector
/// could not see, or another iron-proxy in front), and injecting it upstream
/// would send a placeholder as if it were a credential.
pub(crate) fn check_minted(access_token: &str) -> Result<(), MintError> {
    if HeaderValue::from_str(access_token).is_err() {
        return Err(MintError(
            "the access token in the answer has a control character: it cannot be sent in a \
             header"
                .into(),
        ));
    }
    if access_token == STUB_TOKEN {
        return Err(MintError(
            "the token endpoint answered with iron-proxy's own stub token: the token request \
             reached an iron-proxy, not the real endpoint; set dns.upstream_resolver to a \
             resolver that answers with the endpoint's real address"
                .into(),
        ));
    }
    Ok(())
}

/// An RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub(crate) fn rsa_key(pem: &str) -> Result<aws_lc_rs::signature::RsaKeyPair, MintError> {
    use rustls_pki_types::PrivateKeyDer;
    let bad = || MintError("private_key is not a PEM RSA private key".into());
    let der = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|_| bad())?
        .ok_or_else(bad)?;
    match &der {
        PrivateKeyDer::Pkcs8(k) => {
            aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
        }
        PrivateKeyDer::Pkcs1(k) => aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(bad()),
    }
    .map_err(|_| bad())
}

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    expires_in: Option<Box<RawValue>>,
    refresh_token: Option<String>,
}

pub(crate) struct TokenResponse {
    pub(crate) access_token: Zeroizing<String>,
    pub(crate) expires_in: Option<u64>,
    pub(crate) refresh_token: Option<Zeroizing<String>>,
}

/// The token endpoint's stand-in answer.
pub(crate) fn stub_response() -> Response<Body> {
    let body = serde_json::json!({
        "access_token": STUB_TOKEN,
        "expires_in": 3600,
        "token_type": "Bearer",
    })
    .to_string();
    let mut rsp = Response::new(crate::body::full(body));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    rsp
}

#[async_trait]
impl Transform for OAuthToken {
    fn name(&self) -> &str {
        "oauth_token"
    }

    fn may_answer_host(&self, t: &crate::rules::Target<'_>) -> bool {
        self.entries.iter().any(|e| e.is_endpoint_host(t.host))
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if cx.method.is_empty() {
            return Ok(Verdict::Continue);
        }
        let path = req.uri().path().to_string();
        if self.entries.iter().any(|e| e.is_endpoint(cx, &path)) {
            cx.annotate("stubbed", "oauth2_token_endpoint");
            return Ok(Verdict::Stub(stub_response()));
        }
        let target = cx.target();
        let Some(entry) = self.entries.iter().find(|e| e.rules.applies(&target)) else {
            return Ok(Verdict::Continue);
        };
        // An earlier credential transform set this header: it wins, and no
        // token is minted for this request.
        if cx.is_credential_header(&entry.header) {
            cx.note_already_set(format!("header:{}", entry.header_written));
            return Ok(Verdict::Continue);
        }
        let grant = entry.grant.name();
        cx.annotate("grant", grant);
        let token = match entry.token(&self.http).await {
            Ok(t) => t,
            Err(MintError(detail)) => {
                let what = format!("OAuth2 token ({grant} grant)");
                return Ok(unavailable(cx, StatusCode::BAD_GATEWAY, &what, detail));
            }
        };
        let value = Zeroizing::new(format!("{}{}", entry.prefix, token.as_str()));
        inject(
            req,
            cx,
            &entry.header,
            &entry.header_written,
            &value,
            StatusCode::BAD_GATEWAY,
        )?;
        // The token alone (not the prefix) is what an echo hands back.
        let token = SecretValue::from(token);
        cx.note_secret_value(&token, "oauth_token", self.scrub_response_bodies);
        crate::transforms::wire_case::set_header_case(
            req,
            std::slice::from_ref(&entry.header_written),
        )
        .await;
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
