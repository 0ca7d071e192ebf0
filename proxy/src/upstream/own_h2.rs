//! The upstream HTTP/2 connections of one client connection.
//!
//! An HTTP/2 client's requests go out on a pooled hyper client of that
//! client connection's own ([`OwnH2`], kept in its [`HeldSlot`]), not on one
//! the whole process shares. The upstream connections it opens carry only
//! that client connection's streams, so what one workload does with its
//! streams cannot stall another's:
//!
//! - flow control: the proxy forwards a response body only as fast as its
//!   client reads it; what the upstream sends meanwhile waits in the upstream
//!   connection's receive window ([`STREAM_WINDOW`] per stream,
//!   [`CONN_WINDOW`] for the connection). On a shared connection, a client
//!   that stopped reading a few large responses filled the connection's
//!   window, and every other client's responses from that host stopped too
//!   (hyper's defaults: 2 MiB per stream, 5 MiB per connection, so three
//!   stalled streams were enough);
//! - concurrency: streams a client holds open count against the upstream's
//!   `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100) on its own connection
//!   only. On a shared connection, one client holding that many streams
//!   queued every other client's requests to the host until their response
//!   timeout.
//!
//! HTTP/1 clients already had that isolation: each request in flight has an
//! upstream connection to itself (see [`super::held`]). The cost is more
//! upstream connections: one per client connection (and host) instead of one
//! per host. The memory the proxy holds for a client that stops reading is
//! bounded per connection by [`CONN_WINDOW`].
//!
//! A client connection's HTTP/2 client does not end with it: its upstream
//! connections, idle then, can serve the next client connection to the same
//! host. [`Spares`] keeps it for that (up to [`MAX_SPARES_PER_HOST`] per
//! host and [`MAX_SPARES`] in all, for the pool's idle timeout), so that a
//! workload opening a new HTTP/2 connection per request (curl in a script)
//! does not pay an upstream handshake each time. A spare is taken by one
//! client connection at a time.
//!
//! When the upstream speaks only HTTP/1.1, the client opens an HTTP/1
//! connection per stream in flight; [`limit`] bounds those per host and
//! client connection (requests beyond the bound wait for one), and the
//! client keeps only [`limit::IDLE_PER_HOST`] idle per host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::dial::Standing;
use super::held::{Home, Key, IDLE_TIMEOUT};

/// How much of one response body an upstream may send ahead of what the
/// proxy has passed on to its client (the stream's receive window). hyper's
/// default: it bounds one stream's download rate from a distant upstream
/// (2 MiB per round trip), so it is not lowered.
pub(crate) const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// How much response data, over all its streams, an upstream connection may
/// send ahead of what the proxy has passed on: what the proxy buffers at most
/// for the connection. hyper's default, kept: with the connection not shared,
/// two stalled streams still leave room for the client's others, and only a
/// client stalling three or more stalls itself.
pub(crate) const CONN_WINDOW: u32 = 5 * 1024 * 1024;
/// How much of one stream's request body the proxy queues for an upstream
/// beyond what the upstream connection's socket takes. hyper's client
/// default, 1 MiB per stream, let an upstream that advertises a large
/// flow-control window and then reads nothing pin that much of a fast
/// uploading client's body on each of its streams (the client's own receive
/// window, `listen::H2_STREAM_WINDOW`, is handed back as the body moves into
/// this queue). As on the client side (`listen::H2_MAX_SEND_BUF`).
pub(crate) const MAX_SEND_BUF: usize = crate::listen::H2_MAX_SEND_BUF;
/// How many spare clients [`Spares`] keeps per host.
const MAX_SPARES_PER_HOST: usize = 64;
/// How many spare clients [`Spares`] keeps over all hosts; beyond it the
/// least recently put spare goes first, whatever its host. Each spare holds
/// at least one idle upstream connection (a descriptor, its TLS session
/// and buffers) for the pool's idle timeout. With only the per-host cap, a
/// workload that opens HTTP/2 connections to many distinct hosts (a
/// wildcard allowlist, one name per request) kept 64 spares for every one
/// of them: descriptors and memory without bound for 90 s. 256 covers the
/// hosts a busy deployment reuses within that time (four hosts at their
/// per-host cap); a spare evicted early only costs its next user a
/// handshake.
const MAX_SPARES: usize = 256;

/// The pooled HTTP/2-capable client type (h2 or http/1.1 by ALPN), its
/// HTTP/1 connections bounded per host ([`limit`]).
pub(crate) type H2Client = OwnClient;

/// One client connection's upstream HTTP/2 client. Dropped with its client
/// connection, it goes to [`Spares`] under the host of its first request.
pub(crate) struct OwnH2 {
    client: H2Client,
    key: Key,
    home: Home,
    spares: Arc<Spares>,
    /// Once retired (a reload retired the open connections), it is neither
    /// used nor kept as a spare.
    standing: Standing,
}

impl OwnH2 {
    /// A client for a connection whose first request goes to `key`: a spare
    /// one for `key` if there is one, else a new one from `fresh`.
    pub(crate) fn for_key(
        key: Key,
        home: Home,
        spares: &Arc<Spares>,
        standing: Standing,
        fresh: impl FnOnce() -> H2Client,
    ) -> Self {
        let client = spares.take(&key, home).unwrap_or_else(fresh);
        OwnH2 {
            client,
            key,
            home,
            spares: spares.clone(),
            standing,
        }
    }

    /// The client; none once a reload retired the connections it pools.
    pub(crate) fn client(&self) -> Option<&H2Client> {
        self.is_current().then_some(&self.client)
    }

    fn is_current(&self) -> bool {
        !self.standing.is_retired()
    }
}

impl Drop for OwnH2 {
    fn drop(&mut self) {
        // Checked again by the spares under their lock, and at every take: a
        // reload may retire it (and clear the spares) right after this check.
        if self.is_current() {
            self.spares.put(
                self.key.clone(),
                self.home,
                self.client.clone(),
                self.standing.clone(),
            );
        }
    }
}

/// Clients whose client connections ended, by the host of their first
/// request: their idle upstream connections stay open for the pool's idle
/// timeout (the client's own pool closes them after that). Generic over the
/// client only for the tests.
pub(crate) struct Spares<C = H2Client> {
    by_key: Mutex<HashMap<Key, Vec<Spare<C>>>>,
}

impl<C> Default for Spares<C> {
    fn default() -> Self {
        Spares {
            by_key: Mutex::default(),
        }
    }
}

struct Spare<C> {
    since: Instant,
    home: Home,
    client: C,
    /// The standing of the connections it pools: a spare put after a
    /// reload retired them (its client connection ended as the reload
    /// cleared the spares) is never handed out.
    standing: Standing,
}

impl<C> Spare<C> {
    /// Whether it is still to be handed out at `now`: not expired, and not
    /// retired by a reload.
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT && !self.standing.is_retired()
    }
}

impl<C> Spares<C> {
    /// Drops every spare (a reload retired their connections).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Spare<C>>>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare for `key`, one of runtime `home` first (its connections'
    /// sockets are in that runtime's reactor), else the newest.
    fn take(&self, key: &Key, home: Home) -> Option<C> {
        self.take_at(key, home, Instant::now())
    }

    /// [`Spares::take`] at `now`.
    fn take_at(&self, key: &Key, home: Home, now: Instant) -> Option<C> {
        let mut by_key = self.lock();
        let list = by_key.get_mut(key)?;
        // Expired ones go, and retired ones: a reload's `clear` may have run
        // before they were put.
        list.retain(|s| s.fresh(now));
        let at = list
            .iter()
            .rposition(|s| s.home == home)
            .or_else(|| list.len().checked_sub(1));
        let spare = at.map(|at| list.remove(at));
        // No list is left empty (all expired, or the last one taken).
        if list.is_empty() {
            by_key.remove(key);
        }
        spare.map(|s| s.client)
    }

    /// Keeps `client`, whose connections have `standing`, as a spare for
    /// `key`; the oldest of the host goes when the host has
    /// [`MAX_SPARES_PER_HOST`], else the oldest of all when there are
    /// [`MAX_SPARES`] in all. A retired one is dropped.
    fn put(&self, key: Key, home: Home, client: C, standing: Standing) {
        self.put_at(key, home, client, standing, Instant::now());
    }

    /// [`Spares::put`] at `now`.
    fn put_at(&self, key: Key, home: Home, client: C, standing: Standing, now: Instant) {
        let mut by_key = self.lock();
        if standing.is_retired() {
            return;
        }
        // Hosts nobody asked for again: their spares expired (or were retired).
        by_key.retain(|_, list| {
            list.retain(|s| s.fresh(now));
            !list.is_empty()
        });
        let host_full = by_key
            .get(&key)
            .is_some_and(|list| list.len() >= MAX_SPARES_PER_HOST);
        if host_full {
            if let Some(list) = by_key.get_mut(&key) {
                list.remove(0);
            }
        } else if by_key.values().map(Vec::len).sum::<usize>() >= MAX_SPARES {
            evict_oldest(&mut by_key);
        }
        let list = by_key.entry(key).or_default();
        list.push(Spare {
            since: now,
            home,
            client,
            standing,
        });
    }

    /// How many spares there are in all.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// How many spares there are for `key`.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &Key) -> usize {
        self.lock().get(key).map_or(0, Vec::len)
    }

    /// How many hosts have spares.
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.lock().len()
    }
}

/// Removes the least recently put spare of all hosts (each host's list is
/// oldest first), and the host's list with it when that was its last.
fn evict_oldest<C>(by_key: &mut HashMap<Key, Vec<Spare<C>>>) {
    let oldest = by_key
        .iter()
        .filter_map(|(key, list)| list.first().map(|s| (s.since, key)))
        .min_by_key(|(since, _)| *since)
        .map(|(_, key)| key.clone());
    let Some(key) = oldest else { return };
    if let Some(list) = by_key.get_mut(&key) {
        list.remove(0);
        if list.is_empty() {
            by_key.remove(&key);
        }
    }
}

pub(crate) mod limit;
#[cfg(test)]
mod tests;

pub(crate) use limit::{OpenPermit, OwnClient, OwnDialer, IDLE_PER_HOST};
