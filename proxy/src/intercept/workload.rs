//! Who a client is, for the bounds kept per client (the proxy listeners'
//! `proxy.max_connections_per_client`, the DNS server's TCP connections):
//! its address, unless interception recorded which workload opened the
//! connection.
//!
//! Every workload whose connections the eBPF programs redirect on this host
//! reaches the proxy from the same loopback address, so keyed by address
//! one workload at its bound shuts every other out. Keyed by workload (its
//! uid and cgroup, from the record [`OriginalDst`] reads), each has a bound
//! of its own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::{Origin, OriginalDst};

/// A workload, as interception recorded the process that opened a
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Workload {
    /// The process's uid.
    pub uid: u32,
    /// The id of its cgroup (v2).
    pub cgroup_id: u64,
}

impl From<&Origin> for Workload {
    fn from(o: &Origin) -> Self {
        Workload {
            uid: o.uid,
            cgroup_id: o.cgroup_id,
        }
    }
}

/// Tells which workload opened a connection the proxy accepted.
pub trait ClientIdentity: Send + Sync {
    /// The workload that opened the connection accepted from `peer` on
    /// `local`, when interception redirected it there; `None` otherwise
    /// (a client that connected to the proxy directly).
    fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload>;
}

/// The interception record of a redirected connection names its workload.
/// The lookup takes the record out of the map: ask once per connection.
impl ClientIdentity for OriginalDst {
    fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload> {
        self.lookup(peer, local).as_ref().map(Workload::from)
    }
}

/// What a per-client bound counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A client interception did not identify: its address (IPv4-mapped
    /// IPv6 as the IPv4 address).
    Address(IpAddr),
    /// A workload interception identified.
    Workload(Workload),
}

impl Client {
    /// The client at `peer`: `workload` when interception identified it,
    /// else the address.
    pub fn new(peer: IpAddr, workload: Option<Workload>) -> Client {
        match workload {
            Some(w) => Client::Workload(w),
            None => Client::Address(crate::rules::canonical_ip(peer)),
        }
    }

    /// The client of a connection accepted from `peer`, asking `identity`
    /// when there is one; `local` gives the address it was accepted on,
    /// asked only then (a `getsockname` per connection otherwise spent for
    /// nothing).
    pub fn identified(
        identity: Option<&dyn ClientIdentity>,
        peer: SocketAddr,
        local: impl FnOnce() -> Option<SocketAddr>,
    ) -> Client {
        let workload = identity.and_then(|i| local().and_then(|local| i.identify(peer, local)));
        Client::new(peer.ip(), workload)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_its_workload_when_known_else_its_canonical_address() {
        let w = Workload {
            uid: 1000,
            cgroup_id: 42,
        };
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            Client::new(mapped, None),
            Client::Address("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(Client::new(mapped, Some(w)), Client::Workload(w));
        assert_eq!(Client::Workload(w).to_string(), "uid 1000 in cgroup id 42");
        assert_eq!(Client::new(mapped, None).to_string(), "127.0.0.1");
    }

    #[test]
    fn without_an_identity_the_local_address_is_not_asked() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let c = Client::identified(None, peer, || panic!("getsockname without an identity"));
        assert_eq!(c, Client::Address(peer.ip()));
    }
}
