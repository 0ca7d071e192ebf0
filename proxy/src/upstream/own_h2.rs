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
//! host, for the pool's idle timeout, and as many as hold at most
//! [`spare_cap_for`] upstream connections together), so that a workload
//! opening a new HTTP/2 connection per request (curl in a script) does not
//! pay an upstream handshake each time. A spare is taken by one client
//! connection at a time.
//!
//! [`limit`] bounds a client's upstream connections: [`limit::MAX_OPEN`]
//! over all hosts (an idle one is closed to make room for a new one), and,
//! when the upstream speaks only HTTP/1.1 (the client then opens an HTTP/1
//! connection per stream in flight), [`limit::MAX_OPEN_PER_HOST`] per host.
//! Requests beyond a bound wait for a connection; the client keeps only
//! [`limit::IDLE_PER_HOST`] idle per host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::dial::Standing;
use super::held::{self, Home, Key, IDLE_TIMEOUT};

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

/// How many upstream connections all spares together may hold when the soft
/// open-file limit is `soft` (`None`: unknown): half what the HTTP/1 idle
/// pool may hold ([`held::idle_cap_for`]), a twentieth of the limit within
/// 8 to 512. Of the fifth of the limit that `proxy.max_connections` leaves
/// for everything but client connections and their requests' upstream
/// connections (`ops::fd_limit::DEFAULT_MAX_CONNECTIONS_SHARE`), the idle
/// pool takes half, the spares a quarter, and a quarter is left for DNS,
/// the control plane, the log and a reload. Spares were counted as clients
/// (256 in all), each holding up to 8 idle connections per host it had
/// used: six client connections sent to 400 hosts left about 1,700
/// descriptors held for 90 s after they ended. Least recently put spares
/// go first; one evicted early only costs its next user handshakes.
pub(crate) fn spare_cap_for(soft: Option<u64>) -> usize {
    held::idle_cap_for(soft) / 2
}

/// What keeping a client as a spare costs: the upstream connections it holds.
pub(crate) trait Holds {
    /// How many upstream connections it has open (or being dialed).
    fn connections(&self) -> usize;
}

impl Holds for OwnClient {
    fn connections(&self) -> usize {
        OwnClient::connections(self)
    }
}

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
/// timeout (the client's own pool closes them after that), as long as all
/// spares together hold no more than `cap` of them. Generic over the client
/// only for the tests.
pub(crate) struct Spares<C = H2Client> {
    by_key: Mutex<HashMap<Key, Vec<Spare<C>>>>,
    /// The most upstream connections all spares together hold.
    cap: usize,
}

impl<C> Default for Spares<C> {
    /// Spares capped by the process's soft open-file limit now.
    fn default() -> Self {
        Spares::with_cap(spare_cap_for(crate::ops::fd_limit::soft_limit()))
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

impl<C: Holds> Spare<C> {
    /// Whether it is still worth keeping at `now`: not expired, not retired
    /// by a reload, and holding a connection (its pool closes those the
    /// upstream closed or that sat idle too long; one holding none is no
    /// better than a new client).
    fn worth_keeping(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT
            && !self.standing.is_retired()
            && self.client.connections() > 0
    }
}

impl<C> Spares<C> {
    /// Spares holding at most `cap` upstream connections together.
    pub(crate) fn with_cap(cap: usize) -> Self {
        Spares {
            by_key: Mutex::default(),
            cap,
        }
    }

    /// Drops every spare (a reload retired their connections).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Spare<C>>>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Holds> Spares<C> {
    /// A spare for `key`, one of runtime `home` first (its connections'
    /// sockets are in that runtime's reactor), else the newest.
    fn take(&self, key: &Key, home: Home) -> Option<C> {
        self.take_at(key, home, Instant::now())
    }

    /// [`Spares::take`] at `now`.
    fn take_at(&self, key: &Key, home: Home, now: Instant) -> Option<C> {
        let mut by_key = self.lock();
        let list = by_key.get_mut(key)?;
        // Expired ones go, and retired ones (a reload's `clear` may have run
        // before they were put), and those whose connections all closed.
        list.retain(|s| s.worth_keeping(now));
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
    /// [`MAX_SPARES_PER_HOST`], and the oldest of all go while the spares
    /// would hold more than their cap of connections. A retired one is
    /// dropped, and so is one that holds no connection or more than the
    /// cap on its own.
    fn put(&self, key: Key, home: Home, client: C, standing: Standing) {
        self.put_at(key, home, client, standing, Instant::now());
    }

    /// [`Spares::put`] at `now`.
    fn put_at(&self, key: Key, home: Home, client: C, standing: Standing, now: Instant) {
        let mut evicted = Vec::new();
        let mut by_key = self.lock();
        if standing.is_retired() {
            return;
        }
        let holds = client.connections();
        if holds == 0 || holds > self.cap {
            return;
        }
        // Hosts nobody asked for again: their spares expired (or were
        // retired, or their connections closed).
        by_key.retain(|_, list| {
            list.retain(|s| s.worth_keeping(now));
            !list.is_empty()
        });
        let host_full = by_key
            .get(&key)
            .is_some_and(|list| list.len() >= MAX_SPARES_PER_HOST);
        if host_full {
            if let Some(list) = by_key.get_mut(&key) {
                evicted.push(list.remove(0));
            }
        }
        let mut total: usize = by_key
            .values()
            .flatten()
            .map(|s| s.client.connections())
            .sum();
        while total + holds > self.cap {
            let Some(oldest) = evict_oldest(&mut by_key) else {
                break;
            };
            total = total.saturating_sub(oldest.client.connections());
            evicted.push(oldest);
        }
        let list = by_key.entry(key).or_default();
        list.push(Spare {
            since: now,
            home,
            client,
            standing,
        });
        // The evicted close their connections outside the lock.
        drop(by_key);
        drop(evicted);
    }

    /// How many upstream connections the spares hold
    /// (`iron_proxy_upstream_spare_connections`).
    pub(crate) fn connections(&self) -> usize {
        self.lock()
            .values()
            .flatten()
            .map(|s| s.client.connections())
            .sum()
    }
}

impl<C> Spares<C> {
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
fn evict_oldest<C>(by_key: &mut HashMap<Key, Vec<Spare<C>>>) -> Option<Spare<C>> {
    let key = by_key
        .iter()
        .filter_map(|(key, list)| list.first().map(|s| (s.since, key)))
        .min_by_key(|(since, _)| *since)
        .map(|(_, key)| key.clone())?;
    let list = by_key.get_mut(&key)?;
    let oldest = list.remove(0);
    if list.is_empty() {
        by_key.remove(&key);
    }
    Some(oldest)
}

pub(crate) mod limit;
#[cfg(test)]
mod tests;

pub(crate) use limit::{OpenPermit, OwnClient, OwnDialer, IDLE_PER_HOST};
