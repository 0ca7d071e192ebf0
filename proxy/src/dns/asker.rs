//! Who asked a query, for the share of the upstream exchanges each client
//! may hold ([`super::forward`]): a TCP connection's client is known from
//! its accept ([`super::clients`]); a datagram's is looked up only when its
//! query goes upstream, since for a datagram from this host the lookup is a
//! `bpf(2)` call ([`crate::intercept::DnsSenders`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::intercept::{Client, DatagramIdentity};

/// Where the workloads of datagrams are found: set once interception is
/// attached, which is after the server started.
pub(crate) type Senders = Arc<OnceLock<Arc<dyn DatagramIdentity>>>;

/// Who asked a query.
pub(crate) enum Asker {
    /// Known already: a TCP connection's client.
    Known(Client),
    /// A datagram received from `peer` on `local`, its workload to be found
    /// in `senders` when needed.
    Datagram {
        peer: SocketAddr,
        local: SocketAddr,
        senders: Senders,
    },
}

impl Asker {
    /// The client the query counts for.
    pub(crate) fn client(&self) -> Client {
        match self {
            Asker::Known(client) => *client,
            Asker::Datagram {
                peer,
                local,
                senders,
            } => Client::of_datagram(senders.get().map(|s| &**s), *peer, *local),
        }
    }
}
