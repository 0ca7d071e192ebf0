//! `proxy.upstream_deny_cidrs`: ranges the proxy refuses to dial whatever the
//! allowlist says. Checked on every resolved address, after unmapping
//! IPv4-mapped IPv6 addresses. The unspecified address (`0.0.0.0`, `::`) is
//! checked as loopback (`127.0.0.1`, `::1`): a connect() to it reaches this
//! host, so a name that resolves to `0.0.0.0` must not get past a list that
//! denies loopback. An address in the NAT64 well-known prefix
//! (`64:ff9b::/96`) is also checked as the IPv4 address it embeds. The eBPF
//! layer enforces the same list in the kernel, the same way (NAT64 aside:
//! there every TCP connection goes to the proxy, which dials by name and
//! checks here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::rules::canonical_ip;

/// The deny list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    nets: Vec<IpNet>,
}

impl DenyList {
    /// A deny list of `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        DenyList { nets }
    }

    /// The first range that contains `ip`, if any.
    pub fn check(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = match canonical_ip(ip) {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        // An IPv4 address inside the NAT64 well-known prefix (RFC 6052,
        // `64:ff9b::/96`) reaches that IPv4 address through a NAT64 gateway:
        // judged as it too, so a DNS64 answer cannot lead past a v4 range.
        let embedded = match ip {
            IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                let o = v6.octets();
                Some(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])))
            }
            _ => None,
        };
        self.nets
            .iter()
            .find(|n| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)))
    }

    /// The ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_a_nat64_address_as_the_ipv4_address_it_embeds() {
        let d = DenyList::new(vec!["169.254.169.254/32".parse().expect("cidr")]);
        assert!(d.check("64:ff9b::a9fe:a9fe".parse().expect("ip")).is_some());
        assert!(d
            .check("64:ff9b::169.254.169.254".parse().expect("ip"))
            .is_some());
        assert!(d.check("64:ff9b::a9fe:a9fd".parse().expect("ip")).is_none());
        // Only the well-known /96: another prefix embeds nothing we can know.
        assert!(d
            .check("64:ff9b:1::a9fe:a9fe".parse().expect("ip"))
            .is_none());
    }

    #[test]
    fn unmaps_v4_mapped() {
        let d = DenyList::new(vec![
            "169.254.169.254/32".parse().expect("cidr"),
            "::1/128".parse().expect("cidr"),
        ]);
        assert!(d.check("169.254.169.254".parse().expect("ip")).is_some());
        assert!(d
            .check("::ffff:169.254.169.254".parse().expect("ip"))
            .is_some());
        assert!(d.check("::1".parse().expect("ip")).is_some());
        assert!(d.check("169.254.169.253".parse().expect("ip")).is_none());
    }

    /// A connect() to the unspecified address lands on this host's loopback,
    /// so a list that denies loopback denies it too, in every spelling; one
    /// that does not deny loopback lets it through.
    #[test]
    fn the_unspecified_address_is_checked_as_loopback() {
        let d = DenyList::new(crate::config::default_deny_cidrs());
        for ip in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert!(d.check(ip.parse().expect("ip")).is_some(), "{ip}");
        }
        assert!(d.check("0.0.0.1".parse().expect("ip")).is_none());
        let v4_only = DenyList::new(vec!["127.0.0.0/8".parse().expect("cidr")]);
        assert!(v4_only.check("0.0.0.0".parse().expect("ip")).is_some());
        assert!(v4_only.check("::".parse().expect("ip")).is_none());
        assert!(DenyList::new(Vec::new())
            .check("0.0.0.0".parse().expect("ip"))
            .is_none());
    }
}
