//! In-process tests: a hickory-built client against the server on 127.0.0.1:0.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::*;

#[tokio::test]
async fn intercepts_every_type_over_udp_and_tcp() {
    let (server, addr) = start(settings(&[], None)).await;
    for tcp in [false, true] {
        let ask = |name: &'static str, t| async move {
            if tcp {
                tcp_query(addr, name, t).await
            } else {
                udp_query(addr, name, t, Some(1232)).await
            }
        };
        let a = ask("x.test.", RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_addrs(&a), vec![PROXY_IP], "tcp={tcp}");
        assert_eq!(a.answers[0].ttl, crate::dns::LOCAL_TTL);
        for t in [RecordType::AAAA, RecordType::TXT, RecordType::MX] {
            let m = ask("no-such-name.example.", t).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{t} tcp={tcp}"
            );
            assert!(
                m.answers.is_empty(),
                "{t} should be empty, got {:?}",
                m.answers
            );
        }
    }
    assert_eq!(server.stats().snapshot().intercepted, 8);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn aaaa_answers_proxy_ip6_when_set() {
    let mut s = settings(&[], None);
    s.proxy_ip6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let (_server, addr) = start(s).await;
    let m = udp_query(addr, "x.test.", RecordType::AAAA, None).await;
    match m.answers.as_slice() {
        [r] => assert_eq!(
            r.data,
            RData::AAAA(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into())
        ),
        other => panic!("expected one AAAA, got {other:?}"),
    }
}

#[tokio::test]
async fn static_records_take_precedence_and_cnames_follow_targets() {
    let up = FakeUpstream::start(Mode::Answer {
        count: 1,
        truncate_udp: false,
    })
    .await;
    let mut s = settings(&["*.pass.test"], Some(up.addr));
    s.records = vec![
        a_record("db.pass.test", [10, 1, 1, 1]),
        a_record("db.pass.test", [10, 1, 1, 2]),
        cname_record("alias.test", "db.pass.test"),
        cname_record("to-pass.test", "api.pass.test"),
        cname_record("to-intercept.test", "elsewhere.test"),
        cname_record("hop.test", "alias.test"),
    ];
    let (server, addr) = start(s).await;

    let m = udp_query(addr, "db.pass.test.", RecordType::A, None).await;
    assert_eq!(
        a_addrs(&m),
        vec![Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(10, 1, 1, 2)]
    );
    let m = udp_query(addr, "db.pass.test.", RecordType::AAAA, None).await;
    assert!(m.answers.is_empty(), "static A name has no AAAA");

    let m = udp_query(addr, "hop.test.", RecordType::A, None).await;
    let kinds: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        kinds,
        [
            RecordType::CNAME,
            RecordType::CNAME,
            RecordType::A,
            RecordType::A
        ]
    );
    let m = tcp_query(addr, "to-pass.test.", RecordType::A).await;
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(a_addrs(&m), vec![Ipv4Addr::new(198, 18, 1, 0)]);
    assert_eq!(m.answers[1].ttl, FAKE_TTL, "upstream TTL kept");
    let m = udp_query(addr, "to-intercept.test.", RecordType::A, None).await;
    assert_eq!(a_addrs(&m), vec![PROXY_IP]);
    let m = udp_query(addr, "to-intercept.test.", RecordType::CNAME, None).await;
    assert_eq!(m.answers.len(), 1, "CNAME query gets the CNAME only");

    // The client asked over TCP; the upstream is asked over UDP first regardless.
    assert_eq!(up.seen(), vec!["api.pass.test. A udp edns".to_string()]);
    assert_eq!(server.stats().snapshot().record, 6);
}

#[tokio::test]
async fn intercepted_names_never_reach_the_upstream() {
    let up = FakeUpstream::start(Mode::Answer {
        count: 1,
        truncate_udp: false,
    })
    .await;
    let mut s = settings(&["*.pass.test"], Some(up.addr));
    s.records = vec![cname_record("c.test", "secret-target.test")];
    let (server, addr) = start(s).await;
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::MX,
        RecordType::ANY,
    ] {
        udp_query(addr, "secret.evil.test.", t, Some(1232)).await;
        tcp_query(addr, "secret.evil.test.", t).await;
        udp_query(addr, "c.test.", t, None).await;
    }
    // A label holding a dot whose text form ends in ".pass.test".
    let mut raw = Message::query();
    let mut n = hickory_proto::rr::Name::from_labels(vec![
        b"x".to_vec(),
        b"leak.pass".to_vec(),
        b"test".to_vec(),
    ])
    .expect("name");
    n.set_fqdn(true);
    raw.add_query(hickory_proto::op::Query::query(n, RecordType::A));
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&raw.to_vec().expect("encode"), addr)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("answered")
        .expect("recv");

    udp_query(addr, "ok.pass.test.", RecordType::A, None).await;
    assert_eq!(up.seen(), vec!["ok.pass.test. A udp edns".to_string()]);
    assert_eq!(server.stats().snapshot().passthrough, 1);
}

#[tokio::test]
async fn truncated_upstream_answer_falls_back_to_tcp_and_truncates_to_client() {
    let up = FakeUpstream::start(Mode::Answer {
        count: 60,
        truncate_udp: true,
    })
    .await;
    let (_server, addr) = start(settings(&["big.test"], Some(up.addr))).await;
    // No EDNS: 60 A records (~1 KiB) exceed 512 bytes, so the client sees TC.
    let m = udp_query(addr, "big.test.", RecordType::A, None).await;
    assert!(
        m.metadata.truncation,
        "udp answer over 512 bytes must set TC"
    );
    let m = tcp_query(addr, "big.test.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(a_addrs(&m).len(), 60);
    assert!(m.answers.iter().all(|r| r.ttl == FAKE_TTL));
    // With EDNS 4096 the whole answer fits in one datagram.
    let m = udp_query(addr, "big.test.", RecordType::A, Some(4096)).await;
    assert_eq!(a_addrs(&m).len(), 60);
    let seen = up.seen();
    assert!(
        seen.iter().any(|s| s.contains(" udp")) && seen.iter().any(|s| s.contains(" tcp")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_udp_answer_that_does_not_fit_is_the_question_alone_with_tc() {
    let up = FakeUpstream::start(Mode::Answer {
        count: 60,
        truncate_udp: false,
    })
    .await;
    let mut s = settings(&["big.test"], Some(up.addr));
    s.records = (1..=40)
        .map(|i| a_record("many.static.test", [192, 0, 2, i]))
        .collect();
    let (_server, addr) = start(s).await;
    // 60 passthrough A records (~1 KiB) and 40 static ones (~660 bytes),
    // neither fitting in 512 bytes without EDNS nor in a 512-byte payload.
    for (name, edns) in [
        ("big.test.", None),
        ("big.test.", Some(512)),
        ("many.static.test.", None),
    ] {
        let (m, raw) = udp_query_raw(addr, name, RecordType::A, edns).await;
        assert!(m.metadata.truncation, "{name} {edns:?}: TC");
        assert!(raw.len() <= 512, "{name} {edns:?}: {} bytes", raw.len());
        assert!(
            m.answers.is_empty() && m.authorities.is_empty(),
            "{name} {edns:?}: a cut answer is sent without records: {m:?}"
        );
        assert_eq!(m.edns.is_some(), edns.is_some(), "{name}: OPT kept");
        assert_eq!(m.queries.len(), 1, "{name}: the question");
    }
    // What fits goes whole, without TC.
    let (m, _) = udp_query_raw(addr, "big.test.", RecordType::A, Some(1232)).await;
    assert!(!m.metadata.truncation);
    assert_eq!(a_addrs(&m).len(), 60);
    let (m, _) = udp_query_raw(addr, "many.static.test.", RecordType::A, Some(1232)).await;
    assert_eq!(a_addrs(&m).len(), 40);
}

#[tokio::test]
async fn additional_records_that_do_not_fit_are_left_out_without_tc() {
    let up = FakeUpstream::start(Mode::Additional { count: 60 }).await;
    let (_server, addr) = start(settings(&["glue.test"], Some(up.addr))).await;
    let (m, raw) = udp_query_raw(addr, "glue.test.", RecordType::A, None).await;
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    assert!(!m.metadata.truncation, "the answer itself is whole: no TC");
    assert_eq!(a_addrs(&m), [Ipv4Addr::new(198, 18, 2, 0)]);
    assert!(m.additionals.is_empty(), "{:?}", m.additionals);
    let (m, _) = udp_query_raw(addr, "glue.test.", RecordType::A, Some(4096)).await;
    assert_eq!(m.additionals.len(), 60);
}

#[tokio::test]
async fn malformed_packets_are_dropped_and_service_continues() {
    let (server, addr) = start(settings(&[], None)).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (_, good) = query_bytes("x.test.", RecordType::A, None);
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 5],
        good[..14].to_vec(), // header plus a cut name
        [&good[..4], &[0xff, 0xff], &good[6..]].concat(), // qdcount 65535
        (0..=255u8).cycle().take(3000).collect(),
    ];
    for j in &junk {
        sock.send_to(j, addr).await.expect("send junk");
    }
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write junk");
    drop(tcp);
    let m = udp_query(addr, "x.test.", RecordType::A, None).await;
    assert_eq!(a_addrs(&m), vec![PROXY_IP]);
    let m = tcp_query(addr, "x.test.", RecordType::A).await;
    assert_eq!(a_addrs(&m), vec![PROXY_IP]);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn refuses_other_classes_and_zone_transfers() {
    let (server, addr) = start(settings(&[], None)).await;
    let mut msg = Message::query();
    let mut q = hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("version.bind.").expect("name"),
        RecordType::TXT,
    );
    q.set_query_class(DNSClass::CH);
    msg.add_query(q);
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&msg.to_vec().expect("encode"), addr)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("answered")
        .expect("recv");
    let m = Message::from_vec(&buf[..n]).expect("parse");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = tcp_query(addr, "x.test.", RecordType::AXFR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(server.stats().snapshot().refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_200_concurrent_queries() {
    let (server, addr) = start(settings(&[], None)).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(tokio::spawn(async move {
            let name = format!("host{i}.example.");
            let m = if i % 4 == 0 {
                tcp_query(addr, &name, RecordType::A).await
            } else {
                udp_query(addr, &name, RecordType::A, None).await
            };
            a_addrs(&m)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), vec![PROXY_IP]);
    }
    assert_eq!(server.stats().snapshot().intercepted, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_blocks_nothing_else() {
    let up = FakeUpstream::start(Mode::Silent).await;
    let (server, addr) = start(settings(&["*.slow.test"], Some(up.addr))).await;
    let started = Instant::now();
    let slow: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                udp_query(addr, &format!("h{i}.slow.test."), RecordType::A, None).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        let m = udp_query(addr, &format!("fast{i}.test."), RecordType::A, None).await;
        assert_eq!(a_addrs(&m), vec![PROXY_IP]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "intercepted queries waited on the silent upstream: {:?}",
        started.elapsed()
    );
    for t in slow {
        let m = t.await.expect("task");
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    let waited = started.elapsed();
    assert!(
        waited < crate::dns::UPSTREAM_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
    let st = server.stats().snapshot();
    assert_eq!((st.failed, st.intercepted), (5, 20));
}

#[tokio::test]
async fn forwarding_to_itself_is_detected() {
    let port = free_port();
    let me: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = settings(&["*.loop.test"], Some(me));
    s.listen = vec![me];
    let (server, addr) = start(s).await;
    let started = Instant::now();
    let m = udp_query(addr, "x.loop.test.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "loop not cut short"
    );
    assert!(server.stats().snapshot().failed >= 1);
}

#[tokio::test]
async fn serves_several_listen_addresses() {
    let mut s = settings(&[], None);
    s.listen.push((std::net::Ipv6Addr::LOCALHOST, 0).into());
    let server = DnsServer::start(s).await.expect("start");
    assert_eq!(server.local_addrs().len(), 2);
    for a in server.local_addrs() {
        assert_ne!(a.port(), 0);
        let m = tcp_query(*a, "x.test.", RecordType::A).await;
        assert_eq!(a_addrs(&m), vec![PROXY_IP]);
    }
}

/// Names RFC 6761 reserves are not intercepted: `localhost` and names below it get the
/// loopback address (a workload's own, not the proxy's), `.invalid` and `.onion` names
/// NXDOMAIN (with the top-level SOA for caching). Before, all got the proxy's address.
#[tokio::test]
async fn special_use_names_get_loopback_or_nxdomain() {
    let (_server, addr) = start(settings(&[], None)).await;
    for name in ["localhost.", "dev.LocalHost."] {
        let m = udp_query(addr, name, RecordType::A, None).await;
        assert_eq!(a_addrs(&m), vec![Ipv4Addr::LOCALHOST], "{name}");
        let m = udp_query(addr, name, RecordType::AAAA, None).await;
        let v6: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(v6, vec![std::net::Ipv6Addr::LOCALHOST], "{name}");
    }
    for name in ["x.invalid.", "iron-proxy.invalid.", "abc.onion."] {
        let m = udp_query(addr, name, RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}: the SOA");
    }
    let m = udp_query(addr, "localhost.example.", RecordType::A, None).await;
    assert_eq!(a_addrs(&m), vec![PROXY_IP], "only the last label counts");
}

/// An upstream that answers FORMERR to a query with EDNS (an old server, or one that objects
/// to the loop marker) is asked once more without it, and the client gets the answer; it
/// was relayed the FORMERR, though its own query was valid.
#[tokio::test]
async fn an_upstream_that_refuses_edns_is_asked_again_without_it() {
    let up = FakeUpstream::start(Mode::NoEdns).await;
    let (server, addr) = start(settings(&["*.old.test"], Some(up.addr))).await;
    let m = udp_query(addr, "a.old.test.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_addrs(&m).len(), 1, "{m:?}");
    assert_eq!(
        up.seen(),
        vec![
            "a.old.test. A udp edns".to_string(),
            "a.old.test. A udp".to_string()
        ]
    );
    assert_eq!(server.stats().snapshot().passthrough, 1);
}
