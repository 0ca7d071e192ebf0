//! The management API on `management.listen`: `POST /v1/reload` and `GET /v1/status`,
//! behind a bearer token read from the variable named by `management.api_key_env`.
//!
//! The API never runs unauthenticated: [`ApiKey::from_env`] fails when the
//! variable is unset or empty, and startup must then fail. The token is kept
//! only as its SHA-256 digest and compared in constant time.
//!
//! Reloads from the API, from SIGHUP ([`crate::ops::signals::spawn_reload_on_sighup`])
//! and from systemd's `ExecReload` (which sends SIGHUP) all go through one
//! [`ReloadController`], which runs one reload at a time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::ops::metrics::Metrics;
use crate::ops::signals;

#[cfg(test)]
mod tests;

/// Errors from the management API.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The token variable is unset or empty; the API refuses to run without a token.
    #[error("environment variable {var} is unset or empty: the management api needs a bearer token and will not run unauthenticated")]
    MissingApiKey {
        /// The variable named by `management.api_key_env`.
        var: String,
    },
    /// The token variable's value is not UTF-8 (it is not shown). Said so,
    /// rather than "unset", which would send its owner looking for a
    /// missing variable.
    #[error("environment variable {var} is not UTF-8: the management api needs a bearer token and will not run unauthenticated")]
    ApiKeyNotUtf8 {
        /// The variable named by `management.api_key_env`.
        var: String,
    },
    /// The listen address could not be bound.
    #[error("binding the management api to {addr}")]
    Bind {
        /// `management.listen`.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The bearer token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl ApiKey {
    /// Reads the token from the variable `var`.
    pub fn from_env(var: &str) -> Result<Self, ManagementError> {
        let value = match std::env::var(var) {
            Ok(v) => zeroize::Zeroizing::new(v),
            Err(std::env::VarError::NotPresent) => zeroize::Zeroizing::new(String::new()),
            Err(std::env::VarError::NotUnicode(raw)) => {
                // Wiped, not kept: the value is a credential all the same.
                drop(zeroize::Zeroizing::new(raw.into_encoded_bytes()));
                return Err(ManagementError::ApiKeyNotUtf8 {
                    var: var.to_string(),
                });
            }
        };
        Self::new(&value).ok_or_else(|| ManagementError::MissingApiKey {
            var: var.to_string(),
        })
    }

    /// A key from its value; `None` when empty.
    pub fn new(token: &str) -> Option<Self> {
        // As presented tokens are (`authenticate` trims them): a key read
        // from a file with a trailing newline still matches, and one of
        // spaces only is no key.
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        Some(ApiKey(Sha256::digest(token.as_bytes()).into()))
    }

    /// True when `presented` is the token. Comparing fixed-size digests in
    /// constant time hides both the content and the length of the token.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

/// The SHA-256 of the config file's bytes, in hex, as shown by `/v1/status`.
pub fn config_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a successful reload reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadSummary {
    /// SHA-256 of the config file that is now in force (see [`config_hash`]).
    pub config_hash: String,
    /// Anything else worth reporting (transform count, warnings); merged into the response.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// Re-reads the config file, builds everything, and swaps it in atomically,
/// or leaves the running state untouched and returns every error found.
#[async_trait::async_trait]
pub trait Reloader: Send + Sync + 'static {
    /// Performs one reload.
    async fn reload(&self) -> Result<ReloadSummary, Vec<String>>;
}

/// A [`Reloader`] from an async closure.
pub struct FnReloader<F>(pub F);

#[async_trait::async_trait]
impl<F, Fut> Reloader for FnReloader<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ReloadSummary, Vec<String>>> + Send,
{
    async fn reload(&self) -> Result<ReloadSummary, Vec<String>> {
        (self.0)().await
    }
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /v1/reload`.
    Api,
    /// SIGHUP (also systemd `ExecReload`).
    Signal,
}

impl Trigger {
    /// As `/v1/status` names it, and so the log too.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Signal => "signal",
        }
    }
}

/// The outcome of the last reload, for `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// `success` or `failure`.
    pub result: &'static str,
    /// What asked for it.
    pub trigger: Trigger,
    /// RFC 3339 time it finished.
    pub at: String,
    /// Errors, for a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The body of `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Crate version.
    pub version: &'static str,
    /// SHA-256 of the config file in force.
    pub config_hash: String,
    /// RFC 3339 start time of the process.
    pub started_at: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The last reload, if any happened.
    pub last_reload: Option<ReloadOutcome>,
}

struct Current {
    config_hash: String,
    last: Option<ReloadOutcome>,
}

/// Runs reloads one at a time and remembers the last outcome.
pub struct ReloadController {
    reloader: Arc<dyn Reloader>,
    serial: tokio::sync::Mutex<()>,
    current: Mutex<Current>,
    metrics: Option<Arc<Metrics>>,
    started: Instant,
    started_at: String,
}

impl ReloadController {
    /// A controller for the config loaded at startup, whose hash is `initial_config_hash`.
    pub fn new(
        reloader: Arc<dyn Reloader>,
        initial_config_hash: String,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        Arc::new(ReloadController {
            reloader,
            serial: tokio::sync::Mutex::new(()),
            current: Mutex::new(Current {
                config_hash: initial_config_hash,
                last: None,
            }),
            metrics,
            started: Instant::now(),
            started_at: crate::audit::now_rfc3339(),
        })
    }

    /// Performs a reload after any running one has finished. The reload runs in
    /// its own task, so a client that hangs up cannot cancel it halfway.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Result<ReloadSummary, Vec<String>> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _one_at_a_time = this.serial.lock().await;
            signals::notify_reloading();
            let result = this.reloader.reload().await;
            this.finish(trigger, &result);
            signals::notify_ready();
            result
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(vec![format!("reload task failed: {e}")]),
        }
    }

    fn finish(&self, trigger: Trigger, result: &Result<ReloadSummary, Vec<String>>) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (outcome, errors) = match result {
            Ok(s) => {
                cur.config_hash = s.config_hash.clone();
                let transforms = s.details.get("transforms").and_then(Value::as_u64);
                let secrets_reread = s.details.get("secrets_reread").and_then(Value::as_u64);
                tracing::info!(trigger = trigger.as_str(), config_hash = %s.config_hash, transforms, secrets_reread, "configuration reloaded");
                ("success", Vec::new())
            }
            Err(errors) => {
                // One line per error, each a plain string a log pipeline
                // can read (a Debug list came out as one escaped string).
                tracing::warn!(
                    trigger = trigger.as_str(),
                    errors = errors.len(),
                    "configuration reload failed; keeping the running configuration"
                );
                for e in errors {
                    tracing::warn!(trigger = trigger.as_str(), error = %e, "configuration reload error");
                }
                ("failure", errors.clone())
            }
        };
        cur.last = Some(ReloadOutcome {
            result: outcome,
            trigger,
            at: crate::audit::now_rfc3339(),
            errors,
        });
        if let Some(m) = &self.metrics {
            m.reload_finished(result.is_ok());
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        Status {
            version: env!("CARGO_PKG_VERSION"),
            config_hash: cur.config_hash.clone(),
            started_at: self.started_at.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            last_reload: cur.last.clone(),
        }
    }
}

#[derive(Clone)]
struct Api {
    controller: Arc<ReloadController>,
    key: ApiKey,
}

/// Routes the API, with every route (and every 404 and 405) behind the token.
pub fn router(controller: Arc<ReloadController>, key: ApiKey) -> Router {
    let api = Api { controller, key };
    let routes = Router::new()
        .route("/v1/reload", post(reload))
        .route("/v1/status", get(status))
        .with_state(api.clone());
    // Authentication wraps the routing itself: a layer on the routes would
    // run inside each route's method router, whose 405 handling adds `Allow`
    // to the 401, telling a caller without the token which routes exist.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(api, authenticate))
}

/// Unauthorized requests are warned about at most this often.
static UNAUTHORIZED: crate::ops::warn_every::WarnEvery =
    crate::ops::warn_every::WarnEvery::new(std::time::Duration::from_secs(10));
/// The longest request path a warning quotes, in characters.
const MAX_LOGGED_PATH: usize = 256;

async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if api.key.verify(token.as_bytes()) => next.run(req).await,
        presented => {
            // Anyone who reaches the port can send these: one line per
            // 10 s, with the count held back and the path cut short.
            if let Some(held_back) = UNAUTHORIZED.due(std::time::Instant::now()) {
                let path = req.uri().path();
                let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
                    Some((at, _)) => format!("{}...", &path[..at]),
                    None => path.to_string(),
                };
                tracing::warn!(
                    path,
                    token_present = presented.is_some(),
                    unauthorized_since_last_warning = held_back,
                    "management api: unauthorized request"
                );
            }
            let challenge = if presented.is_some() {
                r#"Bearer realm="iron-proxy", error="invalid_token""#
            } else {
                r#"Bearer realm="iron-proxy""#
            };
            let mut rsp = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthorized"})),
            )
                .into_response();
            rsp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            rsp
        }
    }
}

async fn reload(State(api): State<Api>) -> Response {
    match api.controller.reload(Trigger::Api).await {
        Ok(summary) => {
            let mut body = match serde_json::to_value(&summary) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            body.insert("status".into(), "reloaded".into());
            (StatusCode::OK, Json(Value::Object(body))).into_response()
        }
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "errors": errors })),
        )
            .into_response(),
    }
}

async fn status(State(api): State<Api>) -> Json<Status> {
    Json(api.controller.status())
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    controller: Arc<ReloadController>,
    key: ApiKey,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ManagementError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "management api listening");
    }
    crate::ops::serve::serve(listener, router(controller, key), "management", shutdown).await;
    Ok(())
}

/// Startup in one call: reads the token from `api_key_env` (failing before
/// anything is bound when it is missing), binds `listen` and serves in a task.
/// Returns the bound address and the server task.
pub fn start(
    listen: std::net::SocketAddr,
    api_key_env: &str,
    controller: Arc<ReloadController>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), ManagementError>>,
    ),
    ManagementError,
> {
    let key = ApiKey::from_env(api_key_env)?;
    let bind_err = |source| ManagementError::Bind {
        addr: listen,
        source,
    };
    let listener = crate::ops::bind(listen).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok((
        addr,
        tokio::spawn(serve(listener, controller, key, shutdown)),
    ))
}
