//! Who a client is, for the bounds kept per client (the proxy listeners'
//! `proxy.max_connections_per_client`, the DNS server's TCP connections,
//! its UDP budgets and the passthrough share): its address, unless
//! interception recorded which workload opened the connection or sent the
//! datagram.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Tells which workload sent a datagram the proxy received (its UDP DNS
/// server, where every workload redirected on this host sends from
/// loopback).
pub trait DatagramIdentity: Send + Sync {
    /// The workload whose redirected socket sent the datagram received from
    /// `peer` on `local` (the address the datagram was sent to); `None`
    /// when interception recorded none (a process sending to the server
    /// directly).
    fn identify_datagram(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload>;
}

/// What a per-client bound counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Client {
    /// A client interception did not identify: its address (IPv4-mapped
    /// IPv6 as the IPv4 address).
    Address(IpAddr),
    /// A workload interception identified.
    Workload(Workload),
}

impl Client {
    /// The client of work done for no client connection (a background
    /// connect the upstream pool finishes after its request went
    /// elsewhere, a unit test's exchange): all such work shares one
    /// client's bounds.
    pub const UNKNOWN: Client = Client::Address(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));

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

    /// The client of a datagram received from `peer` on `local`: the
    /// workload `identity` names when the datagram comes from this host (a
    /// loopback address, or `local`'s own: a redirected datagram's source),
    /// else the address. A datagram from elsewhere costs no lookup.
    pub fn of_datagram(
        identity: Option<&dyn DatagramIdentity>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Client {
        let ip = crate::rules::canonical_ip(peer.ip());
        let from_host = ip.is_loopback() || ip == crate::rules::canonical_ip(local.ip());
        let workload = identity
            .filter(|_| from_host)
            .and_then(|i| i.identify_datagram(peer, local));
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

    /// Names `w` for the datagrams of one tuple, and counts what it was asked.
    struct OneSocket {
        peer: SocketAddr,
        local: SocketAddr,
        w: Workload,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl DatagramIdentity for OneSocket {
        fn identify_datagram(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (peer == self.peer && local == self.local).then_some(self.w)
        }
    }

    #[test]
    fn a_datagram_from_this_host_is_its_workload_when_recorded_else_its_address() {
        let local: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let w = Workload {
            uid: 1000,
            cgroup_id: 42,
        };
        let id = OneSocket {
            peer,
            local,
            w,
            asked: Default::default(),
        };
        let asked = || id.asked.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            Client::of_datagram(Some(&id), peer, local),
            Client::Workload(w)
        );
        // Another socket on loopback with no record: a host process, its address.
        let other: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert_eq!(
            Client::of_datagram(Some(&id), other, local),
            Client::Address(other.ip())
        );
        // A datagram from the listener's own (non-loopback) address is from this host too.
        let on_lan: SocketAddr = "10.1.2.3:53".parse().expect("addr");
        let from_lan_ip: SocketAddr = "10.1.2.3:40000".parse().expect("addr");
        Client::of_datagram(Some(&id), from_lan_ip, on_lan);
        assert_eq!(asked(), 3);
        // From elsewhere: its address, and the map is not asked.
        let remote: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        assert_eq!(
            Client::of_datagram(Some(&id), remote, on_lan),
            Client::Address(remote.ip())
        );
        assert_eq!(asked(), 3, "no lookup for a datagram from another host");
        // Without interception: the address.
        assert_eq!(
            Client::of_datagram(None, peer, local),
            Client::Address(peer.ip())
        );
    }

    #[test]
    fn without_an_identity_the_local_address_is_not_asked() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let c = Client::identified(None, peer, || panic!("getsockname without an identity"));
        assert_eq!(c, Client::Address(peer.ip()));
    }
}
