//! `proxy.upstream_deny_cidrs`: ranges the proxy refuses to dial whatever the
//! allowlist says. Checked on every resolved address, after unmapping
//! IPv4-mapped IPv6 addresses. The unspecified address (`0.0.0.0`, `::`) is
//! checked as loopback (`127.0.0.1`, `::1`): a connect() to it reaches this
//! host, so a name that resolves to `0.0.0.0` must not get past a list that
//! denies loopback. An address in the NAT64 well-known prefix
//! (`64:ff9b::/96`), an IPv4-compatible one (`::a.b.c.d`) and a 6to4 one
//! (`2002::/16`) are also checked as the IPv4 address they embed. The eBPF
//! layer enforces the same list in the kernel, the same way (embedded forms aside:
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
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(|e| {
                IpAddr::V4(if e.is_unspecified() {
                    Ipv4Addr::LOCALHOST
                } else {
                    e
                })
            }),
            IpAddr::V4(_) => None,
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

/// The IPv4 address an IPv6 address leads to through a translator or a
/// tunnel, judged as well so that no spelling leads past a v4 range:
/// - the NAT64 well-known prefix (RFC 6052, `64:ff9b::/96`), which a DNS64
///   answer hands out;
/// - an IPv4-compatible address (`::a.b.c.d`, RFC 4291 2.5.5.1, deprecated
///   but still routed by hosts with an automatic tunnel), but not `::1`;
/// - 6to4 (RFC 3056, `2002:aabb:ccdd::/48`), whose relay sends to the
///   embedded address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_unspecified_address_is_judged_as_loopback() {
        let d = DenyList::new(vec!["127.0.0.0/8".parse().expect("cidr")]);
        for ip in ["64:ff9b::", "2002::"] {
            assert!(d.check(ip.parse().expect("ip")).is_some(), "{ip}");
        }
    }

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
    fn judges_v4_compatible_and_6to4_addresses_as_their_ipv4_address() {
        let d = DenyList::new(vec![
            "169.254.0.0/16".parse().expect("cidr"),
            "10.0.0.0/8".parse().expect("cidr"),
        ]);
        for hit in [
            "::169.254.169.254",
            "::a9fe:1",
            "::10.1.2.3",
            "2002:a9fe:a9fe::1",
            "2002:0a00:0001:ffff::",
        ] {
            assert!(d.check(hit.parse().expect("ip")).is_some(), "{hit}");
        }
        for miss in [
            "::1",
            "::",
            "::0.0.1.2",
            "2002:c000:0201::1",
            "2003:a9fe:a9fe::1",
        ] {
            assert!(d.check(miss.parse().expect("ip")).is_none(), "{miss}");
        }
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
