//! Turns to mint leaves: one mint at a time per client, [`MINT_SLOTS`] at a
//! time in all, each first come first served.
//!
//! A leaf costs one signature by the CA: about 20 µs with an ECDSA P-256 CA,
//! milliseconds with an RSA-4096 one (the spec's openssl recipe; 3.6 ms on
//! the 2-core test machine). A workload that loops ClientHellos with names it
//! makes up costs a mint per connection, and those signatures used to run on
//! the connection workers (one per core), stalling every other workload's
//! traffic. [`LeafCache::prepare`](super::LeafCache::prepare) mints on the
//! blocking pool instead, in a turn taken here:
//!
//! - **Per client**, one mint in flight. A client's next mint queues behind
//!   its own previous one, so a client looping names holds one place at most
//!   in the queue for a slot, and the other clients' mints take their turns
//!   between its own.
//! - **In all**, [`MINT_SLOTS`] mints at once, FIFO (tokio's semaphore
//!   grants permits in the order they were asked for, and a `try_acquire`
//!   never jumps that queue).
//!
//! A client is what `proxy.max_connections_per_client` counts by
//! ([`Client`]): its address, or under eBPF interception the workload (uid
//! and cgroup), since every redirected connection comes from loopback.
//!
//! Only cache misses come here, so the per-client queues are kept in one map
//! under a mutex. An entry lives while some connection of its client waits
//! for a turn or holds one (a mint in flight keeps it, even once the
//! connection that asked for it has gone), so the map holds one entry per
//! client with a mint pending, and none when nothing is minting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::intercept::Client;

/// Mints in flight at once, over all clients.
///
/// One. Minting is CPU work on the blocking pool, outside the connection
/// workers, so this bounds what mints take from the cores the workers (one
/// per core) and the workloads share: at most one core's worth, whatever
/// the number of clients minting. Legitimate mints are rare (one per name
/// per leaf lifetime, then cached) and one slot mints ~50,000 leaves a
/// second with an ECDSA CA, ~280 with an RSA-4096 one: a proxy meeting
/// hundreds of new names at once (a cold start) serves them within the
/// handshake's 10 s either way. A larger cap would let mints from many
/// clients take several cores at the moment they are most likely to be an
/// attack.
pub const MINT_SLOTS: usize = 1;

/// The mint queue was closed. Its semaphores never are: kept so that their
/// `acquire` needs no `unwrap`.
#[derive(Debug, thiserror::Error)]
#[error("the mint queue is closed")]
pub struct Closed;

/// The per-client and global turns, and their counts for metrics.
#[derive(Debug)]
pub struct MintQueue {
    slots: Arc<Semaphore>,
    lanes: Mutex<HashMap<Client, Lane>>,
    /// Mints waiting now, for their client's previous mint or for a slot.
    waiting: AtomicU64,
    /// Mints that could not start at once (each counted once).
    waits: AtomicU64,
}

/// One client's queue.
#[derive(Debug)]
struct Lane {
    /// One permit: the client's turn.
    turn: Arc<Semaphore>,
    /// Connections waiting for the turn or holding it: the entry goes at zero.
    users: usize,
}

/// A client's turn ([`MintQueue::client_turn`]): no other mint of this
/// client runs until it is dropped.
#[derive(Debug)]
pub struct ClientTurn {
    // Dropped in this order: the permit passes to the client's next mint
    // while the entry still counts this turn, so it is never removed under
    // a waiter.
    _permit: OwnedSemaphorePermit,
    entry: LaneEntry,
    waited: bool,
}

/// The turn to mint ([`ClientTurn::slot`]): hold it while minting.
#[derive(Debug)]
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    _client: ClientTurn,
}

/// A place counted in a client's [`Lane`]; dropping it gives the place up.
#[derive(Debug)]
struct LaneEntry {
    queue: Arc<MintQueue>,
    client: Client,
}

/// A mint counted in [`MintQueue::waiting`] while this lives.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MintQueue {
    /// A queue with [`MINT_SLOTS`] slots.
    pub fn new() -> Arc<Self> {
        Self::with_slots(MINT_SLOTS)
    }

    /// A queue with `slots` slots (at least one).
    pub fn with_slots(slots: usize) -> Arc<Self> {
        Arc::new(MintQueue {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            lanes: Mutex::default(),
            waiting: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// Waits for `client`'s turn: until no other mint of the client is in
    /// flight or queued before this one. Cancel-safe: dropped while it
    /// waits, it gives its place up.
    pub async fn client_turn(self: &Arc<Self>, client: Client) -> Result<ClientTurn, Closed> {
        let turn = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(client).or_insert_with(|| Lane {
                turn: Arc::new(Semaphore::new(1)),
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

    /// Mints waiting now for a turn (a gauge).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Mints that had to wait for a turn since start (a counter).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Clients with a mint waiting or in flight.
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
    /// `waits` once per mint, `waited` remembering it).
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
