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
//! The turns are [`crate::turns`], with one turn per client and
//! [`MINT_SLOTS`] slots. Only cache misses come here. A mint in flight keeps
//! its client's entry, even once the connection that asked for it has gone.

use std::sync::Arc;

pub use crate::turns::{ClientTurn, Closed, Turn, Turns as MintQueue};

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

/// A queue with [`MINT_SLOTS`] slots, one mint at a time per client.
pub fn new() -> Arc<MintQueue> {
    with_slots(MINT_SLOTS)
}

/// A queue with `slots` slots (at least one), one mint at a time per client.
pub fn with_slots(slots: usize) -> Arc<MintQueue> {
    MintQueue::new(slots, 1)
}

#[cfg(test)]
mod tests;
