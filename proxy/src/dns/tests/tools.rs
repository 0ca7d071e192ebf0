//! Tests with real tools: `dig` as the client and `dnsmasq` as the upstream
//! resolver, all on 127.0.0.1.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::peers::{dig, Dnsmasq, DNSMASQ_TTL};
use super::*;
use crate::dns::build_resolver;

#[tokio::test]
async fn dig_gets_intercepted_and_static_answers_over_udp_and_tcp() {
    let mut s = settings(&[], None);
    s.records = vec![
        a_record("db.test", [10, 9, 9, 9]),
        cname_record("alias.test", "db.test"),
    ];
    let (_server, addr) = start(s).await;
    for mode in ["+notcp", "+tcp"] {
        let d = dig(addr, &[mode, "x.example.com", "A"]).await;
        assert_eq!(d.status, "NOERROR", "{mode}: {}", d.raw);
        assert_eq!(
            d.rdata("A"),
            vec![PROXY_IP.to_string()],
            "{mode}: {}",
            d.raw
        );
        assert!(!d.raw.contains("AUTHORITY SECTION"), "{mode}: {}", d.raw);
        for t in ["AAAA", "TXT"] {
            let d = dig(addr, &[mode, "x.example.com", t]).await;
            assert_eq!(d.status, "NOERROR", "{mode} {t}: {}", d.raw);
            assert!(d.answers.is_empty(), "{mode} {t}: {}", d.raw);
            // "No data" with an SOA, so resolvers cache it (RFC 2308).
            let authority = d
                .raw
                .split(";; AUTHORITY SECTION:\n")
                .nth(1)
                .and_then(|s| s.lines().next())
                .unwrap_or_else(|| panic!("{mode} {t}: no authority section: {}", d.raw));
            let f: Vec<&str> = authority.split_whitespace().collect();
            assert_eq!(
                f.get(..5),
                Some(&["x.example.com.", "60", "IN", "SOA", "iron-proxy.invalid."][..]),
                "{mode} {t}: {}",
                d.raw
            );
            assert_eq!(f.last(), Some(&"60"), "{mode} {t}: minimum: {}", d.raw);
        }
        let d = dig(addr, &[mode, "alias.test", "CNAME"]).await;
        assert_eq!(d.rdata("CNAME"), vec!["db.test."], "{mode}: {}", d.raw);
        let d = dig(addr, &[mode, "alias.test", "A"]).await;
        assert_eq!(d.rdata("CNAME"), vec!["db.test."], "{mode}: {}", d.raw);
        assert_eq!(d.rdata("A"), vec!["10.9.9.9"], "{mode}: {}", d.raw);
    }

    let mut s = settings(&[], None);
    s.proxy_ip6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53));
    let (_server6, addr6) = start(s).await;
    for mode in ["+notcp", "+tcp"] {
        let d = dig(addr6, &[mode, "x.example.com", "AAAA"]).await;
        assert_eq!(d.rdata("AAAA"), vec!["fd00::53"], "{mode}: {}", d.raw);
    }
}

#[tokio::test]
async fn dnsmasq_passthrough_keeps_answers_and_ttls() {
    let up = Dnsmasq::start(&[]).await;
    let (server, addr) = start(settings(&["pass.test", "*.pass.test"], Some(up.addr))).await;
    for mode in ["+notcp", "+tcp"] {
        let d = dig(addr, &[mode, "pass.test", "A"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.rdata("A"), vec!["198.18.0.10"], "{mode}: {}", d.raw);
        assert_eq!(
            d.answers[0].1, DNSMASQ_TTL,
            "TTL as upstream gave it: {}",
            d.raw
        );
        let d = dig(addr, &[mode, "www.pass.test", "A"]).await;
        assert_eq!(d.rdata("A"), vec!["198.18.0.10"], "{mode}: {}", d.raw);
        let d = dig(addr, &[mode, "pass.test", "TXT"]).await;
        assert_eq!(d.rdata("TXT"), vec!["\"hello\""], "{mode}: {}", d.raw);
        assert_eq!(d.answers[0].1, DNSMASQ_TTL, "{}", d.raw);
    }
    up.wait_log("query[TXT] pass.test").await;
    assert_eq!(server.stats().snapshot().passthrough, 6);
}

#[tokio::test]
async fn intercepted_names_never_reach_dnsmasq() {
    let up = Dnsmasq::start(&[]).await;
    let mut s = settings(&["pass.test", "*.pass.test"], Some(up.addr));
    s.records = vec![cname_record("via-cname.test", "cname-target.exfil.test")];
    let (_server, addr) = start(s).await;
    for t in ["A", "AAAA", "TXT", "MX", "ANY"] {
        dig(addr, &["+notcp", "secret-udp.exfil.test", t]).await;
        dig(addr, &["+tcp", "secret-tcp.exfil.test", t]).await;
        dig(addr, &["+notcp", "via-cname.test", t]).await;
        dig(addr, &["+tcp", "pass.test.exfil.test", t]).await;
    }
    // A passthrough query afterwards proves the log is live.
    dig(addr, &["+notcp", "marker.pass.test", "A"]).await;
    let log = up.wait_log("marker.pass.test").await;
    assert!(
        !log.contains("exfil"),
        "an intercepted name reached the upstream:\n{log}"
    );
}

#[tokio::test]
async fn large_passthrough_answer_sets_tc_and_tcp_gets_it_whole() {
    let chunk = "a".repeat(200);
    let strings = vec![chunk; 10].join(",");
    let up = Dnsmasq::start(&[format!("--txt-record=big.pass.test,{strings}")]).await;
    let (_server, addr) = start(settings(&["*.pass.test"], Some(up.addr))).await;
    let d = dig(
        addr,
        &["+notcp", "+ignore", "+bufsize=1232", "big.pass.test", "TXT"],
    )
    .await;
    assert!(
        d.flags.iter().any(|f| f == "tc"),
        "expected TC over udp: {}",
        d.raw
    );
    // dig retries over TCP by itself when it sees TC.
    let d = dig(addr, &["+bufsize=1232", "big.pass.test", "TXT"]).await;
    let txt = d.rdata("TXT");
    assert_eq!(txt.len(), 1, "{}", d.raw);
    assert!(txt[0].len() > 2000, "whole TXT record over tcp: {}", d.raw);
    assert_eq!(d.answers[0].1, DNSMASQ_TTL);
    // Three client queries (udp, udp, then dig's tcp retry), each forwarded
    // over udp, truncated by dnsmasq (1232-byte payload) and retried over tcp.
    let log = up.log();
    assert_eq!(log.matches("query[TXT] big.pass.test").count(), 6, "{log}");
}

#[tokio::test]
async fn build_resolver_uses_the_given_upstream() {
    let up = Dnsmasq::start(&[]).await;
    let resolver = build_resolver(Some(up.addr)).expect("resolver");
    let ips = resolver.lookup_ip("www.pass.test.").await.expect("lookup");
    let v4: Vec<_> = ips.iter().collect();
    assert!(v4.contains(&"198.18.0.10".parse().expect("ip")), "{v4:?}");
    let left = ips
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    assert!(
        left > Duration::from_secs(u64::from(DNSMASQ_TTL) - 30)
            && left <= Duration::from_secs(u64::from(DNSMASQ_TTL)),
        "cache honours the upstream TTL: {left:?}"
    );
    up.wait_log("www.pass.test").await;
    // The OS-config variant only reads /etc/resolv.conf here; it sends nothing.
    build_resolver(None).expect("resolver from resolv.conf");
}

/// A passthrough name the upstream answers with a CNAME into an intercepted name (an
/// internal name that is an alias of a SaaS host): the workload gets the chain up to the
/// intercepted name and then the proxy's address for it, never the address the upstream
/// gave. Before, the upstream's whole answer went through, and a caching stub resolver in
/// front served that real address for every later lookup of the intercepted name. Records
/// the upstream adds for other names (answer, authority or additional section) are dropped.
#[tokio::test]
async fn a_passthrough_cname_into_an_intercepted_name_gets_the_proxys_address() {
    let up = Dnsmasq::start(&[
        "--host-record=saas.test,198.18.0.77".to_string(),
        "--cname=jira.pass.test,saas.test".to_string(),
        "--host-record=www2.pass.test,198.18.0.11".to_string(),
        "--cname=hop.pass.test,www2.pass.test".to_string(),
        "--mx-host=mail.pass.test,mx.elsewhere.test,10".to_string(),
        "--host-record=mx.elsewhere.test,198.18.0.78".to_string(),
    ])
    .await;
    let (server, addr) = start(settings(&["pass.test", "*.pass.test"], Some(up.addr))).await;
    for mode in ["+notcp", "+tcp"] {
        let d = dig(addr, &[mode, "jira.pass.test", "A"]).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.rdata("CNAME"), vec!["saas.test."], "{mode}: {}", d.raw);
        assert_eq!(
            d.rdata("A"),
            vec![PROXY_IP.to_string()],
            "{mode}: {}",
            d.raw
        );
        assert!(!d.raw.contains("198.18.0.77"), "{mode}: {}", d.raw);
        // A chain that stays in passthrough is kept whole.
        let d = dig(addr, &[mode, "hop.pass.test", "A"]).await;
        assert_eq!(
            d.rdata("CNAME"),
            vec!["www2.pass.test."],
            "{mode}: {}",
            d.raw
        );
        assert_eq!(d.rdata("A"), vec!["198.18.0.11"], "{mode}: {}", d.raw);
        // dnsmasq adds the MX host's address: not a passthrough name, dropped.
        let d = dig(addr, &[mode, "mail.pass.test", "MX"]).await;
        assert_eq!(
            d.rdata("MX"),
            vec!["10 mx.elsewhere.test."],
            "{mode}: {}",
            d.raw
        );
        assert!(!d.raw.contains("198.18.0.78"), "{mode}: {}", d.raw);
    }
    // The intercepted name itself never reached the upstream.
    up.wait_log("query[A] jira.pass.test").await;
    assert!(!up.log().contains("query[A] saas.test"), "{}", up.log());
    drop(server);
}
