//! The leaf certificate cache and the SNI resolver that rustls calls.
//!
//! A bounded LRU (`tls.cert_cache_size`) of minted leaves keyed by normalised
//! name. The hit path is a lock-free moka lookup plus a freshness check. A miss,
//! or a leaf in the last tenth of its life, goes through moka's per-key compute,
//! so concurrent handshakes for one new name mint exactly once.
//!
//! Made-up names cannot push other clients' leaves out:
//!
//! - a name no allowlist rule can allow, whatever the method and path (the
//!   listener asks the policy on a miss), gets its leaf in a side cache of
//!   [`REFUSED_LEAVES`], so that the client can still read its 403, and
//!   never takes a place in the main cache;
//! - in the main cache each leaf counts against the client that minted it,
//!   and a new leaf in a full cache replaces its client's own oldest leaf
//!   when that client holds its fair share, else the oldest of the client
//!   holding the most ([`shares`]), so that names made up under an allowed
//!   wildcard churn only the leaves of the client that makes them up.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::leaf::{normalize_name, LeafError, LeafMinter};
use super::mint_queue::{Closed, MintQueue};
use crate::intercept::Client;
use shares::Shares;

mod shares;

/// Leaves kept, apart from the main cache, for names no allowlist rule can
/// allow: enough for the few denied names a workload retries, so that it
/// reads its 403 again without a mint, and few enough that a flood of
/// made-up denied names churns only them.
pub const REFUSED_LEAVES: u64 = 64;

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
    /// The client it counts against in the main cache ([`shares`]).
    owner: Client,
    /// Its number in [`Shares`] (0 in the refused names' cache).
    seq: u64,
}

/// Where a leaf being minted goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The main cache, counted against this client.
    Main(Client),
    /// The refused names' cache.
    Refused,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    mints: AtomicU64,
    mint_errors: AtomicU64,
    refused_mints: AtomicU64,
    displaced: AtomicU64,
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
    /// Leaves minted (counted in `mints` too) for names no allowlist rule
    /// can allow, kept in the side cache of [`REFUSED_LEAVES`].
    pub refused_mints: u64,
    /// Leaves in that side cache.
    pub refused_entries: u64,
    /// Leaves that gave up their place in a full cache to a newer leaf:
    /// of the same client, which held its fair share, or of a client under
    /// its share, the leaf being the oldest of the client holding the most
    /// ([`shares`]).
    pub displaced: u64,
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
    /// Leaves for names no allowlist rule can allow.
    refused: moka::sync::Cache<String, Entry>,
    /// Each client's leaves in `cache`.
    shares: Arc<Mutex<Shares>>,
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
        let shares = Arc::new(Mutex::new(Shares::new(capacity)));
        let released = shares.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_key, entry: Entry, _cause| {
                lock(&released).release(entry.owner, entry.seq);
            })
            .build();
        let refused = moka::sync::Cache::builder()
            .max_capacity(REFUSED_LEAVES)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        LeafCache {
            minter,
            cache,
            refused,
            shares,
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
        self.mint_or_join(key.into_owned(), Place::Main(Client::UNKNOWN))
    }

    /// The leaf a handshake presents: as [`get`](Self::get), but a hit is
    /// not counted, since [`prepare`](Self::prepare) counted this
    /// connection's lookup; the refused names' leaves are looked up too,
    /// after the main cache's. A miss here (the leaf evicted since, or a
    /// caller that did not prepare) mints inline, on the caller's thread,
    /// into the main cache.
    pub fn for_handshake(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        let key = key_of(name);
        if let Some(certified) = self.fresh(&key) {
            return Ok(certified);
        }
        if let Some(certified) = self.fresh_in(Place::Refused, &key) {
            return Ok(certified);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(name = %key, "leaf not prepared; minting it inline");
        self.mint_or_join(key.into_owned(), Place::Main(Client::UNKNOWN))
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
    ///
    /// On a miss of the main cache, `refused` says whether no allowlist rule
    /// can allow the name (it is not called on a hit): its leaf is then
    /// looked up and minted in the refused names' cache
    /// ([`REFUSED_LEAVES`]), and a new leaf of the main cache counts against
    /// `client`'s share of it otherwise.
    pub fn prepare(
        self: &Arc<Self>,
        name: &str,
        client: Client,
        within: Duration,
        refused: impl FnOnce() -> bool,
    ) -> Option<Minting> {
        let key = key_of(name);
        if self.fresh(&key).is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let place = if refused() {
            Place::Refused
        } else {
            Place::Main(client)
        };
        if place == Place::Refused && self.fresh_in(place, &key).is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let (cache, key) = (self.clone(), key.into_owned());
        Some(Box::pin(async move {
            tokio::time::timeout(within, cache.mint_in_turn(key, client, place))
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
            refused_mints: self.counters.refused_mints.load(Ordering::Relaxed),
            refused_entries: self.refused.entry_count(),
            displaced: self.counters.displaced.load(Ordering::Relaxed),
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
        self.refused.run_pending_tasks();
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

    /// As [`fresh`](Self::fresh), in the cache of `place`.
    fn fresh_in(&self, place: Place, key: &str) -> Option<Arc<CertifiedKey>> {
        let entry = self.cache_of(place).get(key)?;
        ((self.clock)() < entry.refresh_at).then_some(entry.certified)
    }

    fn cache_of(&self, place: Place) -> &moka::sync::Cache<String, Entry> {
        match place {
            Place::Main(_) => &self.cache,
            Place::Refused => &self.refused,
        }
    }

    /// Waits for `client`'s turn, then mints `key` on the blocking pool
    /// unless a fresh leaf turned up meanwhile. The turn is held by the
    /// blocking task, so a mint this future stops waiting for (its deadline
    /// passed) still counts against its client and the slots until it ends.
    async fn mint_in_turn(
        self: Arc<Self>,
        key: String,
        client: Client,
        place: Place,
    ) -> Result<(), PrepareError> {
        let mine = self
            .queue
            .client_turn(client)
            .await
            .map_err(PrepareError::Queue)?;
        if self.fresh_in(place, &key).is_some() {
            return Ok(()); // minted by another connection of the client
        }
        let turn = mine.slot().await.map_err(PrepareError::Queue)?;
        if self.fresh_in(place, &key).is_some() {
            return Ok(()); // minted by another client's connection
        }
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            self.mint_or_join(key, place).map(drop)
        })
        .await
        .map_err(PrepareError::Lost)?
        .map_err(PrepareError::Mint)
    }

    /// Mints `key` into the cache of `place`, or takes the leaf a
    /// concurrent caller minted: per key serialised, whoever comes second
    /// sees the first one's leaf.
    fn mint_or_join(&self, key: String, place: Place) -> Result<Arc<CertifiedKey>, LeafError> {
        // Held until the leaf is in: a concurrent mint of `key` makes no room.
        let _room = match place {
            Place::Main(client) => self.make_room(client, &key),
            Place::Refused => None,
        };
        let result = self
            .cache_of(place)
            .entry(key.clone())
            .and_try_compute_with(|current| {
                let now = (self.clock)();
                if let Some(current) = current {
                    if now < current.value().refresh_at {
                        return Ok(Op::Nop);
                    }
                }
                let mut entry = self.mint(&key, now)?;
                match place {
                    Place::Main(client) => {
                        entry.owner = client;
                        entry.seq = lock(&self.shares).record(client, &key);
                    }
                    Place::Refused => {
                        self.counters.refused_mints.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Op::Put(entry))
            })?;
        match result.into_entry() {
            Some(entry) => Ok(entry.into_value().certified),
            // Nop and Put both leave an entry; this is unreachable, but mint
            // outside the cache rather than fail a handshake.
            None => Ok(self.mint(&key, (self.clock)())?.certified),
        }
    }

    /// Before `client` mints `key` into the main cache: when the cache is
    /// full, removes the leaf [`Shares::displace`] picks (the client's own
    /// oldest when it holds its fair share, else the oldest of the client
    /// holding the most), so that the new one takes its place rather than
    /// the least recently used leaf of whoever ([`shares`]). A replacement
    /// of a cached leaf (`key` near expiry) takes no new place, nor does a
    /// mint of a name another mint made room for already: the room is
    /// held for `key` until the returned guard drops. Removed before the
    /// new leaf goes in: moka evicts when an insert finds the cache full.
    fn make_room<'a>(&'a self, client: Client, key: &'a str) -> Option<Room<'a>> {
        if self.cache.contains_key(key) {
            return None;
        }
        // The lock is released before the cache is touched: the cache's
        // eviction listener takes it.
        let displaced = lock(&self.shares).displace(client, key)?;
        let room = Room {
            shares: &self.shares,
            key,
        };
        // Only if it is still that leaf (not replaced meanwhile by a newer
        // one, which counts against whoever minted it).
        let removed = self
            .cache
            .entry(displaced.key)
            .and_compute_with(|current| match current {
                Some(e) if e.value().seq == displaced.seq => Op::Remove,
                _ => Op::Nop,
            });
        if matches!(removed, CompResult::Removed(_)) {
            self.counters.displaced.fetch_add(1, Ordering::Relaxed);
        }
        Some(room)
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
            owner: Client::UNKNOWN,
            seq: 0,
        })
    }
}

/// The room one mint made for `key` in the main cache ([`LeafCache::make_room`]).
struct Room<'a> {
    shares: &'a Mutex<Shares>,
    key: &'a str,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        lock(self.shares).made_room(self.key);
    }
}

/// The shares' lock; a panic elsewhere while it was held left counts that
/// are at worst off by one, which is no reason to stop minting.
fn lock(shares: &Mutex<Shares>) -> std::sync::MutexGuard<'_, Shares> {
    shares.lock().unwrap_or_else(PoisonError::into_inner)
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
