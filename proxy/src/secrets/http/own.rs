//! The proxy's own listening sockets, which its backend calls must never
//! reach. A backend name that resolves to iron-proxy itself (the host's
//! resolv.conf points at iron-proxy's DNS server, whose answer is
//! `dns.proxy_ip`; or a backend URL written with the proxy's address) would
//! otherwise send the call through the proxy's own pipeline: an OAuth2 mint
//! would be answered by the proxy's token-endpoint stub, and the stub token
//! would be injected upstream as if it were real.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

/// The addresses iron-proxy listens on, shared by every backend client and
/// filled by the app as it binds (listeners, DNS, metrics, management), plus
/// the DNS interception answers (`dns.proxy_ip`, `dns.proxy_ip6`). Cloning
/// shares the set.
#[derive(Clone, Default)]
pub struct OwnListeners {
    inner: Arc<RwLock<Own>>,
}

#[derive(Default)]
struct Own {
    listeners: Vec<SocketAddr>,
    proxy_ips: Vec<IpAddr>,
}

impl OwnListeners {
    /// An empty set: nothing is refused (tests, and calls made before the
    /// listeners are bound).
    pub fn new() -> Self {
        OwnListeners::default()
    }

    /// Adds a bound listening socket.
    pub fn add_listener(&self, addr: SocketAddr) {
        let mut own = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if !own.listeners.contains(&addr) {
            own.listeners.push(addr);
        }
    }

    /// Removes a listening socket a reload closed.
    pub fn remove_listener(&self, addr: SocketAddr) {
        let mut own = self.inner.write().unwrap_or_else(|p| p.into_inner());
        own.listeners.retain(|l| *l != addr);
    }

    /// Adds an address the DNS server answers intercepted names with. A
    /// backend call to it on one of the listeners' ports reaches the proxy
    /// even when the address is not local (NAT, port publishing); other ports
    /// are left alone, since `proxy_ip` is often 127.0.0.1, where real local
    /// backends (a Vault agent, 1Password Connect) also live.
    pub fn add_proxy_ip(&self, ip: IpAddr) {
        let mut own = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if !own.proxy_ips.contains(&ip) {
            own.proxy_ips.push(ip);
        }
    }

    /// The own listener a connection to `target` would reach, if any: the
    /// same address; a wildcard listener (`:80`) on the same port when
    /// `target` is an address of this host; or `dns.proxy_ip` on a
    /// listener's port. An unspecified target (`0.0.0.0`, `::`) is this
    /// host's loopback, as the kernel connects it; an IPv6 wildcard listener
    /// also takes IPv4 (metrics and management bind `[::]` dual-stack).
    pub fn find(&self, target: SocketAddr) -> Option<SocketAddr> {
        let own = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let ip = match target.ip().to_canonical() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let target = SocketAddr::new(ip, target.port());
        let same_port = || own.listeners.iter().filter(|l| l.port() == target.port());
        if let Some(l) = same_port().find(|l| l.ip() == ip) {
            return Some(*l);
        }
        let takes = |l: &SocketAddr| l.is_ipv6() || ip.is_ipv4();
        if let Some(l) = same_port().find(|l| l.ip().is_unspecified() && takes(l) && is_local(ip)) {
            return Some(*l);
        }
        if own.proxy_ips.contains(&ip) && same_port().next().is_some() {
            return Some(target);
        }
        None
    }
}

/// True if `ip` is an address of this host (in this network namespace):
/// loopback, or one a socket can bind to.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn a_listener_is_found_by_address_and_port_only() {
        let own = OwnListeners::new();
        own.add_listener(addr("127.0.0.1:18380"));
        own.add_listener(addr("[::1]:18743"));
        assert_eq!(
            own.find(addr("127.0.0.1:18380")),
            Some(addr("127.0.0.1:18380"))
        );
        assert_eq!(
            own.find(addr("[::ffff:127.0.0.1]:18380")),
            Some(addr("127.0.0.1:18380")),
            "an IPv4-mapped address is the IPv4 one"
        );
        assert_eq!(own.find(addr("[::1]:18743")), Some(addr("[::1]:18743")));
        assert_eq!(own.find(addr("127.0.0.1:18381")), None, "another port");
        assert_eq!(own.find(addr("127.0.0.2:18380")), None, "another address");
        assert_eq!(own.find(addr("192.0.2.1:18380")), None);
    }

    #[test]
    fn a_wildcard_listener_covers_the_hosts_own_addresses() {
        let own = OwnListeners::new();
        own.add_listener(addr("0.0.0.0:9090"));
        assert_eq!(own.find(addr("127.0.0.1:9090")), Some(addr("0.0.0.0:9090")));
        assert_eq!(
            own.find(addr("127.8.9.10:9090")),
            Some(addr("0.0.0.0:9090"))
        );
        // TEST-NET-1 is never an address of this host.
        assert_eq!(own.find(addr("192.0.2.1:9090")), None);
        assert_eq!(own.find(addr("127.0.0.1:9091")), None);
        assert_eq!(
            own.find(addr("[::1]:9090")),
            None,
            "an IPv4 wildcard does not take IPv6"
        );
        assert_eq!(
            own.find(addr("0.0.0.0:9090")),
            Some(addr("0.0.0.0:9090")),
            "0.0.0.0 connects to this host"
        );
    }

    #[test]
    fn an_unspecified_target_is_loopback_and_an_ipv6_wildcard_takes_ipv4() {
        let own = OwnListeners::new();
        own.add_listener(addr("127.0.0.1:8080"));
        own.add_listener(addr("[::]:9090"));
        assert_eq!(own.find(addr("0.0.0.0:8080")), Some(addr("127.0.0.1:8080")));
        assert_eq!(
            own.find(addr("[::ffff:0.0.0.0]:8080")),
            Some(addr("127.0.0.1:8080"))
        );
        for target in ["127.0.0.2:9090", "0.0.0.0:9090", "[::]:9090", "[::1]:9090"] {
            assert_eq!(
                own.find(addr(target)),
                Some(addr("[::]:9090")),
                "{target} reaches the dual-stack listener"
            );
        }
        assert_eq!(own.find(addr("192.0.2.1:9090")), None);
        assert_eq!(own.find(addr("0.0.0.0:8081")), None, "another port");
    }

    #[test]
    fn the_dns_answer_counts_on_the_listeners_ports_only() {
        let own = OwnListeners::new();
        own.add_listener(addr("0.0.0.0:443"));
        own.add_proxy_ip("192.0.2.7".parse().expect("ip"));
        assert_eq!(own.find(addr("192.0.2.7:443")), Some(addr("192.0.2.7:443")));
        assert_eq!(
            own.find(addr("192.0.2.7:8200")),
            None,
            "a backend next to the proxy"
        );
    }

    #[test]
    fn an_empty_set_refuses_nothing_and_clones_share_it() {
        let own = OwnListeners::new();
        let shared = own.clone();
        assert_eq!(own.find(addr("127.0.0.1:80")), None);
        shared.add_listener(addr("127.0.0.1:80"));
        assert_eq!(own.find(addr("127.0.0.1:80")), Some(addr("127.0.0.1:80")));
        shared.remove_listener(addr("127.0.0.1:80"));
        assert_eq!(own.find(addr("127.0.0.1:80")), None, "a closed listener");
    }
}
