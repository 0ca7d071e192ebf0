//! Each name answered here (intercepted, a static record's) is the apex of a
//! zone of its own: SOA and NS queries get that zone's SOA and NS, and every
//! type with no records a "no data" carrying the same SOA, which caching
//! resolvers keep for its minimum (RFC 2308).

use super::peers::{dig, Dnsmasq};
use super::*;

/// The SOA rdata of every local name, as dig prints it.
const SOA: &str = "iron-proxy.invalid. hostmaster.iron-proxy.invalid. 1 3600 900 604800 60";

fn rr(name: &str, rtype: &str, rdata: &str) -> (String, u32, String, String) {
    (name.into(), 60, rtype.into(), rdata.into())
}

/// Before, an SOA or NS query got "no data" with an SOA in the authority section: the
/// answer said the name has no SOA while naming one for it.
#[tokio::test]
async fn soa_and_ns_of_a_local_name_agree_with_its_no_data_answers() {
    let mut s = settings(&[], None);
    s.records = vec![
        a_record("db.test", [10, 9, 9, 9]),
        cname_record("alias.test", "db.test"),
    ];
    let (_server, addr) = start(s).await;
    for mode in ["+notcp", "+tcp"] {
        for name in ["x.example.com.", "db.test."] {
            let d = dig(addr, &[mode, name, "SOA"]).await;
            assert_eq!(d.status, "NOERROR", "{mode} {name}: {}", d.raw);
            assert_eq!(d.answers, vec![rr(name, "SOA", SOA)], "{mode}: {}", d.raw);
            assert!(d.authorities.is_empty(), "{mode}: {}", d.raw);
            let d = dig(addr, &[mode, name, "NS"]).await;
            assert_eq!(d.status, "NOERROR", "{mode} {name}: {}", d.raw);
            assert_eq!(
                d.answers,
                vec![rr(name, "NS", "iron-proxy.invalid.")],
                "{mode}: {}",
                d.raw
            );
            for t in ["MX", "TXT", "AAAA", "CAA", "SRV"] {
                let d = dig(addr, &[mode, name, t]).await;
                assert_eq!(d.status, "NOERROR", "{mode} {name} {t}: {}", d.raw);
                assert!(d.answers.is_empty(), "{mode} {t}: {}", d.raw);
                assert_eq!(
                    d.authorities,
                    vec![rr(name, "SOA", SOA)],
                    "{mode} {t}: the zone's own SOA: {}",
                    d.raw
                );
            }
        }
        // Through a static CNAME: the chain, then the target's SOA.
        let d = dig(addr, &[mode, "alias.test.", "SOA"]).await;
        assert_eq!(
            d.answers,
            vec![
                rr("alias.test.", "CNAME", "db.test."),
                rr("db.test.", "SOA", SOA)
            ],
            "{mode}: {}",
            d.raw
        );
    }
}

/// dnsmasq, as a caching resolver in front of the proxy, keeps a "no data" answer only
/// when it carries an SOA: the second and third lookups never reach the proxy.
#[tokio::test]
async fn a_caching_resolver_in_front_keeps_the_no_data() {
    let (server, addr) = start(settings(&[], None)).await;
    let front = Dnsmasq::start(&[format!("--server=127.0.0.1#{}", addr.port())]).await;
    for _ in 0..3 {
        let d = dig(front.addr, &["+notcp", "neg.example.com", "AAAA"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.answers.is_empty(), "{}", d.raw);
        assert!(
            d.authorities
                .iter()
                .any(|a| a.0 == "neg.example.com." && a.2 == "SOA" && a.1 <= 60),
            "the SOA, its TTL at most the minimum: {}",
            d.raw
        );
    }
    let log = front.wait_log("cached neg.example.com").await;
    assert_eq!(
        log.matches("forwarded neg.example.com").count(),
        1,
        "asked once, then answered from the cache:\n{log}"
    );
    assert_eq!(server.stats().snapshot().intercepted, 1);
}
