//! The bytes of bodies the proxy holds whole, over every request at once
//! (`proxy.max_buffered_bytes`, our addition).
//!
//! Each buffered body is bounded on its own (`proxy.max_request_body_bytes`,
//! `proxy.max_response_body_bytes`, which is unlimited by default), but not
//! their sum: one HTTP/2 connection's 100 streams each held a 1 MiB request
//! body for an `hmac_sign` rule (about 105 MiB per connection, 866 MB of RSS
//! from eight connections dripping a byte at a time), and four 200 MiB
//! downloads read whole for a `grpc` response hook took 1.5 GB. Either can
//! take the proxy to its memory limit, and the kernel's OOM killer then ends
//! every workload's traffic. The budget bounds the sum instead: a body that
//! would take it past its total is refused (503, `body_buffer_full`), as
//! Envoy's overload manager refuses requests when its heap is near its
//! limit, and everything already held goes on.
//!
//! A count of bytes, not a queue: a body that does not fit is refused at
//! once rather than held waiting, since the holders may be clients that
//! trickle their bodies for as long as the idle timeout allows. A reload
//! may change the total at any time; holds taken under the old total stay
//! counted until their bodies are dropped.
//!
//! **Each client's share.** One client (what `proxy.max_connections_per_client`
//! counts: an address, or under eBPF interception a workload) trickling
//! many bodies could otherwise hold the whole total, and every other
//! client's buffered bodies got 503 for as long as it kept them. So the
//! bodies of one client may hold at most half the total together
//! ([`BufferBudget::share`]), and a second client always finds at least
//! the other half, except in one case: a body that is the only one its
//! client holds may grow past half, to whatever the total has left, so a
//! client alone on an idle proxy still buffers the largest body the
//! per-body limits allow (`proxy.max_response_body_bytes` is unlimited by
//! default). A client's second body is refused while its first holds half
//! or more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use crate::intercept::Client;

/// The default `proxy.max_buffered_bytes`: 256 MiB.
pub const DEFAULT_TOTAL: u64 = 256 << 20;

/// A total of bytes shared by every [`Hold`] on it.
#[derive(Debug, Default)]
pub struct BufferBudget {
    /// Bytes held now (changed under `by_client`'s lock, read without it).
    used: AtomicUsize,
    /// The most that may be held; 0: no limit.
    total: AtomicUsize,
    /// Bytes held now by each client holding any.
    by_client: Mutex<HashMap<Client, usize>>,
}

/// The budget would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// The bodies of all clients would hold more than the total.
    #[error("the bodies held at once would exceed proxy.max_buffered_bytes ({total} bytes)")]
    Total {
        /// The budget's total.
        total: usize,
    },
    /// The client's bodies would hold more than its share of the total.
    #[error(
        "this client's bodies held at once would exceed its share of \
         proxy.max_buffered_bytes ({share} of {total} bytes)"
    )]
    Share {
        /// The most one client's bodies may hold together.
        share: usize,
        /// The budget's total.
        total: usize,
    },
}

impl BufferBudget {
    /// A budget of `total` bytes (0: no limit).
    pub fn new(total: usize) -> Self {
        BufferBudget {
            used: AtomicUsize::new(0),
            total: AtomicUsize::new(total),
            by_client: Mutex::default(),
        }
    }

    /// The most one client's bodies may hold together (when it holds more
    /// than one): half the total.
    pub fn share(total: usize) -> usize {
        total / 2
    }

    /// Sets the total (0: no limit); holds already taken stay counted.
    pub fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Bytes held now, for metrics.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Clients holding bytes now.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.by_client().len()
    }

    /// An empty hold on this budget for a body of `client`, grown as the
    /// body is read.
    pub fn hold(&'static self, client: Client) -> Hold {
        Hold {
            budget: self,
            client,
            bytes: 0,
        }
    }

    fn by_client(&self) -> MutexGuard<'_, HashMap<Client, usize>> {
        self.by_client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` more bytes for `client`'s body that holds `mine` now.
    fn take(&self, client: Client, mine: usize, n: usize) -> Result<(), Exhausted> {
        let total = self.total.load(Ordering::Relaxed);
        let mut by_client = self.by_client();
        let held = by_client.get(&client).copied().unwrap_or(0);
        if total != 0 {
            if self.used.load(Ordering::Relaxed).saturating_add(n) > total {
                return Err(Exhausted::Total { total });
            }
            // `held > mine`: the client holds other bodies than this one.
            let share = Self::share(total);
            if held > mine && held.saturating_add(n) > share {
                return Err(Exhausted::Share { share, total });
            }
        }
        by_client.insert(client, held.saturating_add(n));
        self.used.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back `n` bytes `client` held.
    fn give_back(&self, client: Client, n: usize) {
        let mut by_client = self.by_client();
        if let Some(held) = by_client.get_mut(&client) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                by_client.remove(&client);
            }
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The process's budget, which `Shared` sets from the config at start and
/// at each reload.
pub fn global() -> &'static BufferBudget {
    static GLOBAL: LazyLock<BufferBudget> = LazyLock::new(|| BufferBudget::new(0));
    &GLOBAL
}

/// Bytes of one body counted against a [`BufferBudget`] until dropped.
#[derive(Debug)]
pub struct Hold {
    budget: &'static BufferBudget,
    client: Client,
    bytes: usize,
}

impl Hold {
    /// Counts `n` more bytes, or refuses them (the hold keeps what it had).
    pub fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        if n == 0 {
            return Ok(());
        }
        self.budget.take(self.client, self.bytes, n)?;
        self.bytes += n;
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.bytes != 0 {
            self.budget.give_back(self.client, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests;
