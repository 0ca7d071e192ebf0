//! A socket at the transparent or DNS listener's address that is not the
//! proxy's (another local user bound the port while the proxy was down)
//! receives no redirected connection or datagram: with `listener_priority`
//! (`dns_listener_priority`), the connect and sendmsg programs look the
//! socket up and refuse the call (EPERM) unless it carries the proxy's mark,
//! and when they find no socket there at all.

use std::sync::atomic::Ordering;

use super::*;

#[test]
fn a_listener_without_the_proxys_mark_receives_nothing() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let direct = Server::direct("127.0.0.2:0");
    let target = direct.port().to_string();

    // The proxy's own, marked listener: served as always.
    let marked = Server::marked_proxy("127.0.0.1:0", &pins.path);
    let mut s = settings(&cg, &pins, marked.addr);
    s.listener_priority = true;
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {target} proxy|{}", direct.addr)]
    );
    assert_eq!(marked.seen().len(), 1);

    // A squatter: an unmarked socket where the redirect points. (A socket of its
    // own on a port it holds from the start: rebinding the marked listener's port
    // after closing it races with the other tests' ephemeral ports.) Before the check
    // it received the workload's connection.
    drop(marked);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    squatter.set_nonblocking(true).expect("nonblocking");
    let SocketAddr::V4(at) = squatter.local_addr().expect("addr") else {
        panic!("v4")
    };
    s.listen_v4 = at;
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(ran.lines, vec![format!("tcp err {EPERM}")]);
    assert!(
        squatter.accept().is_err(),
        "the squatter must not receive the connection"
    );
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(counters.foreign_listener, 1, "{counters:?}");

    // Nobody there (the proxy is down): refused as well, and counted. Before, the
    // connect passed and met a closed port, which left a race open to a process
    // binding and closing the port in a loop.
    drop(squatter);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(ran.lines, vec![format!("tcp err {EPERM}")]);
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(counters.foreign_listener, 2, "{counters:?}");

    // Without the flag (a loader that does not mark its listener) nothing
    // is checked: an unmarked listener is served.
    let unmarked = Server::proxy("127.0.0.1:0", &pins.path);
    let SocketAddr::V4(at) = unmarked.addr else {
        panic!("v4")
    };
    s.listen_v4 = at;
    s.listener_priority = false;
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {target} proxy|{}", direct.addr)]
    );
    assert_eq!(unmarked.seen().len(), 1);
    drop(ic);
}

/// A stand-in for the DNS server: a UDP echo and a TCP server on one port of
/// `ip`, both marked as the proxy's or neither.
fn dns_pair(ip: &str, mark: bool, pins: &TestPins) -> (UdpEcho, Server) {
    for _ in 0..20 {
        let udp = if mark {
            UdpEcho::marked(&format!("{ip}:0"))
        } else {
            UdpEcho::start(&format!("{ip}:0"))
        };
        // The TCP side of that port may be taken (another test's ephemeral
        // port): try another.
        if std::net::TcpListener::bind(udp.addr).is_err() {
            continue;
        }
        let at = udp.addr.to_string();
        let tcp = if mark {
            Server::marked_proxy(&at, &pins.path)
        } else {
            Server::proxy(&at, &pins.path)
        };
        return (udp, tcp);
    }
    panic!("no free udp+tcp port pair on {ip}");
}

fn v4(addr: SocketAddr) -> std::net::SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("v4 expected: {addr}"),
    }
}

fn v6(addr: SocketAddr) -> std::net::SocketAddrV6 {
    match addr {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => panic!("v6 expected: {addr}"),
    }
}

/// The same for the DNS listener: with `dns_listener_priority`, port 53 (datagrams,
/// connected UDP, TCP; over IPv4, v4-mapped and native IPv6) goes only to sockets
/// carrying the proxy's mark. Before, a process that bound the DNS listener's
/// address while the proxy was down received every workload's queries.
#[test]
fn a_dns_socket_without_the_proxys_mark_receives_nothing() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let transparent = Server::marked_proxy("127.0.0.1:0", &pins.path);
    let ops = [
        "udp",
        "127.0.0.9",
        "53",
        "udpconn",
        "127.0.0.9",
        "53",
        "udp",
        "::ffff:127.0.0.9",
        "53",
        "tcp",
        "127.0.0.9",
        "53",
        "udp",
        "::1",
        "53",
        "tcp",
        "::1",
        "53",
    ];

    // The proxy's own, marked DNS sockets: served as always.
    let (udp, tcp) = dns_pair("127.0.0.1", true, &pins);
    let (udp6, tcp6) = dns_pair("[::1]", true, &pins);
    let mut s = settings(&cg, &pins, transparent.addr);
    s.listener_priority = true;
    s.dns_listener_priority = true;
    s.dns_v4 = Some(v4(udp.addr));
    s.dns_v6 = Some(v6(udp6.addr));
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &ops);
    assert_eq!(
        ran.lines,
        vec![
            "udp ok 127.0.0.9 53 pong".to_owned(),
            "udpconn ok 127.0.0.9 53 pong".to_owned(),
            "udp ok ::ffff:127.0.0.9 53 pong".to_owned(),
            "tcp ok 127.0.0.9 53 proxy|127.0.0.9:53".to_owned(),
            "udp ok ::1 53 pong".to_owned(),
            "tcp ok ::1 53 proxy|[::1]:53".to_owned(),
        ]
    );
    assert_eq!(udp.received.load(Ordering::SeqCst), 3);
    assert_eq!(udp6.received.load(Ordering::SeqCst), 1);
    assert_eq!((tcp.seen().len(), tcp6.seen().len()), (1, 1));
    drop((udp, tcp, udp6, tcp6));
    let before = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(
        (before.dns_redirected, before.foreign_listener),
        (6, 0),
        "{before:?}"
    );

    // Squatters: unmarked sockets where the redirects point (sockets of their own on
    // ports they hold from the start, as above).
    let (udp, tcp) = dns_pair("127.0.0.1", false, &pins);
    let (udp6, tcp6) = dns_pair("[::1]", false, &pins);
    s.dns_v4 = Some(v4(udp.addr));
    s.dns_v6 = Some(v6(udp6.addr));
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &ops);
    let refused: Vec<String> = ["udp", "udpconn", "udp", "tcp", "udp", "tcp"]
        .iter()
        .map(|op| format!("{op} err {EPERM}"))
        .collect();
    assert_eq!(ran.lines, refused);
    assert_eq!(
        udp.received.load(Ordering::SeqCst),
        0,
        "the squatter got a query"
    );
    assert_eq!(
        udp6.received.load(Ordering::SeqCst),
        0,
        "the squatter got a query"
    );
    assert!(tcp.seen().is_empty() && tcp6.seen().is_empty());
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(
        (counters.dns_redirected, counters.foreign_listener),
        (6, 6),
        "six refused, none redirected: {counters:?}"
    );

    // Without the flag nothing is checked: the unmarked sockets are served.
    s.dns_listener_priority = false;
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["udp", "127.0.0.9", "53", "tcp", "::1", "53"]);
    assert_eq!(
        ran.lines,
        vec![
            "udp ok 127.0.0.9 53 pong".to_owned(),
            "tcp ok ::1 53 proxy|[::1]:53".to_owned(),
        ]
    );

    // No socket there at all (the proxy is down): refused too, and counted. Before,
    // the datagrams and connects passed to the closed ports (ECONNREFUSED).
    s.dns_listener_priority = true;
    drop(ic);
    drop((udp, tcp, udp6, tcp6));
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &ops);
    assert_eq!(ran.lines, refused);
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(
        counters.foreign_listener, 12,
        "six more refused: {counters:?}"
    );
    drop(ic);
}
