//! The `dns:` section: the built-in DNS server's settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::decode::{one_of_any_case, str_with, Cx, Decode, Res};
use super::values::ListenAddr;
use super::yaml::{Kind, Node};
use crate::rules::HostPattern;

/// `dns:`: the built-in DNS server, which answers every name with `proxy_ip`.
/// Absent means no DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Bind address (default `:53`).
    pub listen: ListenAddr,
    /// The IPv4 address every intercepted name resolves to (A answers).
    pub proxy_ip: Ipv4Addr,
    /// Our addition: the IPv6 address for AAAA answers (none: empty NOERROR).
    pub proxy_ip6: Option<Ipv6Addr>,
    /// Resolver for passthrough names and for upstream connections; the OS default when absent.
    pub upstream_resolver: Option<SocketAddr>,
    /// Names forwarded to the upstream resolver instead of intercepted.
    pub passthrough: Vec<HostPattern>,
    /// Static records, which win over interception and passthrough.
    pub records: Vec<DnsRecord>,
}

/// One `dns.records[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Lowercase name without trailing dot.
    pub name: String,
    /// The record.
    pub value: DnsRecordValue,
}

/// The typed value of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecordValue {
    /// `type: A` with an IPv4 address.
    A(Ipv4Addr),
    /// `type: CNAME` with a lowercase target name.
    Cname(String),
}

/// A DNS name, lowercase, without its trailing dot, an internationalized one
/// in its ASCII form (`bücher.example` is `xn--bcher-kva.example`, the name
/// resolvers ask for).
fn hostname(s: &str) -> Result<String, String> {
    let name = crate::rules::ascii_host(s.trim_end_matches('.')).map_err(|e| e.to_string())?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("invalid host name {s:?}"));
    }
    Ok(name)
}

/// [`hostname`], with the warnings about characters a reader cannot see.
fn dns_name(node: &Node, cx: &mut Cx) -> Res<String> {
    let name = str_with(node, cx, hostname)?;
    super::common::warn_host_characters(node, &name, cx);
    Ok(name)
}

fn ipv4(node: &Node, cx: &mut Cx, hint: &str) -> Res<Ipv4Addr> {
    str_with(node, cx, |s| match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(v4),
        Ok(IpAddr::V6(_)) => Err(format!("{s:?} is an IPv6 address; {hint}")),
        Err(_) => Err(format!("invalid IPv4 address {s:?}")),
    })
}

/// `host:port`, or a bare IP meaning port 53.
fn resolver(node: &Node, cx: &mut Cx) -> Res<SocketAddr> {
    str_with(node, cx, |s| {
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| format!("invalid resolver address {s:?}: expected ip:port such as \"8.8.8.8:53\" or \"[2001:4860:4860::8888]:53\""))
    })
}

#[derive(Clone, Copy)]
enum RecordType {
    A,
    Cname,
}

impl Decode for DnsRecord {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "type", "value"])?;
        let name = m.req_with(cx, "name", dns_name);
        // Any case, as DNS itself reads type names (`a`, `cname`).
        let kind = m.req_with(cx, "type", |n, cx| {
            one_of_any_case(
                n,
                cx,
                "record type",
                &[("A", RecordType::A), ("CNAME", RecordType::Cname)],
            )
        });
        let value = match kind {
            Ok(RecordType::A) => m
                .req_with(cx, "value", |n, cx| {
                    ipv4(n, cx, "A records take IPv4 addresses")
                })
                .map(DnsRecordValue::A),
            Ok(RecordType::Cname) => m.req_with(cx, "value", dns_name).map(DnsRecordValue::Cname),
            Err(f) => Err(f),
        };
        Ok(DnsRecord {
            name: name?,
            value: value?,
        })
    }
}

/// The longest CNAME chain among `records` the server follows; a longer one,
/// or a loop, is refused here (the server would refuse it at start-up).
pub const MAX_CNAME_CHAIN: usize = 8;

/// `records[]`, refusing a name with a CNAME and any other record (RFC 1034
/// §3.6.2), and a CNAME chain through the records that loops or is longer
/// than [`MAX_CNAME_CHAIN`].
fn records(node: &Node, cx: &mut Cx) -> Res<Vec<DnsRecord>> {
    let list: Vec<DnsRecord> = Decode::decode(node, cx)?;
    let pos = |i: usize| match &node.kind {
        Kind::Seq(items) => items.get(i).map_or(node.pos, |n| n.pos),
        _ => node.pos,
    };
    for (i, r) in list.iter().enumerate() {
        let clash = list[..i].iter().any(|o| {
            o.name == r.name
                && (matches!(o.value, DnsRecordValue::Cname(_))
                    || matches!(r.value, DnsRecordValue::Cname(_)))
        });
        if clash {
            let msg = format!("'{}' has a CNAME and another record", r.name);
            return Err(cx.index(i, |cx| cx.error(pos(i), msg)));
        }
    }
    let cname = |name: &str| {
        list.iter().find_map(|r| match &r.value {
            DnsRecordValue::Cname(t) if r.name == name => Some(t.as_str()),
            _ => None,
        })
    };
    for (i, r) in list.iter().enumerate() {
        let DnsRecordValue::Cname(first) = &r.value else {
            continue;
        };
        let mut chain = vec![r.name.as_str()];
        let mut next = Some(first.as_str());
        while let Some(name) = next {
            let looped = chain.contains(&name);
            chain.push(name);
            next = cname(name);
            if looped || (next.is_some() && chain.len() > MAX_CNAME_CHAIN) {
                let why = if looped {
                    "loops".to_string()
                } else {
                    chain.extend(next);
                    format!("is longer than {MAX_CNAME_CHAIN} records")
                };
                let msg = format!("CNAME chain {} {why}", chain.join(" -> "));
                return Err(cx.index(i, |cx| cx.error(pos(i), msg)));
            }
        }
    }
    Ok(list)
}

/// The keys of `dns`.
pub(super) const DNS_FIELDS: [&str; 6] = [
    "listen",
    "proxy_ip",
    "proxy_ip6",
    "upstream_resolver",
    "passthrough",
    "records",
];

impl Decode for DnsConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &DNS_FIELDS)?;
        let listen = m.or(cx, "listen", ListenAddr::AllInterfaces(53));
        let proxy_ip = m.req_with(cx, "proxy_ip", |n, cx| {
            ipv4(
                n,
                cx,
                "proxy_ip is the IPv4 answer (set proxy_ip6 for AAAA)",
            )
        });
        let proxy_ip6 = m.opt_with(cx, "proxy_ip6", |n, cx| {
            str_with(n, cx, |s| {
                s.parse::<Ipv6Addr>()
                    .map_err(|_| format!("invalid IPv6 address {s:?}"))
            })
        });
        let upstream_resolver = m.opt_with(cx, "upstream_resolver", resolver);
        let passthrough = m.or_default(cx, "passthrough");
        let records = m.opt_with(cx, "records", records);
        Ok(DnsConfig {
            listen: listen?,
            proxy_ip: proxy_ip?,
            proxy_ip6: proxy_ip6?,
            upstream_resolver: upstream_resolver?,
            passthrough: passthrough?,
            records: records?.unwrap_or_default(),
        })
    }
}
