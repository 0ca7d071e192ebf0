//! The bounds on the DNS server's TCP connections ([`super::tcp`]): how many
//! are open, in total and per client, and the slot each admitted connection
//! holds until it closes.
//!
//! A client is its address, unless interception says which workload opened
//! the connection ([`ClientIdentity`]): every workload whose DNS the eBPF
//! programs redirect on this host connects from the same loopback address,
//! so keyed by address one workload holding [`MAX_PER_CLIENT`] connections
//! shut every other out of DNS over TCP. Keyed by workload (its uid and
//! cgroup), each has a bound of its own, and [`MAX_CONNECTIONS`] still
//! bounds them all.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

/// TCP connections open at once, over all clients.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// TCP connections open at once from one client.
pub(crate) const MAX_PER_CLIENT: usize = 128;

/// A workload, as interception recorded the process that opened a
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Workload {
    /// The process's uid.
    pub uid: u32,
    /// The id of its cgroup (v2).
    pub cgroup_id: u64,
}

/// Tells which workload opened a TCP connection to the DNS server.
pub trait ClientIdentity: Send + Sync {
    /// The workload that opened the connection accepted from `peer` on
    /// `local`, when interception redirected it there; `None` otherwise
    /// (a client that asked the server directly).
    fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload>;
}

/// Where the identity comes from: set once interception is attached, which
/// is after the server started.
pub(crate) type Identity = Arc<OnceLock<Arc<dyn ClientIdentity>>>;

/// What a per-client bound counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    /// A client interception did not identify: its address.
    Address(IpAddr),
    /// A workload interception identified.
    Workload(Workload),
}

impl Client {
    /// The client of a connection accepted from `peer`; `local` gives the
    /// address it was accepted on, asked only when there is an identity to
    /// ask (a `getsockname` per connection otherwise spent for nothing).
    pub(crate) fn of(
        identity: &Identity,
        peer: SocketAddr,
        local: impl FnOnce() -> Option<SocketAddr>,
    ) -> Client {
        let workload = identity
            .get()
            .and_then(|i| local().and_then(|local| i.identify(peer, local)));
        match workload {
            Some(w) => Client::Workload(w),
            None => Client::Address(crate::rules::canonical_ip(peer.ip())),
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Address(ip) => write!(f, "{ip}"),
            Client::Workload(w) => write!(f, "uid {} in cgroup id {}", w.uid, w.cgroup_id),
        }
    }
}

/// Open connections, in total and per client.
#[derive(Default)]
pub(crate) struct Open {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// One admitted connection: counted until dropped.
pub(crate) struct Slot {
    open: Arc<Mutex<Open>>,
    client: Client,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// Counts a connection from `client`, or `None` when a bound is reached.
pub(crate) fn admit(open: &Arc<Mutex<Open>>, client: Client) -> Option<Slot> {
    let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
    let mine = o.by_client.get(&client).copied().unwrap_or(0);
    if o.total >= MAX_CONNECTIONS || mine >= MAX_PER_CLIENT {
        return None;
    }
    o.total += 1;
    *o.by_client.entry(client).or_insert(0) += 1;
    Some(Slot {
        open: open.clone(),
        client,
    })
}
