//! Fairness between the clients of the one UDP socket ([`super::udp`]).
//!
//! Every query arrives on the same socket, and the kernel drops what does
//! not fit in its receive buffer without looking at whose it is. A client
//! flooding queries faster than the server answers them kept that buffer
//! full, so the other clients' queries were dropped at the same rate as the
//! flood's: two Python flooders (about 70,000 queries a second) left a `dig`
//! from another address half its queries unanswered.
//!
//! Each client has a budget of [`RATE`] queries a second, with bursts of up
//! to [`BURST`] (a token bucket, as BIND's and Knot's response rate
//! limiting keep per client). The budget is spent by every query but
//! enforced only while the server is **behind**: the last read of the
//! socket found more datagrams waiting than one batch takes
//! ([`READ_BATCH`]). Then a query of a client with no budget left is dropped
//! as soon as it is read, before it is parsed or answered: reading a
//! datagram costs a fraction of answering it, so the server catches up with
//! the flood and the other clients' queries are answered. While the server
//! keeps up, every query is answered, however many a client sends.
//!
//! A client is its address ([`Client::Address`]), except for a datagram
//! from this host that interception redirected: that one counts for the
//! workload whose socket sent it ([`Client::Workload`], its uid and cgroup,
//! from the record the eBPF egress program keeps per UDP socket,
//! [`crate::intercept::DnsSenders`]). Every workload redirected on this host
//! sends from loopback, so keyed by address a flooding workload had every
//! other's queries dropped with its own. Finding the workload costs a
//! `bpf(2)` call, so it is done only while the server is behind, when the
//! budget is enforced: while the server keeps up, a datagram from loopback
//! spends its address's budget (nothing is dropped then), and a workload's
//! budget counts the queries it sends while the server is behind. Workloads
//! behind one address elsewhere (NAT) still share one budget.

use std::collections::HashMap;
use std::time::Instant;

use crate::intercept::Client;

/// Queries a second a client may send while the server is behind, on
/// average. A host's whole resolver (systemd-resolved, a build's burst of
/// lookups) stays well under it; a flood is far above.
pub(crate) const RATE: f64 = 2_000.0;

/// The most queries a client may send at once while the server is behind:
/// a resolver's burst (hundreds of names, A and AAAA each) fits.
pub(crate) const BURST: f64 = 4_000.0;

/// Datagrams read from the socket in one go; a read that finds this many
/// waiting means the server is behind.
pub(crate) const READ_BATCH: usize = 64;

/// Clients whose budget is kept; beyond this the full (idle) ones are
/// forgotten, and if that is not enough, all of them (fairness lapses for a
/// moment rather than memory growing).
const MAX_CLIENTS: usize = 8192;

/// The budgets of the clients seen lately.
pub(crate) struct Budgets {
    by_client: HashMap<Client, Bucket>,
    /// Whether the last read found the server behind.
    behind: bool,
    /// Queries dropped since the count was last taken.
    shed: u64,
}

/// A client's token bucket.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Budgets {
    pub(crate) fn new() -> Self {
        Budgets {
            by_client: HashMap::new(),
            behind: false,
            shed: 0,
        }
    }

    /// Says whether the last read of the socket found it behind (a full
    /// batch waiting).
    pub(crate) fn set_behind(&mut self, behind: bool) {
        self.behind = behind;
    }

    /// Whether the last read found the server behind: then a client over
    /// its budget is dropped, and datagrams from this host are worth
    /// identifying.
    pub(crate) fn behind(&self) -> bool {
        self.behind
    }

    /// Spends one query of `client`'s budget at `now`: true when it is to be
    /// answered, false when it is dropped (the server is behind and `client`
    /// has no budget left).
    pub(crate) fn admit(&mut self, client: Client, now: Instant) -> bool {
        if !self.by_client.contains_key(&client) && self.by_client.len() >= MAX_CLIENTS {
            self.by_client.retain(|_, b| b.refilled(now).tokens < BURST);
            if self.by_client.len() >= MAX_CLIENTS {
                self.by_client.clear();
            }
        }
        let bucket = self.by_client.entry(client).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        *bucket = bucket.refilled(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        if !self.behind {
            return true;
        }
        self.shed += 1;
        false
    }

    /// Queries dropped since the last call.
    pub(crate) fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.shed)
    }
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        Bucket {
            tokens: (self.tokens + secs * RATE).min(BURST),
            at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> Client {
        Client::new(s.parse().expect("address"), None)
    }

    #[test]
    fn a_client_over_its_budget_is_dropped_only_while_the_server_is_behind() {
        let mut b = Budgets::new();
        let t = Instant::now();
        let flood = ip("127.0.0.2");
        for _ in 0..BURST as usize {
            assert!(b.admit(flood, t), "a burst within the budget");
        }
        // Keeping up: answered all the same.
        assert!(b.admit(flood, t));
        b.set_behind(true);
        assert!(!b.admit(flood, t), "behind and out of budget");
        assert!(b.admit(ip("127.0.0.3"), t), "another client is answered");
        assert!(
            b.admit(ip("::ffff:127.0.0.3"), t),
            "the same client, v4-mapped"
        );
        // Two workloads behind loopback have budgets of their own.
        let workload =
            |cgroup_id| Client::Workload(crate::intercept::Workload { uid: 0, cgroup_id });
        for _ in 0..BURST as usize {
            assert!(b.admit(workload(1), t));
        }
        assert!(!b.admit(workload(1), t), "the flooding workload is dropped");
        assert!(b.admit(workload(2), t), "the other workload is answered");
        assert_eq!(b.take_shed(), 2);
        // The budget comes back at RATE a second.
        assert!(b.admit(flood, t + Duration::from_millis(10)));
        b.set_behind(false);
        assert!(b.admit(flood, t + Duration::from_millis(10)));
    }

    #[test]
    fn the_budgets_kept_are_bounded() {
        let mut b = Budgets::new();
        let t = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            assert!(b.admit(Client::new(std::net::Ipv4Addr::from(i).into(), None), t));
        }
        assert!(b.by_client.len() <= MAX_CLIENTS);
    }
}
