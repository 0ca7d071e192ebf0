//! `proxy.client_cidrs`: which client addresses may use the proxy at all.
//!
//! The listeners default to every interface (`:80`, `:443`, `:53`), and the
//! proxy adds real credentials to what its clients send. Where the network
//! does not already keep everyone but the workloads away from those ports, a
//! client that can reach them gets the credentials' reach (and a passthrough
//! DNS zone's answers) too. Mature proxies restrict their clients by source
//! address for that reason: squid's `http_access allow localnet`,
//! tinyproxy's `Allow`, dnsmasq's `--local-service`, unbound's
//! `access-control`. With the list set, a connection from any other address
//! is closed right after `accept(2)`, before a byte is read, with one audit
//! record (`client_not_allowed`), and a DNS query from one gets no answer.
//!
//! Loopback clients are always admitted: what eBPF and nftables interception
//! redirect on this host arrives from loopback, and so do the host's own
//! processes, which can read the configuration anyway. Absent (the default),
//! every client is admitted, as the spec's proxy does. A reload replaces the
//! list; connections already open stay open.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use ipnet::IpNet;

use crate::ops::warn_every::WarnEvery;

/// The audit reason of a connection refused for its client's address.
pub const REASON: &str = "client_not_allowed";

/// How often a refusal is warned about at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The addresses allowed to be clients (see the module doc).
#[derive(Debug)]
pub struct ClientAcl {
    cidrs: ArcSwapOption<Vec<IpNet>>,
    warned: WarnEvery,
}

impl ClientAcl {
    /// An ACL admitting `cidrs` (and loopback); `None` admits everyone.
    pub fn new(cidrs: Option<Vec<IpNet>>) -> Arc<Self> {
        Arc::new(ClientAcl {
            cidrs: ArcSwapOption::from(cidrs.map(Arc::new)),
            warned: WarnEvery::new(WARN_EVERY),
        })
    }

    /// Replaces the list (a reload); says whether it changed.
    pub fn set(&self, cidrs: Option<Vec<IpNet>>) -> bool {
        let changed = self.cidrs.load().as_deref() != cidrs.as_ref();
        self.cidrs.store(cidrs.map(Arc::new));
        changed
    }

    /// Whether a client at `ip` may use the proxy. An IPv4 client of a dual-stack
    /// socket (`::ffff:a.b.c.d`) is judged as the IPv4 address it is.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match &*self.cidrs.load() {
            None => true,
            Some(cidrs) => ip.is_loopback() || cidrs.iter().any(|n| n.contains(&ip)),
        }
    }

    /// Warns about a refused client, at most every [`WARN_EVERY`]; `what`
    /// says what was refused ("connection", "dns query").
    pub fn refused(&self, ip: IpAddr, what: &str) {
        if let Some(held_back) = self.warned.due(Instant::now()) {
            tracing::warn!(
                client = %ip.to_canonical(),
                refused_since_last_warning = held_back,
                "refused a {what} from a client outside proxy.client_cidrs (warned at most every 10 s)"
            );
        }
    }

    /// The `error` of a refused connection's audit record.
    pub fn error(ip: IpAddr) -> String {
        format!(
            "client address {} is not in proxy.client_cidrs",
            ip.to_canonical()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_list_every_client_is_admitted() {
        let acl = ClientAcl::new(None);
        assert!(acl.allows(ip("203.0.113.9")));
        assert!(acl.allows(ip("2001:db8::1")));
    }

    #[test]
    fn with_a_list_only_its_ranges_and_loopback_are_admitted() {
        let acl = ClientAcl::new(Some(vec!["10.0.0.0/8".parse().unwrap()]));
        assert!(acl.allows(ip("10.1.2.3")));
        assert!(!acl.allows(ip("11.0.0.1")));
        assert!(!acl.allows(ip("2001:db8::1")));
        assert!(acl.allows(ip("127.0.0.5")));
        assert!(acl.allows(ip("::1")));
        // A dual-stack socket's IPv4 client.
        assert!(acl.allows(ip("::ffff:10.9.9.9")));
        assert!(!acl.allows(ip("::ffff:192.0.2.1")));
        assert!(acl.allows(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn a_reload_replaces_the_list_and_says_whether_it_changed() {
        let acl = ClientAcl::new(Some(vec!["10.0.0.0/8".parse().unwrap()]));
        assert!(!acl.set(Some(vec!["10.0.0.0/8".parse().unwrap()])));
        assert!(acl.set(Some(vec!["192.0.2.0/24".parse().unwrap()])));
        assert!(!acl.allows(ip("10.1.2.3")));
        assert!(acl.allows(ip("192.0.2.7")));
        assert!(acl.set(None));
        assert!(acl.allows(ip("10.1.2.3")));
    }
}
