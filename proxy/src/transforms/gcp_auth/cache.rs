//! The token of one `gcp_auth` transform (spec: GCP Service Accounts, "cached in memory
//! until they near expiry, then refreshed in the background").
//!
//! The first request mints inline (one mint at a time: concurrent requests wait for it).
//! Once the token is within [`REFRESH_AHEAD`] of its expiry (or half its lifetime, for a
//! short-lived one), the next request starts one refresh in a spawned task and goes on with
//! the still-valid token; the refreshed token replaces it when it arrives. A request mints
//! inline only when no valid token is left (the first request, a failed refresh that ran
//! into expiry, changed credentials). A failed background refresh is logged (the cause
//! holds no secret) and retried after [`RETRY_AFTER`] by the next request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::transforms::oauth_token::{Cached, MintError, TokenResponse};

/// How long before expiry a token is refreshed in the background: Google's auth libraries
/// (cloud.google.com/go/auth) treat a token as stale 3 min 45 s before it expires and
/// refresh it asynchronously from then on.
pub(super) const REFRESH_AHEAD: Duration = Duration::from_secs(225);
/// After a failed background refresh, the next attempt waits this long.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A minted token and the account it is for.
pub(super) type Minted = (TokenResponse, String);

/// One cached token, refreshed ahead of expiry.
#[derive(Default)]
pub(super) struct TokenCache {
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// Fingerprint of the credentials the token was minted from.
    fingerprint: Option<[u8; 32]>,
    token: Option<Cached>,
    account: String,
    /// When the next background refresh is due (`None`: a token without expiry).
    refresh_at: Option<Instant>,
    /// A background refresh is running.
    refreshing: bool,
}

impl Slot {
    fn store(&mut self, (minted, account): Minted) -> Zeroizing<String> {
        let now = Instant::now();
        self.refresh_at = minted.expires_in.filter(|s| *s > 0).and_then(|s| {
            let lifetime = Duration::from_secs(s);
            now.checked_add(lifetime - REFRESH_AHEAD.min(lifetime / 2))
        });
        self.token = Some(Cached::new(&minted));
        self.account = account;
        minted.access_token
    }
}

impl TokenCache {
    /// A valid token for credentials with `fingerprint`, and its account: the cached one
    /// (starting a background refresh with `mint` when it is due), or one `mint` makes now.
    /// Credentials with another fingerprint discard what was cached.
    pub(super) async fn token<M, F>(
        self: &Arc<Self>,
        fingerprint: [u8; 32],
        mint: M,
    ) -> Result<(Zeroizing<String>, String), MintError>
    where
        M: FnOnce() -> F,
        F: Future<Output = Result<Minted, MintError>> + Send + 'static,
    {
        let mut slot = self.slot.lock().await;
        if slot.fingerprint != Some(fingerprint) {
            *slot = Slot {
                fingerprint: Some(fingerprint),
                ..Slot::default()
            };
        }
        if let Some(t) = slot.token.as_ref().and_then(Cached::usable) {
            let due = slot.refresh_at.is_some_and(|at| Instant::now() >= at);
            if due && !slot.refreshing {
                slot.refreshing = true;
                let cache = self.clone();
                let minting = mint();
                tokio::spawn(async move {
                    let result = minting.await;
                    cache.refreshed(fingerprint, result).await;
                });
            }
            return Ok((t, slot.account.clone()));
        }
        // Nothing valid: mint now, holding the lock (one mint at a time).
        let minted = mint().await?;
        let account = minted.1.clone();
        Ok((slot.store(minted), account))
    }

    /// Stores a background refresh's token, unless the credentials changed meanwhile.
    async fn refreshed(&self, fingerprint: [u8; 32], result: Result<Minted, MintError>) {
        let mut slot = self.slot.lock().await;
        if slot.fingerprint != Some(fingerprint) {
            return;
        }
        slot.refreshing = false;
        match result {
            Ok(minted) => {
                slot.store(minted);
            }
            Err(MintError(detail)) => {
                tracing::warn!(error = %detail, "gcp_auth: background token refresh failed; the current token stays in use");
                slot.refresh_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A mint that counts its calls and answers `t<n>`, valid for an hour, after `delay`.
    fn minter(
        calls: &Arc<AtomicUsize>,
        delay: Duration,
        fail: bool,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<Minted, MintError>> + Send>>
    {
        let calls = calls.clone();
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(MintError("token endpoint 503".into()));
                }
                let t = TokenResponse {
                    access_token: Zeroizing::new(format!("t{n}")),
                    expires_in: Some(3600),
                    refresh_token: None,
                };
                Ok((t, "sa@p.iam.gserviceaccount.com".to_string()))
            })
        }
    }

    async fn token(cache: &Arc<TokenCache>, calls: &Arc<AtomicUsize>, delay: u64) -> String {
        let mint = minter(calls, Duration::from_secs(delay), false);
        let (t, _) = cache.token([1; 32], mint).await.expect("a token");
        t.to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_near_expiry_is_refreshed_in_the_background() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(token(&cache, &calls, 0).await, "t1");

        // Well before the refresh point: the cached token, no mint.
        tokio::time::advance(Duration::from_secs(3000)).await;
        assert_eq!(token(&cache, &calls, 0).await, "t1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // 200 s left (< 225 s): the still-valid token is answered at once, while one refresh
        // (taking 5 s) runs; requests meanwhile start no second one.
        tokio::time::advance(Duration::from_secs(400)).await;
        let started = Instant::now();
        assert_eq!(token(&cache, &calls, 5).await, "t1");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the request waited for a mint"
        );
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no refresh started");
        assert_eq!(token(&cache, &calls, 5).await, "t1");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a second refresh started");

        // The refresh lands: the new token is used, and is not due yet.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(token(&cache, &calls, 0).await, "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_token_and_an_expired_one_is_minted_inline() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(token(&cache, &calls, 0).await, "t1");
        tokio::time::advance(Duration::from_secs(3500)).await;
        let failing = minter(&calls, Duration::ZERO, true);
        let (t, _) = cache
            .token([1; 32], failing)
            .await
            .expect("the cached token");
        assert_eq!(t.as_str(), "t1");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Within RETRY_AFTER of the failure: no new attempt.
        assert_eq!(token(&cache, &calls, 0).await, "t1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Expired (the refresh never succeeded): the request mints and waits for it.
        tokio::time::advance(Duration::from_secs(200)).await;
        let started = Instant::now();
        assert_eq!(token(&cache, &calls, 2).await, "t3");
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        // Other credentials: what was cached is not used.
        let mint = minter(&calls, Duration::ZERO, false);
        let (t, _) = cache.token([2; 32], mint).await.expect("a token");
        assert_eq!(t.as_str(), "t4");
    }
}
