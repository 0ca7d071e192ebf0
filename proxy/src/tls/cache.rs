//! The leaf certificate cache and the SNI resolver that rustls calls.
//!
//! A bounded LRU (`tls.cert_cache_size`) of minted leaves keyed by normalised
//! name. The hit path is a lock-free moka lookup plus a freshness check. A miss,
//! or a leaf in the last tenth of its life, goes through moka's per-key compute,
//! so concurrent handshakes for one new name mint exactly once.
//!
//! rustls calls [`SniResolver::resolve`] synchronously, on the connection
//! worker, and a mint there would hold the worker for a CA signature
//! (milliseconds with an RSA CA). So the listener calls
//! [`LeafCache::prepare`] first, with the name it already knows from the
//! sniffed ClientHello: a fresh hit answers at once, and a miss mints on the
//! blocking pool in a fair turn ([`super::mint_queue`]) before the
//! handshake starts, so that the resolver then hits. The resolver still
//! mints inline when it misses (the leaf evicted in between, a caller that
//! did not prepare).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::leaf::{normalize_name, LeafError, LeafMinter};
use super::mint_queue::{Closed, MintQueue};
use crate::intercept::Client;

/// A source of "now"; tests substitute a movable clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// A leaf being readied off the connection worker ([`LeafCache::prepare`]).
pub type Minting = Pin<Box<dyn Future<Output = Result<(), PrepareError>> + Send>>;

/// Called with each name as its mint starts (tests hold mints with it).
#[cfg(test)]
pub(crate) type MintHook = Box<dyn Fn(&str) + Send + Sync>;

/// Why [`LeafCache::prepare`] readied no leaf.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Its time ran out while the mint waited for a turn (or ran): other
    /// mints were queued before it. The mint itself, once started, goes on
    /// and caches its leaf.
    #[error("no turn to mint in time")]
    Busy,
    /// The mint failed.
    #[error("minting the leaf certificate")]
    Mint(#[source] LeafError),
    /// The blocking task that minted ended without an answer (it panicked,
    /// or the runtime is shutting down).
    #[error("the mint's task ended without a leaf")]
    Lost(#[source] tokio::task::JoinError),
    /// The mint queue was closed (never happens: kept rather than a panic).
    #[error("waiting for a turn to mint")]
    Queue(#[source] Closed),
}

#[derive(Clone)]
struct Entry {
    certified: Arc<CertifiedKey>,
    /// When to mint a replacement: 90% through the leaf's life.
    refresh_at: OffsetDateTime,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    mints: AtomicU64,
    mint_errors: AtomicU64,
}

/// A snapshot of the cache counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered by a fresh cached leaf.
    pub hits: u64,
    /// Lookups that found no leaf or a leaf due for replacement.
    pub misses: u64,
    /// Leaves minted.
    pub mints: u64,
    /// Mint attempts that failed.
    pub mint_errors: u64,
    /// Leaves currently cached (approximate: moka applies evictions lazily).
    pub entries: u64,
    /// Mints that waited for a turn ([`super::mint_queue`]): behind their
    /// client's previous mint, or for a slot.
    pub mint_waits: u64,
    /// Mints waiting for a turn now.
    pub mints_waiting: u64,
}

/// Minted leaves by server name, bounded and expiry-aware.
pub struct LeafCache {
    minter: LeafMinter,
    cache: moka::sync::Cache<String, Entry>,
    counters: Counters,
    clock: Clock,
    queue: Arc<MintQueue>,
    #[cfg(test)]
    mint_hook: std::sync::OnceLock<MintHook>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("minter", &self.minter)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache of at most `capacity` leaves (`tls.cert_cache_size`).
    pub fn new(minter: LeafMinter, capacity: u64) -> Self {
        Self::with_clock(minter, capacity, Arc::new(OffsetDateTime::now_utc))
    }

    /// Like [`new`](Self::new) with an explicit clock, for tests.
    pub fn with_clock(minter: LeafMinter, capacity: u64, clock: Clock) -> Self {
        Self::with_queue(minter, capacity, clock, super::mint_queue::new())
    }

    /// Like [`with_clock`](Self::with_clock), minting in turns of `queue`.
    pub fn with_queue(
        minter: LeafMinter,
        capacity: u64,
        clock: Clock,
        queue: Arc<MintQueue>,
    ) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        LeafCache {
            minter,
            cache,
            counters: Counters::default(),
            clock,
            queue,
            #[cfg(test)]
            mint_hook: std::sync::OnceLock::new(),
        }
    }

    /// The leaf for `name` (a DNS name or an IP address), minting it if it is
    /// missing or close to expiry. Names are compared case-insensitively.
    ///
    /// It mints on the calling thread: on a runtime, call
    /// [`prepare`](Self::prepare) first.
    pub fn get(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        let key = key_of(name);
        if let Some(certified) = self.fresh(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(certified);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.mint_or_join(key.into_owned())
    }

    /// The leaf a handshake presents: as [`get`](Self::get), but a hit is
    /// not counted, since [`prepare`](Self::prepare) counted this
    /// connection's lookup. A miss here (the leaf evicted since, or a caller
    /// that did not prepare) mints inline, on the caller's thread.
    pub fn for_handshake(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        let key = key_of(name);
        if let Some(certified) = self.fresh(&key) {
            return Ok(certified);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(name = %key, "leaf not prepared; minting it inline");
        self.mint_or_join(key.into_owned())
    }

    /// Readies the leaf for `name` before a handshake that will ask for it.
    ///
    /// `None` when a fresh leaf is cached: the path of nearly every
    /// connection, one lookup and no allocation. Otherwise a future that,
    /// in `client`'s turn ([`super::mint_queue`]), mints the leaf on the
    /// blocking pool and caches it, so that the resolver then hits; it
    /// gives up with [`PrepareError::Busy`] after `within`. Concurrent
    /// prepares of one name mint once (moka's per-key compute), and a leaf
    /// another connection minted while this one waited is not minted again.
    pub fn prepare(
        self: &Arc<Self>,
        name: &str,
        client: Client,
        within: Duration,
    ) -> Option<Minting> {
        let key = key_of(name);
        if self.fresh(&key).is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let (cache, key) = (self.clone(), key.into_owned());
        Some(Box::pin(async move {
            tokio::time::timeout(within, cache.mint_in_turn(key, client))
                .await
                .unwrap_or(Err(PrepareError::Busy))
        }))
    }

    /// Counters since start, for the metrics module.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            mints: self.counters.mints.load(Ordering::Relaxed),
            mint_errors: self.counters.mint_errors.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            mint_waits: self.queue.waits(),
            mints_waiting: self.queue.waiting(),
        }
    }

    /// The minter (and through it, the CA).
    pub fn minter(&self) -> &LeafMinter {
        &self.minter
    }

    /// The queue mints take their turns in.
    pub fn queue(&self) -> &Arc<MintQueue> {
        &self.queue
    }

    /// Applies moka's pending evictions now (tests and metrics accuracy).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// Calls `hook` with each name as its mint starts, on the minting thread.
    #[cfg(test)]
    pub(crate) fn on_mint(&self, hook: MintHook) {
        let _ = self.mint_hook.set(hook);
    }

    /// The cached leaf for `key` if it is not due for replacement.
    fn fresh(&self, key: &str) -> Option<Arc<CertifiedKey>> {
        let entry = self.cache.get(key)?;
        ((self.clock)() < entry.refresh_at).then_some(entry.certified)
    }

    /// Waits for `client`'s turn, then mints `key` on the blocking pool
    /// unless a fresh leaf turned up meanwhile. The turn is held by the
    /// blocking task, so a mint this future stops waiting for (its deadline
    /// passed) still counts against its client and the slots until it ends.
    async fn mint_in_turn(
        self: Arc<Self>,
        key: String,
        client: Client,
    ) -> Result<(), PrepareError> {
        let mine = self
            .queue
            .client_turn(client)
            .await
            .map_err(PrepareError::Queue)?;
        if self.fresh(&key).is_some() {
            return Ok(()); // minted by another connection of the client
        }
        let turn = mine.slot().await.map_err(PrepareError::Queue)?;
        if self.fresh(&key).is_some() {
            return Ok(()); // minted by another client's connection
        }
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            self.mint_or_join(key).map(drop)
        })
        .await
        .map_err(PrepareError::Lost)?
        .map_err(PrepareError::Mint)
    }

    /// Mints `key` into the cache, or takes the leaf a concurrent caller
    /// minted: per key serialised, whoever comes second sees the first
    /// one's leaf.
    fn mint_or_join(&self, key: String) -> Result<Arc<CertifiedKey>, LeafError> {
        let result = self
            .cache
            .entry(key.clone())
            .and_try_compute_with(|current| {
                let now = (self.clock)();
                if let Some(current) = current {
                    if now < current.value().refresh_at {
                        return Ok(Op::Nop);
                    }
                }
                self.mint(&key, now).map(Op::Put)
            })?;
        match result.into_entry() {
            Some(entry) => Ok(entry.into_value().certified),
            // Nop and Put both leave an entry; this is unreachable, but mint
            // outside the cache rather than fail a handshake.
            None => Ok(self.mint(&key, (self.clock)())?.certified),
        }
    }

    fn mint(&self, name: &str, now: OffsetDateTime) -> Result<Entry, LeafError> {
        #[cfg(test)]
        if let Some(hook) = self.mint_hook.get() {
            hook(name);
        }
        let leaf = self.minter.mint(name, now).inspect_err(|_| {
            self.counters.mint_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        self.counters.mints.fetch_add(1, Ordering::Relaxed);
        let life = leaf.not_after - leaf.not_before;
        Ok(Entry {
            certified: leaf.certified,
            refresh_at: leaf.not_after - life / 10,
        })
    }
}

/// The cache key of `name`: [`normalize_name`]'s, borrowed when `name` is
/// already normal (the listener normalises the SNI it prepares), so that a
/// hit allocates nothing.
fn key_of(name: &str) -> Cow<'_, str> {
    if name.ends_with('.') || name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(normalize_name(name))
    } else {
        Cow::Borrowed(name)
    }
}

/// rustls certificate resolver: mints (or reuses) a leaf for the ClientHello's SNI.
///
/// A ClientHello without SNI gets no certificate, so the handshake fails with
/// an alert; callers that know the intended name another way (an original
/// destination IP) can call [`LeafCache::for_handshake`] and build their own
/// resolver. Call [`LeafCache::prepare`] before the handshake, so that the
/// leaf is not minted here, on the runtime's thread.
#[derive(Debug, Clone)]
pub struct SniResolver {
    cache: Arc<LeafCache>,
}

impl SniResolver {
    /// A resolver over a shared cache.
    pub fn new(cache: Arc<LeafCache>) -> Self {
        SniResolver { cache }
    }

    /// The cache behind this resolver.
    pub fn cache(&self) -> &Arc<LeafCache> {
        &self.cache
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            tracing::debug!("ClientHello without SNI; refusing the handshake");
            return None;
        };
        match self.cache.for_handshake(name) {
            Ok(certified) => Some(certified),
            Err(error) => {
                tracing::warn!(sni = %name, error = %error, "cannot mint a leaf certificate");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
