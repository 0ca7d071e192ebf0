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

use std::sync::atomic::{AtomicUsize, Ordering};

/// The default `proxy.max_buffered_bytes`: 256 MiB.
pub const DEFAULT_TOTAL: u64 = 256 << 20;

/// A total of bytes shared by every [`Hold`] on it.
#[derive(Debug, Default)]
pub struct BufferBudget {
    /// Bytes held now.
    used: AtomicUsize,
    /// The most that may be held; 0: no limit.
    total: AtomicUsize,
}

/// The budget would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bodies held at once would exceed proxy.max_buffered_bytes ({total} bytes)")]
pub struct Exhausted {
    /// The budget's total.
    pub total: usize,
}

impl BufferBudget {
    /// A budget of `total` bytes (0: no limit).
    pub const fn new(total: usize) -> Self {
        BufferBudget {
            used: AtomicUsize::new(0),
            total: AtomicUsize::new(total),
        }
    }

    /// Sets the total (0: no limit); holds already taken stay counted.
    pub fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Bytes held now, for metrics.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty hold on this budget, grown as a body is read.
    pub fn hold(&'static self) -> Hold {
        Hold {
            budget: self,
            bytes: 0,
        }
    }

    fn take(&self, n: usize) -> Result<(), Exhausted> {
        let total = self.total.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(n);
            if total != 0 && after > total {
                return Err(Exhausted { total });
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }
}

/// The process's budget, which `Shared` sets from the config at start and
/// at each reload.
pub fn global() -> &'static BufferBudget {
    static GLOBAL: BufferBudget = BufferBudget::new(0);
    &GLOBAL
}

/// Bytes of one body counted against a [`BufferBudget`] until dropped.
#[derive(Debug)]
pub struct Hold {
    budget: &'static BufferBudget,
    bytes: usize,
}

impl Hold {
    /// Counts `n` more bytes, or refuses them (the hold keeps what it had).
    pub fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        self.budget.take(n)?;
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
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
