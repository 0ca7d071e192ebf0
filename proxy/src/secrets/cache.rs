//! The per-source cache: single-flight fetches, background refresh, and what
//! happens when the backend fails.
//!
//! - **Never fetched.** The first [`Cached::get`] fetches (concurrent callers
//!   wait for the same fetch). If that fails, the error is remembered for
//!   [`FAILURE_CACHE`] and every request in that window fails at once with it
//!   (the `secrets` transform then refuses the request: fail closed); the next
//!   request after the window tries the backend again.
//! - **Fetched.** The value is served from memory. With a non-zero `ttl` a
//!   background task re-fetches every `ttl`. A failed refresh keeps the last
//!   good value in service and retries with exponential backoff from
//!   [`RETRY_MIN`] up to `min(ttl, RETRY_MAX)`; each failure is logged at WARN.
//!   There is no hard staleness limit: a stale credential is at worst refused
//!   by the upstream, while dropping it would refuse every request.
//! - **`ttl: 0`.** Read once, kept for the life of the source.
//!
//! The refresh task holds only a weak reference, so it ends when the source is
//! dropped (for example when a reload removes it).
//!
//! Every failed backend fetch (first fetch or refresh, not the requests
//! answered from a remembered failure) is reported to the registry's
//! [`FailureHook`], with the source type, for
//! `iron_proxy_secret_resolution_failures_total`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{FailureHook, Fetch, SecretError, SecretValue};

/// How long a failed first fetch is remembered before the backend is asked again.
pub const FAILURE_CACHE: Duration = Duration::from_secs(5);
/// The longest a single fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed refresh.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay after failed refreshes.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// One source's cached value.
pub struct Cached {
    name: String,
    /// Source type (`env`, `aws_sm`, ...) for the failure hook.
    kind: &'static str,
    on_failure: Option<FailureHook>,
    fetcher: Box<dyn Fetch>,
    ttl: Duration,
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    value: Option<SecretValue>,
    failure: Option<(SecretError, Instant)>,
    refreshing: bool,
}

impl Cached {
    /// A cache over `fetcher`, refreshed every `ttl` (zero: never).
    pub fn new(name: String, fetcher: Box<dyn Fetch>, ttl: Duration) -> Arc<Self> {
        Self::with_failure_hook(name, fetcher, ttl, "", None)
    }

    /// [`Cached::new`] that reports each failed fetch to `on_failure` with `kind`.
    pub fn with_failure_hook(
        name: String,
        fetcher: Box<dyn Fetch>,
        ttl: Duration,
        kind: &'static str,
        on_failure: Option<FailureHook>,
    ) -> Arc<Self> {
        Arc::new(Cached {
            name,
            kind,
            on_failure,
            fetcher,
            ttl,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still coherent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value, fetching it first if it never was.
    pub async fn get(self: &Arc<Self>) -> Result<SecretValue, SecretError> {
        if let Some(v) = self.fast_path()? {
            return Ok(v);
        }
        let _flight = self.flight.lock().await;
        if let Some(v) = self.fast_path()? {
            return Ok(v);
        }
        match self.fetch_once().await {
            Ok(v) => {
                let start_refresh = {
                    let mut st = self.state();
                    st.value = Some(v.clone());
                    st.failure = None;
                    let start = !self.ttl.is_zero() && !st.refreshing;
                    st.refreshing |= start;
                    start
                };
                tracing::debug!(secret = %self.name, "secret fetched");
                if start_refresh {
                    spawn_refresh(Arc::downgrade(self), self.ttl);
                }
                Ok(v)
            }
            Err(e) => {
                tracing::warn!(secret = %self.name, error = %e, retry_after = ?FAILURE_CACHE, "secret fetch failed");
                self.state().failure = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    /// Starts the first fetch in the background (needs a Tokio runtime; a no-op without one).
    pub fn prefetch(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.get().await;
        });
    }

    /// The cached value, the cached failure, or `None` when a fetch is due.
    fn fast_path(&self) -> Result<Option<SecretValue>, SecretError> {
        let st = self.state();
        if let Some(v) = &st.value {
            return Ok(Some(v.clone()));
        }
        if let Some((e, at)) = &st.failure {
            if at.elapsed() < FAILURE_CACHE {
                return Err(e.clone());
            }
        }
        Ok(None)
    }

    async fn fetch_once(&self) -> Result<SecretValue, SecretError> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetcher.fetch()).await {
            Ok(Ok(v)) if v.is_empty() => Err(SecretError::Empty),
            Ok(r) => r,
            Err(_) => Err(SecretError::Timeout(FETCH_TIMEOUT)),
        };
        if result.is_err() {
            if let Some(hook) = &self.on_failure {
                hook(self.kind);
            }
        }
        result
    }
}

/// Re-fetches every `ttl` while the source lives; failures keep the old value.
fn spawn_refresh(weak: std::sync::Weak<Cached>, ttl: Duration) {
    tokio::spawn(async move {
        let max_retry = ttl.clamp(RETRY_MIN, RETRY_MAX);
        let mut delay = ttl;
        let mut failures: u32 = 0;
        loop {
            tokio::time::sleep(delay).await;
            let Some(me) = weak.upgrade() else { return };
            match me.fetch_once().await {
                Ok(v) => {
                    let mut st = me.state();
                    if st.value.as_ref() != Some(&v) {
                        tracing::info!(secret = %me.name, "secret value changed on refresh");
                    }
                    st.value = Some(v);
                    delay = ttl;
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    delay = RETRY_MIN
                        .saturating_mul(1 << failures.min(16).saturating_sub(1))
                        .min(max_retry);
                    tracing::warn!(secret = %me.name, error = %e, retry_in = ?delay,
                        "secret refresh failed; serving the last good value");
                }
            }
        }
    });
}
