//! What a name gets: a static record, passthrough to the upstream, or the
//! proxy's address. Pure and synchronous, so it is tested without sockets.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{DnsError, DnsSettings, StaticRecord, LOCAL_TTL};
use crate::rules::HostPattern;

/// Longest chain of static CNAMEs followed before giving up.
pub(crate) use crate::config::MAX_CNAME_CHAIN;

/// The static records of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StaticEntry {
    /// One or more A records.
    A(Vec<Ipv4Addr>),
    /// An alias.
    Cname(Name),
}

/// Where a name is answered from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// From `dns.records`.
    Record(&'a StaticEntry),
    /// Forwarded to the upstream.
    Passthrough,
    /// Answered with the proxy's address; never leaves the proxy.
    Intercept,
}

/// The compiled `dns:` policy.
#[derive(Debug)]
pub(crate) struct Policy {
    records: HashMap<String, StaticEntry>,
    passthrough: Vec<HostPattern>,
    proxy_ip: Ipv4Addr,
    proxy_ip6: Option<Ipv6Addr>,
}

impl Policy {
    /// Compiles the settings; rejects bad record names, CNAME conflicts and loops.
    pub(crate) fn new(settings: &DnsSettings) -> Result<Policy, DnsError> {
        let mut records: HashMap<String, StaticEntry> = HashMap::new();
        for rec in &settings.records {
            match rec {
                StaticRecord::A { name, ip } => {
                    let key = record_key(name)?;
                    match records
                        .entry(key)
                        .or_insert_with(|| StaticEntry::A(Vec::new()))
                    {
                        StaticEntry::A(ips) => ips.push(*ip),
                        StaticEntry::Cname(_) => return Err(DnsError::CnameConflict(name.clone())),
                    }
                }
                StaticRecord::Cname { name, target } => {
                    let key = record_key(name)?;
                    // Validate the target's spelling like a record name, then keep it as a Name.
                    let target_key = record_key(target)?;
                    let mut target = Name::from_ascii(&target_key)
                        .map_err(|_| DnsError::RecordName(target.clone()))?;
                    target.set_fqdn(true);
                    if records.insert(key, StaticEntry::Cname(target)).is_some() {
                        return Err(DnsError::CnameConflict(name.clone()));
                    }
                }
            }
        }
        let policy = Policy {
            records,
            passthrough: settings.passthrough.clone(),
            proxy_ip: settings.proxy_ip,
            proxy_ip6: settings.proxy_ip6,
        };
        for (name, entry) in &policy.records {
            if let StaticEntry::Cname(target) = entry {
                policy.check_chain(name, target)?;
            }
        }
        Ok(policy)
    }

    fn check_chain(&self, start: &str, first: &Name) -> Result<(), DnsError> {
        let mut next = first.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            match self.route(&next) {
                Route::Record(StaticEntry::Cname(t)) => next = t.clone(),
                _ => return Ok(()),
            }
        }
        Err(DnsError::CnameLoop(start.to_string()))
    }

    /// Where `name` is answered from. A name that is not a plain host name
    /// (labels with dots, spaces, `*` or other bytes) is always intercepted:
    /// its text form could match a glob it does not belong to.
    pub(crate) fn route(&self, name: &Name) -> Route<'_> {
        let Some(key) = host_key(name) else {
            return Route::Intercept;
        };
        if let Some(entry) = self.records.get(&key) {
            return Route::Record(entry);
        }
        if self.passthrough.iter().any(|p| p.matches(&key)) {
            return Route::Passthrough;
        }
        Route::Intercept
    }

    /// The made-up answer for an intercepted `name`: the proxy's address for A
    /// (and AAAA when configured), nothing for other types.
    pub(crate) fn intercept_answers(&self, name: &Name, qtype: RecordType) -> Vec<Record> {
        let mut out = Vec::new();
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            out.push(local_record(name, RData::A(A(self.proxy_ip))));
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            if let Some(ip6) = self.proxy_ip6 {
                out.push(local_record(name, RData::AAAA(AAAA(ip6))));
            }
        }
        out
    }
}

/// How an intercepted name that RFC 6761 reserves is answered instead of
/// with the proxy's address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// `localhost` and names below it: the loopback address (§6.3), as
    /// `/etc/hosts` would; a workload's own `localhost` is not the proxy.
    Loopback,
    /// Names under `.invalid` (§6.4) and `.onion` (RFC 7686): NXDOMAIN.
    NoSuchName,
}

/// Whether `name` is one of the special-use names of [`Special`].
pub(crate) fn special(name: &Name) -> Option<Special> {
    let last = name.iter().next_back()?;
    if last.eq_ignore_ascii_case(b"localhost") {
        Some(Special::Loopback)
    } else if last.eq_ignore_ascii_case(b"invalid") || last.eq_ignore_ascii_case(b"onion") {
        Some(Special::NoSuchName)
    } else {
        None
    }
}

/// The loopback answers of a `localhost` name for `qtype`.
pub(crate) fn loopback_answers(name: &Name, qtype: RecordType) -> Vec<Record> {
    let mut out = Vec::new();
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        out.push(local_record(name, RData::A(A(Ipv4Addr::LOCALHOST))));
    }
    if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
        out.push(local_record(name, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
    }
    out
}

/// The answers of a static A entry for `qtype` (none for AAAA and other types:
/// the record owns the name, so it is not intercepted for them either).
pub(crate) fn static_a_answers(name: &Name, ips: &[Ipv4Addr], qtype: RecordType) -> Vec<Record> {
    if !matches!(qtype, RecordType::A | RecordType::ANY) {
        return Vec::new();
    }
    ips.iter()
        .map(|ip| local_record(name, RData::A(A(*ip))))
        .collect()
}

/// The CNAME record `name → target`.
pub(crate) fn cname_record(name: &Name, target: &Name) -> Record {
    local_record(name, RData::CNAME(CNAME(target.clone())))
}

/// The server named in the SOA and NS records of the names answered here:
/// no real server (`.invalid`, RFC 6761), since nothing else serves them.
const LOCAL_SERVER: &str = "iron-proxy.invalid.";
/// The SOA's responsible mailbox (`hostmaster@iron-proxy.invalid`).
const LOCAL_MAILBOX: &str = "hostmaster.iron-proxy.invalid.";

/// The SOA of a name answered here. Each such name (intercepted, a static
/// record's, `localhost`) is the apex of a zone of its own, served only by
/// this server: an SOA query gets this record, an NS query
/// [`local_ns`], and an answer with no records of the asked type carries it
/// in the authority section, so that resolvers cache the "no data" for the
/// SOA's minimum (RFC 2308 §5: the lesser of the SOA's TTL and its minimum),
/// here the TTL of the local answers. Without an SOA they may not cache it at
/// all and ask again for each connection. The timers are RFC 1912's ranges
/// (no secondary ever reads them); the serial never changes, as the answers
/// do not.
pub(crate) fn local_soa(name: &Name) -> Record {
    let soa = SOA::new(
        local_server(),
        Name::from_ascii(LOCAL_MAILBOX).unwrap_or_else(|_| Name::root()),
        1,
        3600,
        900,
        604_800,
        LOCAL_TTL,
    );
    local_record(name, RData::SOA(soa))
}

/// The NS of a name answered here: the SOA's server ([`local_soa`]), so
/// that an NS query gets an answer that agrees with the SOA instead of
/// a "no data" that says the zone's apex has no servers.
pub(crate) fn local_ns(name: &Name) -> Record {
    local_record(name, RData::NS(NS(local_server())))
}

/// The answers of a name answered here for the zone-apex types: its SOA
/// and NS; nothing for other types.
pub(crate) fn apex_answers(name: &Name, qtype: RecordType) -> Vec<Record> {
    match qtype {
        RecordType::SOA => vec![local_soa(name)],
        RecordType::NS => vec![local_ns(name)],
        _ => Vec::new(),
    }
}

fn local_server() -> Name {
    // A constant that parses: the fallback is never taken.
    Name::from_ascii(LOCAL_SERVER).unwrap_or_else(|_| Name::root())
}

fn local_record(name: &Name, rdata: RData) -> Record {
    Record::from_rdata(name.clone(), LOCAL_TTL, rdata)
}

/// The lowercase dotted form of `name` without the trailing dot, or `None`
/// when a label holds anything but letters, digits, `-` and `_`.
pub(crate) fn host_key(name: &Name) -> Option<String> {
    let mut key = String::new();
    for label in name.iter() {
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        for b in label {
            key.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(key)
}

fn record_key(raw: &str) -> Result<String, DnsError> {
    let mut name = Name::from_ascii(raw.trim()).map_err(|_| DnsError::RecordName(raw.into()))?;
    name.set_fqdn(true);
    match host_key(&name) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(DnsError::RecordName(raw.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(records: Vec<StaticRecord>, passthrough: &[&str]) -> DnsSettings {
        DnsSettings {
            listen: Vec::new(),
            proxy_ip: Ipv4Addr::new(10, 0, 0, 1),
            proxy_ip6: None,
            upstream: None,
            passthrough: passthrough
                .iter()
                .map(|p| p.parse().expect("test pattern"))
                .collect(),
            records,
            mark_as_proxy: false,
            clients: crate::client_acl::ClientAcl::new(None),
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    #[test]
    fn routes_records_then_passthrough_then_intercept() {
        let recs = vec![StaticRecord::A {
            name: "Db.Cluster.Local.".into(),
            ip: Ipv4Addr::new(10, 1, 1, 1),
        }];
        let p = Policy::new(&settings(recs, &["*.cluster.local"])).expect("policy");
        assert!(matches!(
            p.route(&name("db.cluster.local.")),
            Route::Record(_)
        ));
        assert_eq!(p.route(&name("API.cluster.local")), Route::Passthrough);
        assert_eq!(p.route(&name("cluster.local")), Route::Passthrough);
        assert_eq!(p.route(&name("evil.com")), Route::Intercept);
    }

    #[test]
    fn odd_labels_are_never_passed_through() {
        let p = Policy::new(&settings(vec![], &["*.corp"])).expect("policy");
        // One label "secret.corp" as the TLD: its text form ends in ".corp".
        let mut n = Name::from_labels(vec![b"a".to_vec(), b"secret.corp".to_vec()]).expect("name");
        n.set_fqdn(true);
        assert_eq!(p.route(&n), Route::Intercept);
        let spaced = Name::from_labels(vec![b"x y".to_vec(), b"corp".to_vec()]).expect("name");
        assert_eq!(host_key(&spaced), None);
        assert_eq!(p.route(&name("*.corp")), Route::Intercept);
        assert_eq!(p.route(&name("ok_1-a.corp")), Route::Passthrough);
    }

    #[test]
    fn rejects_cname_loops_and_conflicts() {
        let cname = |n: &str, t: &str| StaticRecord::Cname {
            name: n.into(),
            target: t.into(),
        };
        let looped = vec![cname("a.test", "b.test"), cname("b.test", "a.test")];
        assert!(matches!(
            Policy::new(&settings(looped, &[])),
            Err(DnsError::CnameLoop(_))
        ));
        let conflict = vec![
            cname("a.test", "b.test"),
            StaticRecord::A {
                name: "a.test".into(),
                ip: Ipv4Addr::LOCALHOST,
            },
        ];
        assert!(matches!(
            Policy::new(&settings(conflict, &[])),
            Err(DnsError::CnameConflict(_))
        ));
        let bad = vec![cname("a.test", "bad name")];
        assert!(matches!(
            Policy::new(&settings(bad, &[])),
            Err(DnsError::RecordName(_))
        ));
    }

    #[test]
    fn intercept_answers_by_type() {
        let mut s = settings(vec![], &[]);
        let p = Policy::new(&s).expect("policy");
        let n = name("x.test.");
        assert_eq!(p.intercept_answers(&n, RecordType::A).len(), 1);
        assert!(p.intercept_answers(&n, RecordType::AAAA).is_empty());
        assert!(p.intercept_answers(&n, RecordType::TXT).is_empty());
        s.proxy_ip6 = Some(Ipv6Addr::LOCALHOST);
        let p = Policy::new(&s).expect("policy");
        assert_eq!(p.intercept_answers(&n, RecordType::AAAA).len(), 1);
        assert_eq!(p.intercept_answers(&n, RecordType::ANY).len(), 2);
    }

    #[test]
    fn a_local_name_is_the_apex_of_its_own_zone() {
        let n = name("x.test.");
        let soa = local_soa(&n);
        assert_eq!(soa.name, n);
        assert_eq!(soa.ttl, LOCAL_TTL);
        let RData::SOA(rdata) = &soa.data else {
            panic!("not an SOA: {soa:?}");
        };
        assert_eq!(rdata.minimum, LOCAL_TTL);
        assert_eq!(rdata.mname.to_ascii(), LOCAL_SERVER);
        assert_eq!(rdata.rname.to_ascii(), LOCAL_MAILBOX);
        assert!(rdata.refresh > rdata.retry && rdata.expire > rdata.refresh);
        let ns = local_ns(&n);
        assert_eq!((ns.name.clone(), ns.ttl), (n.clone(), LOCAL_TTL));
        assert_eq!(
            ns.data,
            RData::NS(NS(rdata.mname.clone())),
            "NS agrees with the SOA"
        );
        assert_eq!(apex_answers(&n, RecordType::SOA), vec![soa]);
        assert_eq!(apex_answers(&n, RecordType::NS), vec![ns]);
        assert!(apex_answers(&n, RecordType::TXT).is_empty());
    }
}
