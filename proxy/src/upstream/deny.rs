//! `proxy.upstream_deny_cidrs`: ranges the proxy refuses to dial whatever the
//! allowlist says. Checked on every resolved address, after unmapping
//! IPv4-mapped IPv6 addresses. The eBPF layer enforces the same list in the kernel.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::rules::canonical_ip;

/// The deny list.
#[derive(Debug, Clone, Default)]
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
        let ip = canonical_ip(ip);
        self.nets.iter().find(|n| n.contains(&ip))
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
}
