//! The bounds on the DNS server's TCP connections ([`super::tcp`]): how many
//! are open, in total and per client, and the slot each admitted connection
//! holds until it closes.
//!
//! A client is its address, unless interception says which workload opened
//! the connection ([`crate::intercept::workload`], shared with the proxy
//! listeners' `proxy.max_connections_per_client`): every workload whose DNS the eBPF
//! programs redirect on this host connects from the same loopback address,
//! so keyed by address one workload holding [`MAX_PER_CLIENT`] connections
//! shut every other out of DNS over TCP. Keyed by workload (its uid and
//! cgroup), each has a bound of its own, and [`MAX_CONNECTIONS`] still
//! bounds them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) use crate::intercept::Client;
use crate::intercept::ClientIdentity;

/// TCP connections open at once, over all clients.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// TCP connections open at once from one client.
pub(crate) const MAX_PER_CLIENT: usize = 128;

/// Where the identity comes from: set once interception is attached, which
/// is after the server started.
pub(crate) type Identity = Arc<OnceLock<Arc<dyn ClientIdentity>>>;

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
