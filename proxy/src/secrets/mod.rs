//! Secret sources: where credential values come from (`source:` blocks), and
//! the cache that keeps them fresh.
//!
//! Every source is fetched lazily, the first time a request needs it, unless
//! the [`Sources`] registry was built with prefetching on (the running proxy
//! does that, so values are usually fetched at startup, before traffic). A
//! source with a non-zero `ttl` is then refreshed in the background every
//! `ttl`; `ttl: 0` reads once. See [`cache`] for the failure semantics: the
//! last good value is served while refreshes fail, failures are retried with
//! backoff, and a source that has never produced a value fails requests fast
//! for [`cache::FAILURE_CACHE`] before trying its backend again.
//!
//! Values are [`SecretValue`]s: zeroized on drop, printed as `***`. Errors
//! ([`SecretError`]) carry names and backend messages, never values.

pub mod aws;
pub mod body_scrub;
pub mod cache;
pub mod env;
pub mod http;
pub mod onepassword;
pub mod scrub;
pub mod stage;
pub mod value;

use std::any::Any;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use zeroize::{Zeroize, Zeroizing};

pub use crate::config::{OpRef, SecretSourceConfig};
pub use cache::Cached;
pub use stage::{Committed, Staged};
pub use value::SecretValue;

/// Why a secret could not be resolved. Never contains the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// An environment variable the source reads is unset or empty.
    #[error("environment variable {0} is not set or empty")]
    EnvMissing(String),
    /// The value is not a JSON object holding `json_key` as a string.
    #[error("json_key {key:?}: {reason}")]
    JsonKey {
        /// The configured key.
        key: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// The backend refused or failed.
    #[error("{backend}: {detail}")]
    Backend {
        /// `aws_sm`, `aws_ssm`, `1password`, `1password_connect`.
        backend: &'static str,
        /// The backend's message (status, error type), never a value.
        detail: String,
    },
    /// The source resolved to an empty string.
    #[error("resolved to an empty value")]
    Empty,
    /// The fetch did not finish in time.
    #[error("fetch timed out after {0:?}")]
    Timeout(Duration),
}

/// Fetches the current raw value of one source (before `json_key`).
#[async_trait]
pub trait Fetch: Send + Sync {
    /// One fetch from the backend.
    async fn fetch(&self) -> Result<SecretValue, SecretError>;
}

/// How sources read the process environment: the real one, or a fixed map in tests.
#[derive(Clone, Default)]
pub enum EnvLookup {
    /// `std::env`.
    #[default]
    Process,
    /// A fixed map (tests).
    Fixed(Arc<HashMap<String, String>>),
}

impl EnvLookup {
    /// The variable's value, if set.
    pub fn var(&self, name: &str) -> Option<String> {
        match self {
            EnvLookup::Process => std::env::var(name).ok(),
            EnvLookup::Fixed(m) => m.get(name).cloned(),
        }
    }

    /// The variable's value as a secret, if set and non-empty.
    pub fn secret(&self, name: &str) -> Option<SecretValue> {
        self.var(name)
            .filter(|v| !v.is_empty())
            .map(SecretValue::new)
    }

    /// The variable as an OS string (for child processes).
    pub fn os_var(&self, name: &str) -> Option<OsString> {
        match self {
            EnvLookup::Process => std::env::var_os(name),
            EnvLookup::Fixed(m) => m.get(name).map(OsString::from),
        }
    }
}

/// Called with the source type (`env`, `aws_sm`, `aws_ssm`, `1password`,
/// `1password_connect`) each time a backend fetch fails; the running proxy
/// points it at `Metrics::secret_resolution_failed`. Must be quick.
pub type FailureHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Options of a [`Sources`] registry.
#[derive(Clone, Default)]
pub struct SourcesOptions {
    /// Start fetching each new source immediately (in the background) instead
    /// of on first use. Needs a Tokio runtime when sources are created.
    pub prefetch: bool,
    /// The environment sources read.
    pub env: EnvLookup,
    /// AWS settings that replace the default chain (tests).
    pub aws: aws::AwsOverrides,
    /// Told about every failed backend fetch (metrics).
    pub on_fetch_failure: Option<FailureHook>,
    /// How backend calls resolve names and which addresses they refuse: the
    /// running proxy passes the data plane's resolver and its own listeners.
    pub backend: http::BackendNet,
}

/// Builds [`Secret`]s from `source:` configs and shares what can be shared:
/// one cache per distinct backend value (several `json_key`s of one AWS secret
/// cost one fetch), one AWS config, one HTTP client. Keep one registry for the
/// life of the process: a config reload that keeps a source (the same
/// backend and names; its `ttl` may change) reuses its cached value instead
/// of fetching again, and a transform's run-time state kept with
/// [`Sources::keep`] carries over the same way. Dropped sources stop
/// refreshing.
#[derive(Clone)]
pub struct Sources {
    inner: Arc<SourcesInner>,
    /// The build this handle stages ([`Sources::stage`]): what its sources
    /// ask for waits for [`Staged::commit`].
    stage: Option<Arc<stage::Stage>>,
}

struct SourcesInner {
    opts: SourcesOptions,
    caches: Mutex<HashMap<String, Weak<Cached>>>,
    /// [`Sources::keep`]'s states, by key.
    kept: Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>,
    /// The config build in progress ([`Sources::next_build`]).
    build: AtomicU64,
    aws: aws::AwsShared,
    http: http::HttpClient,
}

impl Default for Sources {
    fn default() -> Self {
        Sources::new(SourcesOptions::default())
    }
}

impl Sources {
    /// A registry with `opts`.
    pub fn new(opts: SourcesOptions) -> Self {
        let http = http::HttpClient::with_net(opts.backend.clone());
        Sources {
            inner: Arc::new(SourcesInner {
                aws: aws::AwsShared::new(opts.aws.clone(), http.clone(), opts.env.clone()),
                http,
                opts,
                caches: Mutex::new(HashMap::new()),
                kept: Mutex::new(HashMap::new()),
                build: AtomicU64::new(0),
            }),
            stage: None,
        }
    }

    /// The environment sources read.
    pub fn env(&self) -> &EnvLookup {
        &self.inner.opts.env
    }

    /// The HTTP client secret backends use (system roots, TLS on aws-lc-rs,
    /// the data plane's resolver, the proxy's own listeners refused), for
    /// other calls the proxy makes on its own behalf (OAuth2 token endpoints,
    /// Google token mints, the judge's provider).
    pub fn http_client(&self) -> http::HttpClient {
        self.inner.http.clone()
    }

    /// The AWS default credential chain (environment, shared files, web
    /// identity, ECS, IMDSv2), for `aws_auth`'s workload identity: the
    /// registry's own, or one whose region discovery `region` overrides.
    pub fn aws_chain(&self, region: Option<String>) -> aws::AwsShared {
        match region {
            None => self.inner.aws.clone(),
            Some(r) => aws::AwsShared::new(
                aws::AwsOverrides {
                    credentials: self.inner.opts.aws.credentials.clone(),
                    region: Some(r),
                },
                self.inner.http.clone(),
                self.inner.opts.env.clone(),
            ),
        }
    }

    /// Starts a config build whose effects on the sources wait for its
    /// commit: build the policy with [`Staged::sources`], then call
    /// [`Staged::commit`] once the policy is in force. Until then no
    /// backend is contacted for the build (no prefetch of a source it adds)
    /// and the sources it keeps run as the config in force asks (their
    /// `ttl`); a build dropped uncommitted (a reload refused after the
    /// policy was built) has changed nothing. The commit applies this
    /// config's `ttl`s (a source named twice refreshes at the shorter one),
    /// starts the first fetch of the sources without a value, and re-reads
    /// those with one ([`Cached::reread`]).
    pub fn stage(&self) -> Staged {
        Staged::new(Sources {
            inner: self.inner.clone(),
            stage: Some(Arc::default()),
        })
    }

    /// Starts building a new config outside [`Sources::stage`] (tests): the
    /// `ttl`s the sources named from here on ask for replace those of the
    /// last build. Within one build, a source named twice refreshes at the
    /// shorter `ttl`.
    pub fn next_build(&self) {
        self.inner.build.fetch_add(1, Ordering::Relaxed);
    }

    /// A handle on the value `cfg` describes. No I/O happens here unless
    /// prefetching is on, and then only in the background. A source already
    /// cached (the config in force names it too) is shared, value and all;
    /// its refresh interval becomes `cfg`'s `ttl`. In a staged build
    /// ([`Sources::stage`]) neither happens before the commit.
    pub fn secret(&self, cfg: &SecretSourceConfig) -> Secret {
        self.secret_from(cfg, || self.fetcher(cfg))
    }

    /// [`Sources::secret`] with the fetcher `make` returns when the source
    /// is not cached yet (tests script backends this way).
    pub(crate) fn secret_from(
        &self,
        cfg: &SecretSourceConfig,
        make: impl FnOnce() -> Box<dyn Fetch>,
    ) -> Secret {
        let (key, name) = identity(cfg);
        let ttl = cfg.ttl().get();
        let mut caches = self.inner.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|_, w| w.strong_count() > 0);
        let (cached, new) = match caches.get(&key).and_then(Weak::upgrade) {
            Some(c) => (c, false),
            None => {
                let c = Cached::keyed(
                    key.clone(),
                    name.clone(),
                    make(),
                    ttl,
                    source_type(cfg),
                    self.inner.opts.on_fetch_failure.clone(),
                );
                caches.insert(key, Arc::downgrade(&c));
                (c, true)
            }
        };
        drop(caches);
        match &self.stage {
            Some(stage) => stage.name(&cached, ttl),
            None => {
                cached.set_ttl(ttl, self.inner.build.load(Ordering::Relaxed));
                if new && self.inner.opts.prefetch {
                    cached.prefetch();
                }
            }
        }
        Secret {
            name,
            cached,
            json_key: cfg.json_key().map(str::to_string),
        }
    }

    /// How long the value each live source serves has been stale: since
    /// the first refresh (or re-read after a reload) that failed with no
    /// success after it; zero for a fresh one, and for one never fetched
    /// (which serves nothing: its requests fail). By source type and name
    /// (the variable, secret id, parameter name or `op://` reference; the
    /// longest of several sources that share both). Never a value.
    pub fn staleness(&self) -> Vec<(&'static str, String, Duration)> {
        let caches: Vec<Arc<Cached>> = {
            let caches = self.inner.caches.lock().unwrap_or_else(|p| p.into_inner());
            caches.values().filter_map(Weak::upgrade).collect()
        };
        let mut out: Vec<(&'static str, String, Duration)> = Vec::new();
        for c in caches {
            let stale = c.stale_for();
            match out
                .iter_mut()
                .find(|(k, n, _)| *k == c.kind() && n == c.name())
            {
                Some(found) => found.2 = found.2.max(stale),
                None => out.push((c.kind(), c.name().to_string(), stale)),
            }
        }
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }

    /// Whether new sources are fetched at once rather than on first use.
    fn prefetches(&self) -> bool {
        self.inner.opts.prefetch
    }

    /// The build number a commit applies its `ttl`s under.
    fn take_build(&self) -> u64 {
        self.inner.build.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// State that outlives the transform holding it across reloads: the
    /// `T` stored under `key` while something still holds it, else a new one
    /// from `make`. A transform that keeps what it learned at run time (an
    /// OAuth2 refresh token the endpoint rotated to) takes it from here, so
    /// that the same entry rebuilt by a reload (whose new policy is built
    /// while the old one still serves) carries on where the old one was.
    /// Only weak references are kept here: the state goes with the last
    /// policy that uses it, and dead keys are pruned on each call.
    pub fn keep<T: Send + Sync + 'static>(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut kept = self.inner.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|_, w| w.strong_count() > 0);
        if let Some(found) = kept
            .get(key)
            .and_then(Weak::upgrade)
            .and_then(|any| any.downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(make());
        let any: Arc<dyn Any + Send + Sync> = made.clone();
        kept.insert(key.to_string(), Arc::downgrade(&any));
        made
    }

    /// A [`Sources::keep`] key: `kind` and a SHA-256 over `parts`, each
    /// ended by a NUL. The parts are names and URLs, never a value; hashed
    /// all the same, as a URL may carry a query the operator considers
    /// private.
    pub fn keep_key(kind: &str, parts: &[String]) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        let digest: [u8; 32] = h.finalize().into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{kind}/{hex}")
    }

    /// How many [`Sources::keep`] states are alive (tests).
    #[cfg(test)]
    pub(crate) fn kept_count(&self) -> usize {
        let kept = self.inner.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.values().filter(|w| w.strong_count() > 0).count()
    }

    fn fetcher(&self, cfg: &SecretSourceConfig) -> Box<dyn Fetch> {
        let env = self.inner.opts.env.clone();
        match cfg {
            SecretSourceConfig::Env { var, .. } => Box::new(env::EnvSource::new(var.clone(), env)),
            SecretSourceConfig::AwsSm {
                secret_id, region, ..
            } => Box::new(aws::SecretsManager::new(
                self.inner.aws.clone(),
                secret_id.clone(),
                region.clone(),
            )),
            SecretSourceConfig::AwsSsm {
                name,
                region,
                with_decryption,
                ..
            } => Box::new(aws::ParameterStore::new(
                self.inner.aws.clone(),
                name.clone(),
                region.clone(),
                *with_decryption,
            )),
            SecretSourceConfig::OnePassword {
                secret_ref,
                token_env,
                ..
            } => Box::new(onepassword::OpCli::new(
                secret_ref.clone(),
                token_env.clone(),
                env,
            )),
            SecretSourceConfig::OnePasswordConnect {
                secret_ref,
                host_env,
                token_env,
                ..
            } => Box::new(onepassword::Connect::new(
                secret_ref.clone(),
                host_env.clone(),
                token_env.clone(),
                env,
                self.inner.http.clone(),
            )),
        }
    }
}

/// The `type:` of a source, as written in the config.
fn source_type(cfg: &SecretSourceConfig) -> &'static str {
    match cfg {
        SecretSourceConfig::Env { .. } => "env",
        SecretSourceConfig::AwsSm { .. } => "aws_sm",
        SecretSourceConfig::AwsSsm { .. } => "aws_ssm",
        SecretSourceConfig::OnePassword { .. } => "1password",
        SecretSourceConfig::OnePasswordConnect { .. } => "1password_connect",
    }
}

/// The cache key and the audit name of a source. The key is what selects the
/// value read, and only that: the source without `json_key` (several keys of
/// one JSON value share a fetch) and without `ttl` (how often it is read
/// again; a reload that changes only that keeps the cache and its value,
/// [`Cached::set_ttl`]). `region`, `with_decryption`, `token_env` and
/// `host_env` stay: another region is another secret, an undecrypted
/// SecureString another value, another token another account's vaults and
/// another host another Connect server. Names and references only, never a
/// value.
fn identity(cfg: &SecretSourceConfig) -> (String, String) {
    match cfg {
        SecretSourceConfig::Env { var, .. } => (format!("env:{var}"), var.clone()),
        SecretSourceConfig::AwsSm {
            secret_id, region, ..
        } => (format!("aws_sm:{region:?}:{secret_id}"), secret_id.clone()),
        SecretSourceConfig::AwsSsm {
            name,
            region,
            with_decryption,
            ..
        } => (
            format!("aws_ssm:{region:?}:{with_decryption}:{name}"),
            name.clone(),
        ),
        SecretSourceConfig::OnePassword {
            secret_ref,
            token_env,
            ..
        } => (
            format!("1password:{token_env}:{secret_ref}"),
            secret_ref.to_string(),
        ),
        SecretSourceConfig::OnePasswordConnect {
            secret_ref,
            host_env,
            token_env,
            ..
        } => (
            format!("1password_connect:{host_env}:{token_env}:{secret_ref}"),
            secret_ref.to_string(),
        ),
    }
}

/// A configured secret: a shared cache plus the optional `json_key`.
#[derive(Clone)]
pub struct Secret {
    name: String,
    cached: Arc<Cached>,
    json_key: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("json_key", &self.json_key)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The source's identifier as shown in audit records: the variable name
    /// for `env`, `secret_id` for `aws_sm`, `name` for `aws_ssm`, the
    /// `op://` reference for the 1Password sources.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What selects this value, without the value: the source's type and
    /// names (variable, secret id, region, `op://` reference, ...) and its
    /// `json_key`; the same for the same source in any config build, so
    /// state made from it can be recognised after a reload. Never a value.
    pub fn identity(&self) -> String {
        match &self.json_key {
            Some(k) => format!("{}#{k}", self.cached.key()),
            None => self.cached.key().to_string(),
        }
    }

    /// The current value (from the cache, fetching it if it never was).
    pub async fn get(&self) -> Result<SecretValue, SecretError> {
        let raw = self.cached.get().await?;
        match &self.json_key {
            None => Ok(raw),
            Some(key) => extract_json_key(&raw, key),
        }
    }

    /// A secret with a fixed value, for tests and for callers that already hold one.
    pub fn fixed(name: &str, value: &str) -> Secret {
        Secret {
            name: name.to_string(),
            cached: Cached::new(
                name.to_string(),
                Box::new(FixedFetch(SecretValue::new(value.to_string()))),
                Duration::ZERO,
            ),
            json_key: None,
        }
    }

    /// A secret over any fetcher (tests, other transforms' own backends).
    pub fn from_fetch(name: &str, fetch: Box<dyn Fetch>, ttl: Duration) -> Secret {
        Secret {
            name: name.to_string(),
            cached: Cached::new(name.to_string(), fetch, ttl),
            json_key: None,
        }
    }
}

struct FixedFetch(SecretValue);

#[async_trait]
impl Fetch for FixedFetch {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        Ok(self.0.clone())
    }
}

/// Parses `raw` as a JSON object and returns its string field `key`. The
/// parsed copy of the other fields is wiped before it is freed.
pub fn extract_json_key(raw: &SecretValue, key: &str) -> Result<SecretValue, SecretError> {
    let err = |reason: &str| SecretError::JsonKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let mut doc: serde_json::Value =
        serde_json::from_str(raw.expose()).map_err(|_| err("the value is not valid JSON"))?;
    let out = match doc.as_object_mut() {
        None => Err(err("the value is not a JSON object")),
        Some(obj) => match obj.get_mut(key) {
            None => Err(err("no such key in the JSON value")),
            Some(serde_json::Value::String(s)) => {
                Ok(SecretValue::from(Zeroizing::new(std::mem::take(s))))
            }
            Some(_) => Err(err("the field is not a string")),
        },
    };
    wipe(&mut doc);
    let v = out?;
    if v.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(v)
}

fn wipe(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests;
