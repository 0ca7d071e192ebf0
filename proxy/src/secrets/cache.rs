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
//! - **`ttl: 0`.** Read once, kept for the life of the source; a reload
//!   that keeps the source reads it again ([`Cached::reread`]).
//! - **Stale.** A value whose refresh (or re-read after a reload) failed,
//!   with no success since, is stale from that failure on
//!   ([`Cached::stale_for`], the `iron_proxy_secret_stale_seconds` gauge).
//!
//! The refresh task holds only a weak reference, so it ends when the source is
//! dropped (for example when a reload removes it). A reload that keeps the
//! source but changes its `ttl` changes the interval of the running cache
//! ([`Cached::set_ttl`]): the value, and the refresh schedule, carry on.
//!
//! Every failed backend fetch (first fetch or refresh, not the requests
//! answered from a remembered failure) is reported to the registry's
//! [`FailureHook`], with the source type, for
//! `iron_proxy_secret_resolution_failures_total`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
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
    /// What selects the value ([`Cached::key`]).
    key: String,
    /// Source type (`env`, `aws_sm`, ...) for the failure hook.
    kind: &'static str,
    on_failure: Option<FailureHook>,
    fetcher: Box<dyn Fetch>,
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
    /// Wakes the refresh task when the `ttl` changes. Its own `Arc`: the
    /// task waits on it without keeping the cache alive.
    retune: Arc<Notify>,
}

#[derive(Default)]
struct State {
    value: Option<SecretValue>,
    failure: Option<(SecretError, Instant)>,
    refreshing: bool,
    /// The refresh interval (zero: never).
    ttl: Duration,
    /// The build ([`super::Sources::next_build`]) that last set `ttl`.
    ttl_build: u64,
    /// Since when the value served is stale: the first failed refresh or
    /// re-read after the last good fetch.
    stale_since: Option<Instant>,
    /// Fetches started so far: each fetch's ticket is its number, so that
    /// one that ends after a later one (a slow re-read overtaken by a
    /// refresh) neither replaces the later one's value nor marks it stale.
    tickets: u64,
    /// The ticket of the fetch whose value is served.
    served: u64,
    /// A re-read is in flight ([`Cached::reread`]).
    rereading: bool,
    /// Another reload asked for a re-read while one was in flight: one more
    /// runs after it, however many asked.
    reread_again: bool,
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
        Self::keyed(
            format!("fetch:{name}"),
            name,
            fetcher,
            ttl,
            kind,
            on_failure,
        )
    }

    /// [`Cached::with_failure_hook`] for the source `key` names (the
    /// registry's cache key: type, names, region; never a value).
    pub fn keyed(
        key: String,
        name: String,
        fetcher: Box<dyn Fetch>,
        ttl: Duration,
        kind: &'static str,
        on_failure: Option<FailureHook>,
    ) -> Arc<Self> {
        Arc::new(Cached {
            name,
            key,
            kind,
            on_failure,
            fetcher,
            state: Mutex::new(State {
                ttl,
                ..State::default()
            }),
            flight: tokio::sync::Mutex::new(()),
            retune: Arc::new(Notify::new()),
        })
    }

    /// What selects the value: the source's type and names (variable,
    /// secret id, region, `op://` reference, ...), not its `ttl` or
    /// `json_key`. Never a value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The source's name (variable, secret id, `op://` reference).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's type (`env`, `aws_sm`, ...; empty outside the registry).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// How long the value served has been stale: since the first refresh
    /// or re-read that failed after the last good fetch; zero when fresh
    /// or never fetched.
    pub fn stale_for(&self) -> Duration {
        self.state()
            .stale_since
            .map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Fetches the value again now, in the background, if there is one
    /// (a committed reload that keeps this source): the old value serves
    /// until the new one is in; a failure keeps it, logs a warning naming
    /// the source and makes it stale. One re-read runs at a time: reloads
    /// that ask while one is in flight get a single one more after it (a
    /// burst of reloads against a slow backend does not pile up fetches).
    /// Returns whether a re-read started or was queued (no value yet, or no
    /// Tokio runtime: nothing to re-read).
    pub fn reread(self: &Arc<Self>) -> bool {
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        {
            let mut st = self.state();
            if st.value.is_none() {
                return false;
            }
            if st.rereading {
                st.reread_again = true;
                return true;
            }
            st.rereading = true;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let ticket = me.ticket();
                match me.fetch_once().await {
                    Ok(v) => me.store(
                        v,
                        ticket,
                        "secret value changed on re-read after the reload",
                    ),
                    Err(e) => {
                        me.mark_stale(ticket);
                        tracing::warn!(secret = %me.name, error = %e,
                            "re-reading the secret after the reload failed; serving the last good value");
                    }
                }
                let mut st = me.state();
                if !std::mem::take(&mut st.reread_again) {
                    st.rereading = false;
                    return;
                }
            }
        });
        true
    }

    /// The ticket of a fetch starting now.
    fn ticket(&self) -> u64 {
        let mut st = self.state();
        st.tickets += 1;
        st.tickets
    }

    /// Puts the value fetch `ticket` got in service (no longer stale),
    /// unless a later fetch's already is; logs `changed` at INFO if it
    /// differs from the one it replaces.
    fn store(&self, v: SecretValue, ticket: u64, changed: &str) {
        let mut st = self.state();
        if ticket < st.served {
            return;
        }
        if st.value.as_ref().is_some_and(|old| *old != v) {
            tracing::info!(secret = %self.name, "{changed}");
        }
        st.value = Some(v);
        st.served = ticket;
        st.stale_since = None;
    }

    /// Fetch `ticket` (a refresh or re-read) failed: the value served is
    /// stale from now, unless it already was or came from a later fetch.
    fn mark_stale(&self, ticket: u64) {
        let mut st = self.state();
        if ticket > st.served && st.value.is_some() && st.stale_since.is_none() {
            st.stale_since = Some(Instant::now());
        }
    }

    /// The refresh interval now.
    pub fn ttl(&self) -> Duration {
        self.state().ttl
    }

    /// Sets the refresh interval as config build `build` asks. A reload that
    /// keeps a source but changes its `ttl` comes here: the cached value
    /// stays in service (a backend that is down at that moment fails no
    /// request), and the refresh task takes the new interval at once. A
    /// source named several times in one build with different `ttl`s
    /// refreshes at the shortest non-zero one.
    pub fn set_ttl(self: &Arc<Self>, ttl: Duration, build: u64) {
        let start = {
            let mut st = self.state();
            let wanted = if st.ttl_build == build {
                shortest_refresh(st.ttl, ttl)
            } else {
                ttl
            };
            st.ttl_build = build;
            if wanted == st.ttl {
                return;
            }
            tracing::debug!(secret = %self.name, old = ?st.ttl, new = ?wanted, "secret ttl changed");
            st.ttl = wanted;
            let start = !wanted.is_zero() && st.value.is_some() && !st.refreshing;
            st.refreshing |= start;
            start
        };
        if start {
            if tokio::runtime::Handle::try_current().is_err() {
                // No runtime to refresh on: the first `get` on one starts it.
                self.state().refreshing = false;
                return;
            }
            spawn_refresh(Arc::downgrade(self), self.retune.clone());
        } else {
            // A running refresh task re-reads the interval; a permit is kept
            // if it is between waits.
            self.retune.notify_one();
        }
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
        let ticket = self.ticket();
        match self.fetch_once().await {
            Ok(v) => {
                let start_refresh = {
                    let mut st = self.state();
                    st.value = Some(v.clone());
                    st.served = ticket;
                    st.failure = None;
                    st.stale_since = None;
                    let start = !st.ttl.is_zero() && !st.refreshing;
                    st.refreshing |= start;
                    start
                };
                tracing::debug!(secret = %self.name, "secret fetched");
                if start_refresh {
                    spawn_refresh(Arc::downgrade(self), self.retune.clone());
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

/// Of two refresh intervals, the one that refreshes sooner (zero is never).
pub(super) fn shortest_refresh(a: Duration, b: Duration) -> Duration {
    match (a.is_zero(), b.is_zero()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// The interval the refresh task should wait, or `None` when it should end
/// (the source is gone, or its `ttl` is zero now; `refreshing` is cleared so
/// a later `ttl` starts a new task).
fn current_ttl(weak: &std::sync::Weak<Cached>) -> Option<Duration> {
    let me = weak.upgrade()?;
    let mut st = me.state();
    if st.ttl.is_zero() {
        st.refreshing = false;
        return None;
    }
    Some(st.ttl)
}

/// Re-fetches every `ttl` while the source lives; failures keep the old
/// value. The interval is read again after each wait and whenever
/// [`Cached::set_ttl`] changes it.
fn spawn_refresh(weak: std::sync::Weak<Cached>, retune: Arc<Notify>) {
    tokio::spawn(async move {
        let Some(mut ttl) = current_ttl(&weak) else {
            return;
        };
        let mut delay = ttl;
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = retune.notified() => {
                    // A new interval: wait it out from now (or keep retrying
                    // soon if the backend is failing).
                    let Some(t) = current_ttl(&weak) else { return };
                    ttl = t;
                    delay = if failures == 0 { ttl } else { RETRY_MIN.min(ttl) };
                    continue;
                }
            }
            let Some(t) = current_ttl(&weak) else { return };
            ttl = t;
            let max_retry = ttl.clamp(RETRY_MIN, RETRY_MAX);
            let Some(me) = weak.upgrade() else { return };
            let ticket = me.ticket();
            match me.fetch_once().await {
                Ok(v) => {
                    me.store(v, ticket, "secret value changed on refresh");
                    delay = ttl;
                    failures = 0;
                }
                Err(e) => {
                    me.mark_stale(ticket);
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
