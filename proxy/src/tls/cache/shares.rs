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
//! and a client mints a new name, the new leaf takes the place of an oldest
//! minted leaf, never of the least recently used one of whoever:
//!
//! - a client holding at least its share gives up its own oldest;
//! - a client under its share, or holding nothing yet, takes the place of
//!   the oldest leaf of the client holding the most leaves, which is then
//!   past its share (a full cache shared by clients none of which holds
//!   more than its share would leave the minter above it).
//!
//! The only client holding leaves evicts in LRU order as before. A client
//! holding no more than its share therefore keeps its leaves whatever
//! another client mints. Finding the client holding the most is a lookup in
//! an ordered index of the counts, kept as leaves come and go: O(log
//! clients) per mint.
//!
//! A client gives up its oldest *minted* leaf, not its least used one: a
//! name it connects to all the time goes too, and is minted again on its
//! next connection (the hit path records no use, to stay one lookup).
//!
//! This bookkeeping is touched when a leaf is minted into the cache and when
//! one leaves it (moka's eviction listener), never on a cache hit.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::intercept::Client;

/// The leaves each client minted into the main cache, oldest first.
#[derive(Debug)]
pub(super) struct Shares {
    capacity: usize,
    /// Leaves counted, over all clients.
    held: usize,
    clients: HashMap<Client, Held>,
    /// Each client in `clients` by the number of leaves it holds, to find
    /// the one holding the most.
    by_count: BTreeSet<(usize, Client)>,
    /// Names whose mint made room already (a concurrent mint of the same
    /// name makes none: only one of them takes a place).
    making_room: HashSet<String>,
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
            by_count: BTreeSet::new(),
            making_room: HashSet::new(),
            next_seq: 0,
        }
    }

    /// Before `client` mints `key`, a name not in the cache: the leaf
    /// the new one replaces, when the cache is full and another client
    /// holds leaves too. That is the client's own oldest when it holds at
    /// least its fair share, else the oldest of the client holding the
    /// most. The leaf returned is no longer counted, and `key` is marked as
    /// making room until [`made_room`](Self::made_room): a concurrent mint
    /// of the same name displaces nothing.
    pub fn displace(&mut self, client: Client, key: &str) -> Option<Displaced> {
        if self.held < self.capacity || self.making_room.contains(key) {
            return None;
        }
        let holders = self.clients.len() + usize::from(!self.clients.contains_key(&client));
        if holders < 2 {
            return None; // the only client: plain LRU
        }
        let fair = (self.capacity / holders).max(1);
        let mine = self.clients.get(&client).map_or(0, |h| h.live.len());
        let from = if mine >= fair {
            client
        } else {
            // The cache is full and the minter under its share, so another
            // client is past it; `None` only if the counts were wrong.
            let &(most, owner) = self.by_count.last()?;
            if most <= fair {
                return None;
            }
            owner
        };
        let displaced = self.take_oldest(from)?;
        self.making_room.insert(key.to_string());
        Some(displaced)
    }

    /// The mint of `key` that made room ended (its leaf cached, or not).
    pub fn made_room(&mut self, key: &str) {
        self.making_room.remove(key);
    }

    /// Counts a leaf for `key` that `client` minted into the cache; its
    /// sequence number, to give back to [`release`](Self::release).
    pub fn record(&mut self, client: Client, key: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let held = self.clients.entry(client).or_default();
        let before = held.live.len();
        held.live.insert(seq);
        held.order.push_back((seq, key.to_string()));
        self.held += 1;
        self.recount(client, before, before + 1);
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
        let left = held.live.len();
        if left > 0 && held.order.len() > 2 * left + 8 {
            let live = &held.live;
            held.order.retain(|(s, _)| live.contains(s));
        }
        self.forget_one(client, left);
    }

    /// Takes `client`'s oldest leaf out of the count.
    fn take_oldest(&mut self, client: Client) -> Option<Displaced> {
        let held = self.clients.get_mut(&client)?;
        while let Some((seq, key)) = held.order.pop_front() {
            if held.live.remove(&seq) {
                let left = held.live.len();
                self.forget_one(client, left);
                return Some(Displaced { key, seq });
            }
        }
        None
    }

    /// One of `client`'s leaves is no longer counted; it holds `left`.
    fn forget_one(&mut self, client: Client, left: usize) {
        self.held -= 1;
        if left == 0 {
            self.clients.remove(&client);
        }
        self.recount(client, left + 1, left);
    }

    /// `client` went from holding `from` leaves to `to` in `by_count`.
    fn recount(&mut self, client: Client, from: usize, to: usize) {
        if from > 0 {
            self.by_count.remove(&(from, client));
        }
        if to > 0 {
            self.by_count.insert((to, client));
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
        assert_eq!(s.displace(client(1), "c"), None, "the only client: LRU");
    }

    #[test]
    fn a_client_past_its_share_displaces_its_oldest_when_full() {
        let mut s = Shares::new(4);
        s.record(client(1), "b1");
        for (i, name) in ["a1", "a2", "a3"].iter().enumerate() {
            assert_eq!(s.displace(client(2), name), None, "room left at {i}");
            s.record(client(2), name);
        }
        // Full; client 2 holds 3 of 4, past its share of 2.
        let d = s.displace(client(2), "a4").expect("its own oldest");
        assert_eq!(d.key, "a1");
        s.record(client(2), "a4");
        s.made_room("a4");
        assert_eq!((s.held_by(client(1)), s.held_by(client(2))), (1, 3));
        // Client 1, under its share, takes the place of the oldest leaf of
        // client 2, which holds the most.
        let d = s.displace(client(1), "b2").expect("client 2's oldest");
        assert_eq!(d.key, "a2");
        s.record(client(1), "b2");
        s.made_room("b2");
        // A third client, holding nothing yet: shares of 1; client 1 and
        // 2 hold 2 each, the tie goes to either.
        let d = s
            .displace(client(3), "c1")
            .expect("the oldest of one holding 2");
        assert!(["b1", "a3"].contains(&d.key.as_str()), "{d:?}");
    }

    #[test]
    fn a_name_being_minted_makes_room_once() {
        let mut s = Shares::new(2);
        s.record(client(1), "a");
        s.record(client(2), "b");
        assert_eq!(s.displace(client(1), "n").map(|d| d.key), Some("a".into()));
        s.record(client(1), "c"); // another name took the room meanwhile
        assert_eq!(s.displace(client(2), "n"), None, "room made for n already");
        s.made_room("n");
        assert_eq!(s.displace(client(2), "n").map(|d| d.key), Some("b".into()));
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
        let d = s.displace(client(2), "a4").expect("full, 2 of 3 > share 1");
        assert_eq!(d.key, "a2", "a1 already left");
        s.release(client(2), d.seq); // the cache's removal of a2: already given up
        assert_eq!(s.held_by(client(2)), 1);
        s.release(client(1), b);
        assert_eq!(s.held_by(client(1)), 0);
        assert!(!s.clients.contains_key(&client(1)), "no entry kept for it");
        assert_eq!(
            s.by_count.iter().collect::<Vec<_>>(),
            [&(1, client(2))],
            "the index follows the counts"
        );
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
