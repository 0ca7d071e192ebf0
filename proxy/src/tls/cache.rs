//! The leaf certificate cache and the SNI resolver that rustls calls.
//!
//! A bounded LRU (`tls.cert_cache_size`) of minted leaves keyed by normalised
//! name. The hit path is a lock-free moka lookup plus a freshness check. A miss,
//! or a leaf in the last tenth of its life, goes through moka's per-key compute,
//! so concurrent handshakes for one new name mint exactly once. rustls calls
//! [`SniResolver::resolve`] synchronously; minting is fast enough to do inline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::leaf::{normalize_name, LeafError, LeafMinter};

/// A source of "now"; tests substitute a movable clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

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
}

/// Minted leaves by server name, bounded and expiry-aware.
pub struct LeafCache {
    minter: LeafMinter,
    cache: moka::sync::Cache<String, Entry>,
    counters: Counters,
    clock: Clock,
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
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        LeafCache {
            minter,
            cache,
            counters: Counters::default(),
            clock,
        }
    }

    /// The leaf for `name` (a DNS name or an IP address), minting it if it is
    /// missing or close to expiry. Names are compared case-insensitively.
    pub fn get(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        let key = normalize_name(name);
        let now = (self.clock)();
        if let Some(entry) = self.cache.get(&key) {
            if now < entry.refresh_at {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(entry.certified);
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        // Per-key serialised: whoever comes second sees the first one's leaf.
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
            None => Ok(self.mint(&key, now)?.certified),
        }
    }

    /// Counters since start, for the metrics module.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            mints: self.counters.mints.load(Ordering::Relaxed),
            mint_errors: self.counters.mint_errors.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
        }
    }

    /// The minter (and through it, the CA).
    pub fn minter(&self) -> &LeafMinter {
        &self.minter
    }

    /// Applies moka's pending evictions now (tests and metrics accuracy).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    fn mint(&self, name: &str, now: OffsetDateTime) -> Result<Entry, LeafError> {
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

/// rustls certificate resolver: mints (or reuses) a leaf for the ClientHello's SNI.
///
/// A ClientHello without SNI gets no certificate, so the handshake fails with
/// an alert; callers that know the intended name another way (an original
/// destination IP) can call [`LeafCache::get`] and build their own resolver.
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
        match self.cache.get(name) {
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
