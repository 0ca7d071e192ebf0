//! Fair turns at something scarce: at most `per_client` at a time per
//! client, `slots` at a time in all, each first come first served.
//!
//! - **Per client**, `per_client` turns in flight. A client's next turn
//!   queues behind its own earlier ones, so a client asking in a loop holds
//!   at most `per_client` places in the queue for a slot, and the other
//!   clients' turns come between its own.
//! - **In all**, `slots` at once, FIFO (tokio's semaphore grants permits in
//!   the order they were asked for, and a `try_acquire` never jumps that
//!   queue).
//!
//! A client is what `proxy.max_connections_per_client` counts by
//! ([`Client`]): its address, or under eBPF interception the workload (uid
//! and cgroup), since every redirected connection comes from loopback.
//!
//! Used for leaf mints ([`crate::tls::mint_queue`]: one per client, one in
//! all) and for the lookups of the proxy's own resolver
//! ([`crate::upstream::resolve`]). The per-client queues are kept in one map
//! under a mutex. An entry lives while some caller of its client waits for
//! a turn or holds one, so the map holds one entry per client with work
//! pending, and none when all is idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::intercept::Client;

/// The turns were closed. Their semaphores never are: kept so that their
/// `acquire` needs no `unwrap`.
#[derive(Debug, thiserror::Error)]
#[error("the turns are closed")]
pub struct Closed;

/// The per-client and global turns, and their counts for metrics.
#[derive(Debug)]
pub struct Turns {
    slots: Arc<Semaphore>,
    /// The number of slots.
    size: usize,
    /// Turns each client may hold at once.
    per_client: usize,
    lanes: Mutex<HashMap<Client, Lane>>,
    /// Turns waiting now, for their client's or for a slot.
    waiting: AtomicU64,
    /// Turns that could not start at once (each counted once).
    waits: AtomicU64,
}

/// One client's queue.
#[derive(Debug)]
struct Lane {
    /// `per_client` permits: the client's turns.
    turn: Arc<Semaphore>,
    /// Callers waiting for a turn or holding one: the entry goes at zero.
    users: usize,
}

/// A client's turn ([`Turns::client_turn`]): one of the `per_client` the
/// client may hold at once, until dropped.
#[derive(Debug)]
pub struct ClientTurn {
    // Dropped in this order: the permit passes to the client's next turn
    // while the entry still counts this turn, so it is never removed under
    // a waiter.
    _permit: OwnedSemaphorePermit,
    entry: LaneEntry,
    waited: bool,
}

/// A slot ([`ClientTurn::slot`]): hold it while doing the work.
#[derive(Debug)]
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    _client: ClientTurn,
}

/// A place counted in a client's [`Lane`]; dropping it gives the place up.
#[derive(Debug)]
struct LaneEntry {
    queue: Arc<Turns>,
    client: Client,
}

/// A turn counted in [`Turns::waiting`] while this lives.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Turns {
    /// Turns of `slots` slots in all and `per_client` for each client (both
    /// at least one).
    pub fn new(slots: usize, per_client: usize) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Turns {
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
            per_client: per_client.max(1),
            lanes: Mutex::default(),
            waiting: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// Waits for one of `client`'s turns: until fewer than `per_client` of
    /// its other turns are held, none of them queued before this one.
    /// Cancel-safe: dropped while it waits, it gives its place up.
    pub async fn client_turn(self: &Arc<Self>, client: Client) -> Result<ClientTurn, Closed> {
        let turn = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(client).or_insert_with(|| Lane {
                turn: Arc::new(Semaphore::new(self.per_client)),
                users: 0,
            });
            lane.users += 1;
            lane.turn.clone()
        };
        // Made before the wait, so that a cancelled wait gives the place up.
        let entry = LaneEntry {
            queue: self.clone(),
            client,
        };
        let mut waited = false;
        let permit = self.acquire(turn, &mut waited).await?;
        Ok(ClientTurn {
            _permit: permit,
            entry,
            waited,
        })
    }

    /// Turns waiting now, for their client's or for a slot (a gauge).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Turns that had to wait since start (a counter).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Slots held now (a gauge).
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.slots.available_permits())
    }

    /// Clients with a turn waiting or held.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.lanes().len()
    }

    /// Slots free now.
    #[cfg(test)]
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<Client, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit of `semaphore`, at once if one is free (nothing counted),
    /// else after waiting in line (counted in `waiting` meanwhile, and in
    /// `waits` once per turn, `waited` remembering it).
    async fn acquire(
        &self,
        semaphore: Arc<Semaphore>,
        waited: &mut bool,
    ) -> Result<OwnedSemaphorePermit, Closed> {
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Closed),
            Err(TryAcquireError::NoPermits) => {}
        }
        if !std::mem::replace(waited, true) {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        semaphore.acquire_owned().await.map_err(|_| Closed)
    }
}

impl ClientTurn {
    /// Waits for a slot, with the client's turn in hand. Cancel-safe.
    pub async fn slot(mut self) -> Result<Turn, Closed> {
        let queue = self.entry.queue.clone();
        let slot = queue.acquire(queue.slots.clone(), &mut self.waited).await?;
        Ok(Turn {
            _slot: slot,
            _client: self,
        })
    }
}

impl Drop for LaneEntry {
    fn drop(&mut self) {
        let mut lanes = self.queue.lanes();
        if let Some(lane) = lanes.get_mut(&self.client) {
            lane.users = lane.users.saturating_sub(1);
            if lane.users == 0 {
                lanes.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests;
