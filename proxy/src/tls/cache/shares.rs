//! Each client's fair share of the main leaf cache.
//!
//! A workload can send ClientHellos with any number of made-up names under a
//! wildcard the allowlist allows (`random.example.com` for
//! `*.example.com`). In a plain LRU each of them would push out the least
//! recently used leaf, whoever uses it, so one client looping names would
//! make every other client's next connections pay a mint again.
//!
//! So every leaf in the main cache is counted against the client whose
//! connection minted it, and a client's fair share is the capacity divided
//! by the clients holding leaves (itself included). When the cache is full
//! and a client that already holds its share mints a new name, the new leaf
//! takes the place of that client's own oldest leaf instead of the least
//! recently used one: a client past its share churns only its own leaves.
//! A client under its share, or the only client holding leaves, evicts in
//! LRU order as before. A client holding no more than its share therefore
//! keeps its leaves whatever another client mints.
//!
//! This bookkeeping is touched when a leaf is minted into the cache and when
//! one leaves it (moka's eviction listener), never on a cache hit.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::intercept::Client;

/// The leaves each client minted into the main cache, oldest first.
#[derive(Debug)]
pub(super) struct Shares {
    capacity: usize,
    /// Leaves counted, over all clients.
    held: usize,
    clients: HashMap<Client, Held>,
    next_seq: u64,
}

/// One client's leaves.
#[derive(Debug, Default)]
struct Held {
    /// The sequence numbers of its leaves in the cache.
    live: HashSet<u64>,
    /// Its leaves' sequence numbers and names in the order they were minted;
    /// entries no longer `live` are skipped (and compacted away).
    order: VecDeque<(u64, String)>,
}

/// What [`Shares::displace`] decided for a new leaf.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Displaced {
    /// The name whose leaf gives up its place.
    pub key: String,
    /// The sequence number of that leaf (the cache removes it only if it is
    /// still this one).
    pub seq: u64,
}

impl Shares {
    /// Shares of a cache of `capacity` leaves.
    pub fn new(capacity: u64) -> Self {
        Shares {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            held: 0,
            clients: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Before `client` mints a new name into the cache: the leaf of its own
    /// that the new one replaces, when the cache is full, the client holds
    /// at least its fair share and another client holds leaves too. The
    /// leaf returned is no longer counted.
    pub fn displace(&mut self, client: Client) -> Option<Displaced> {
        if self.held < self.capacity {
            return None;
        }
        let holders = self.clients.len() + usize::from(!self.clients.contains_key(&client));
        if holders < 2 {
            return None; // the only client: plain LRU
        }
        let fair = (self.capacity / holders).max(1);
        let held = self.clients.get_mut(&client)?;
        if held.live.len() < fair {
            return None;
        }
        while let Some((seq, key)) = held.order.pop_front() {
            if held.live.remove(&seq) {
                self.held -= 1;
                if held.live.is_empty() {
                    self.clients.remove(&client);
                }
                return Some(Displaced { key, seq });
            }
        }
        None
    }

    /// Counts a leaf for `key` that `client` minted into the cache; its
    /// sequence number, to give back to [`release`](Self::release).
    pub fn record(&mut self, client: Client, key: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let held = self.clients.entry(client).or_default();
        held.live.insert(seq);
        held.order.push_back((seq, key.to_string()));
        self.held += 1;
        seq
    }

    /// A leaf left the cache (evicted, replaced, removed): it no longer
    /// counts against `client`. A leaf already given up by
    /// [`displace`](Self::displace) is not counted twice.
    pub fn release(&mut self, client: Client, seq: u64) {
        let Some(held) = self.clients.get_mut(&client) else {
            return;
        };
        if !held.live.remove(&seq) {
            return;
        }
        self.held -= 1;
        if held.live.is_empty() {
            self.clients.remove(&client);
        } else if held.order.len() > 2 * held.live.len() + 8 {
            let live = &held.live;
            held.order.retain(|(s, _)| live.contains(s));
        }
    }

    /// Leaves counted against `client` (tests).
    #[cfg(test)]
    pub fn held_by(&self, client: Client) -> usize {
        self.clients.get(&client).map_or(0, |h| h.live.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> Client {
        Client::Address(std::net::IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn a_lone_client_never_displaces_its_own() {
        let mut s = Shares::new(2);
        s.record(client(1), "a");
        s.record(client(1), "b");
        assert_eq!(s.displace(client(1)), None, "the only client: LRU");
    }

    #[test]
    fn a_client_past_its_share_displaces_its_oldest_when_full() {
        let mut s = Shares::new(4);
        s.record(client(1), "b1");
        for (i, name) in ["a1", "a2", "a3"].iter().enumerate() {
            assert_eq!(s.displace(client(2)), None, "room left at {i}");
            s.record(client(2), name);
        }
        // Full; client 2 holds 3 of 4, past its share of 2.
        let d = s.displace(client(2)).expect("its own oldest");
        assert_eq!(d.key, "a1");
        s.record(client(2), "a4");
        assert_eq!((s.held_by(client(1)), s.held_by(client(2))), (1, 3));
        // Client 1, under its share, takes the LRU path.
        assert_eq!(s.displace(client(1)), None);
        // A third client: shares of 1; client 2 still past it.
        assert_eq!(s.displace(client(3)), None, "it holds nothing yet");
        assert_eq!(s.displace(client(2)).map(|d| d.key), Some("a2".into()));
    }

    #[test]
    fn released_leaves_are_skipped_and_not_counted_twice() {
        let mut s = Shares::new(3);
        let b = s.record(client(1), "b");
        let a1 = s.record(client(2), "a1");
        s.record(client(2), "a2");
        s.release(client(2), a1); // evicted by the cache
        s.release(client(2), a1); // reported again: no effect
        assert_eq!(s.held_by(client(2)), 1);
        s.record(client(2), "a3");
        let d = s.displace(client(2)).expect("full, 2 of 3 > share 1");
        assert_eq!(d.key, "a2", "a1 already left");
        s.release(client(2), d.seq); // the cache's removal of a2: already given up
        assert_eq!(s.held_by(client(2)), 1);
        s.release(client(1), b);
        assert_eq!(s.held_by(client(1)), 0);
        assert!(!s.clients.contains_key(&client(1)), "no entry kept for it");
    }

    #[test]
    fn the_order_is_compacted() {
        let mut s = Shares::new(1000);
        s.record(client(1), "keep");
        for i in 0..100 {
            let seq = s.record(client(1), &format!("n{i}"));
            s.release(client(1), seq);
        }
        let held = &s.clients[&client(1)];
        assert!(
            held.order.len() <= 2 * held.live.len() + 9,
            "{}",
            held.order.len()
        );
    }
}
