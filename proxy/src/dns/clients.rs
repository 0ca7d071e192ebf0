//! The bounds on the DNS server's TCP connections ([`super::tcp`]): how many
//! are open, in total and per client, and the slot each admitted connection
//! holds until it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// TCP connections open at once, over all clients.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// TCP connections open at once from one client address.
pub(crate) const MAX_PER_CLIENT: usize = 128;

/// Open connections, in total and per client address.
#[derive(Default)]
pub(crate) struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection: counted until dropped.
pub(crate) struct Slot {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
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
pub(crate) fn admit(open: &Arc<Mutex<Open>>, client: IpAddr) -> Option<Slot> {
    let client = crate::rules::canonical_ip(client);
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
