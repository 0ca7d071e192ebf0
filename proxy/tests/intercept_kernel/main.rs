//! Privileged tests of eBPF interception on the real kernel. They run as
//! root and fail otherwise, unless IRON_SKIP_PRIVILEGED=1. Every test makes
//! its own cgroup and pin directory (removed on drop) and sends traffic to
//! loopback, or inside a network namespace of its own.

mod backstop;
mod deny_reload;
mod foreign_listener;
mod ipv6_ext;
mod proxy_marks;
mod recreated;
mod support;
mod upgrade;

use std::net::SocketAddr;
use std::path::Path;

use iron_proxy::intercept::{
    self, DenyCidr, InterceptSettings, Interceptor, ProxyIdentity, UidRange,
};
use support::*;

const EPERM: &str = "1";
const ECONNREFUSED: &str = "111";
/// Links pinned per intercepted cgroup: connect4/6, sendmsg4/6, recvmsg4/6,
/// getpeername4/6, sock_create, setsockopt, sock_release and skb_egress.
const LINKS_PER_CGROUP: usize = 12;

fn settings(cg: &TestCgroup, pins: &TestPins, listen: SocketAddr) -> InterceptSettings {
    let SocketAddr::V4(listen_v4) = listen else {
        panic!("v4 listener expected")
    };
    InterceptSettings {
        cgroups: vec![cg.path.clone()],
        uids: vec![],
        uid_ranges: Vec::new(),
        listen_v4,
        listen_v6: None,
        dns_v4: None,
        dns_v6: None,
        dns_answers: vec![],
        // The default deny list covers 127.0.0.0/8; these tests redirect to
        // loopback, so they deny one address only.
        deny: vec![DenyCidr::all("127.0.0.3/32".parse().expect("cidr"))],
        proxy: ProxyIdentity::current_process(),
        getsockopt_cgroups: vec![],
        pin_path: pins.path.clone(),
        listener_priority: false,
        dns_listener_priority: false,
    }
}

fn attach(s: &InterceptSettings) -> Interceptor {
    Interceptor::attach(s).unwrap_or_else(|e| panic!("attach: {e} ({e:?})"))
}

/// A test's own cgroup and pin directory, a proxy listener and a direct
/// server on 127.0.0.2. Fields drop in order: servers first, then the pins
/// (detached), then the cgroup.
struct Lab {
    direct: Server,
    proxy: Server,
    pins: TestPins,
    cg: TestCgroup,
}

impl Lab {
    /// A lab, or None when the test cannot run here (not root).
    fn start() -> Option<Self> {
        if !privileged() {
            return None;
        }
        let cg = TestCgroup::new();
        let pins = TestPins::new();
        let proxy = Server::proxy("127.0.0.1:0", &pins.path);
        let direct = Server::direct("127.0.0.2:0");
        Some(Lab {
            direct,
            proxy,
            pins,
            cg,
        })
    }

    /// Interception of this lab's cgroup to its proxy listener.
    fn settings(&self) -> InterceptSettings {
        settings(&self.cg, &self.pins, self.proxy.addr)
    }
}

fn field(line: &str, n: usize) -> &str {
    line.split_whitespace()
        .nth(n)
        .unwrap_or_else(|| panic!("no field {n} in {line:?}"))
}

#[test]
fn tcp_v4_is_redirected_and_origin_found() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab {
        cg,
        pins,
        proxy,
        direct,
    } = &lab;
    let ic = attach(&lab.settings());

    let target = direct.addr.to_string();
    let ran = run_workload(cg, None, &["tcp", "127.0.0.2", &direct.port().to_string()]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {} proxy|{target}", direct.port())],
        "the workload must land on the proxy and see its original peer in getpeername"
    );

    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "one connection at the proxy: {seen:?}");
    let o = seen[0]
        .origin
        .clone()
        .expect("origin found by tuple lookup");
    assert_eq!(o.dst, direct.addr);
    assert_eq!((o.tgid, o.pid, o.uid, o.gid), (ran.pid, ran.pid, 0, 0));
    assert_eq!(o.comm, "python3");
    assert_eq!(o.cgroup_id, cg.id());
    assert_eq!(
        iron_proxy::intercept::cgroup_path(o.cgroup_id),
        Some(cg.path.clone())
    );
    assert_eq!(
        ic.original_dst().lookup(seen[0].peer, seen[0].local),
        None,
        "the proxy's lookup took the tuple entry out of the map"
    );

    // A process outside the cgroup goes direct.
    assert_eq!(connect_here(direct.addr).expect("direct connect"), "direct");
    assert!(
        direct.seen().len() == 1,
        "only the outside connection reached the direct server"
    );

    let status = Interceptor::status(&pins.path).expect("status");
    assert_eq!(status.links.len(), LINKS_PER_CGROUP, "{status}");
    assert!(
        status
            .links
            .iter()
            .all(|l| l.attached && l.cgroup_path.as_deref() == Some(cg.path.as_path())),
        "{status}"
    );
    let c = status.counters.expect("counters");
    assert!(c.redirected >= 1 && c.tuple_recorded >= 1, "{c:?}");
    assert_eq!(
        status.origins_held,
        Some(0),
        "the workload's socket is closed, so its origin left the cookie map: {status}"
    );
    assert!(
        status
            .to_string()
            .contains("origins: 0 open redirected sockets"),
        "{status}"
    );
}

#[test]
fn tcp_v6_and_v4_mapped_are_redirected() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy4 = Server::proxy("127.0.0.1:0", &pins.path);
    let proxy6 = Server::proxy("[::1]:0", &pins.path);
    let mut s = settings(&cg, &pins, proxy4.addr);
    let SocketAddr::V6(l6) = proxy6.addr else {
        panic!("v6")
    };
    s.listen_v6 = Some(l6);
    let ic = attach(&s);

    let ran = run_workload(
        &cg,
        None,
        &[
            "tcp",
            "::1",
            "8443",
            "tcp",
            "::ffff:127.0.0.2",
            "8080",
            "tcp",
            "::ffff:127.0.0.3",
            "80",
        ],
    );
    assert_eq!(ran.lines[0], "tcp ok ::1 8443 proxy|[::1]:8443");
    assert_eq!(
        ran.lines[1],
        "tcp ok ::ffff:127.0.0.2 8080 proxy|127.0.0.2:8080"
    );
    assert_eq!(
        ran.lines[2],
        format!("tcp err {EPERM}"),
        "v4 deny list applies v4-mapped"
    );
    drop(ic);

    let o6 = proxy6.seen()[0].origin.clone().expect("v6 origin");
    assert_eq!(o6.dst, "[::1]:8443".parse::<SocketAddr>().expect("addr"));
    let seen4 = proxy4.seen();
    assert!(
        seen4[0].peer.is_ipv4(),
        "v4-mapped lands on the v4 listener"
    );
    assert_eq!(
        seen4[0].origin.as_ref().map(|o| o.dst),
        Some("127.0.0.2:8080".parse().expect("addr"))
    );

    // Without a v6 listener, native IPv6 goes to the v4 listener, v4-mapped.
    s.listen_v6 = None;
    let _ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "::1", "8444"]);
    assert_eq!(ran.lines, vec!["tcp ok ::1 8444 proxy|[::1]:8444"]);
    assert_eq!(
        proxy4.seen()[1].origin.as_ref().map(|o| o.dst),
        Some("[::1]:8444".parse().expect("addr"))
    );
}

#[test]
fn deny_list_refuses_with_eperm() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let _ic = attach(&settings(&cg, &pins, proxy.addr));
    let ran = run_workload(
        &cg,
        None,
        &["tcp", "127.0.0.3", "443", "tcp", "127.0.0.2", "443"],
    );
    assert_eq!(ran.lines[0], format!("tcp err {EPERM}"));
    assert_eq!(ran.lines[1], "tcp ok 127.0.0.2 443 proxy|127.0.0.2:443");
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(c.denied, 1);
}

#[test]
fn tcp_to_the_dns_answer_goes_to_the_proxy_though_a_deny_range_covers_it() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let mut s = settings(&cg, &pins, proxy.addr);
    // 127.0.0.3 stands for the usual `dns.proxy_ip: 127.0.0.1`, in a denied range.
    s.deny = vec![
        DenyCidr::all("127.0.0.3/32".parse().expect("cidr")),
        DenyCidr::all("127.0.0.4/32".parse().expect("cidr")),
        DenyCidr::all("::1/128".parse().expect("cidr")),
    ];
    s.dns_answers = vec!["127.0.0.3".parse().expect("ip"), "::1".parse().expect("ip")];
    let _ic = attach(&s);
    let ran = run_workload(
        &cg,
        None,
        &[
            "tcp",
            "127.0.0.3",
            "443",
            "tcp",
            "::ffff:127.0.0.3",
            "80",
            "tcp",
            "::1",
            "8443",
            "tcp",
            "127.0.0.4",
            "443",
            "udp",
            "127.0.0.3",
            "443",
        ],
    );
    assert_eq!(ran.lines[0], "tcp ok 127.0.0.3 443 proxy|127.0.0.3:443");
    assert_eq!(
        ran.lines[1],
        "tcp ok ::ffff:127.0.0.3 80 proxy|127.0.0.3:80"
    );
    assert_eq!(ran.lines[2], "tcp ok ::1 8443 proxy|[::1]:8443");
    // Other addresses of the denied ranges, and UDP to the answer, stay refused.
    assert_eq!(ran.lines[3], format!("tcp err {EPERM}"));
    assert_eq!(ran.lines[4], format!("udp err {EPERM}"));
}

#[test]
fn udp_is_refused_and_dns_redirected() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let dns = UdpEcho::start("127.0.0.1:0");
    let dns6 = UdpEcho::start("[::1]:0");
    let mut s = settings(&cg, &pins, proxy.addr);
    let SocketAddr::V4(d4) = dns.addr else {
        panic!("v4")
    };
    let SocketAddr::V6(d6) = dns6.addr else {
        panic!("v6")
    };
    s.dns_v4 = Some(d4);
    s.dns_v6 = Some(d6);
    let _ic = attach(&s);

    let ran = run_workload(
        &cg,
        None,
        &[
            "udp",
            "127.0.0.2",
            "443",
            "udpconn",
            "127.0.0.2",
            "443",
            "udp",
            "127.0.0.9",
            "53",
            "udpconn",
            "127.0.0.9",
            "53",
            "udp",
            "::ffff:127.0.0.9",
            "53",
            "udp",
            "::1",
            "53",
            "udpconn",
            "::1",
            "53",
            "udp",
            "127.0.0.3",
            "53",
        ],
    );
    assert_eq!(
        ran.lines,
        vec![
            format!("udp err {EPERM}"),
            format!("udpconn err {EPERM}"),
            "udp ok 127.0.0.9 53 pong".to_owned(),
            "udpconn ok 127.0.0.9 53 pong".to_owned(),
            "udp ok ::ffff:127.0.0.9 53 pong".to_owned(),
            "udp ok ::1 53 pong".to_owned(),
            "udpconn ok ::1 53 pong".to_owned(),
            // DNS goes to the DNS listener whatever resolver was asked, even a
            // denied one: the answer comes from the proxy.
            "udp ok 127.0.0.3 53 pong".to_owned(),
        ]
    );
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!((c.udp_refused, c.dns_redirected), (2, 6), "{c:?}");

    // Without a v6 DNS listener, UDP DNS to a native IPv6 resolver is
    // refused (the kernel will not send it to a v4-mapped listener).
    s.dns_v6 = None;
    let _ic = attach(&s);
    let ran = run_workload(
        &cg,
        None,
        &[
            "udp",
            "::1",
            "53",
            "udpconn",
            "::1",
            "53",
            "udp",
            "::ffff:127.0.0.9",
            "53",
        ],
    );
    assert_eq!(
        ran.lines,
        vec![
            format!("udp err {EPERM}"),
            format!("udpconn err {EPERM}"),
            "udp ok ::ffff:127.0.0.9 53 pong".to_owned()
        ]
    );

    // And nothing changes for a process outside the cgroup.
    let here = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    here.send_to(b"x", "127.0.0.2:443")
        .expect("outside the cgroup UDP is untouched");
}

#[test]
fn raw_and_ping_sockets_are_refused() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let _ic = attach(&settings(&cg, &pins, "127.0.0.1:9".parse().expect("addr")));
    let ran = run_workload(
        &cg,
        None,
        &[
            "raw",
            "raw6",
            "udplite",
            "mptcp",
            "tcp",
            "127.0.0.3",
            "1",
            "ping",
        ],
    );
    assert_eq!(
        ran.lines[..5],
        [
            format!("raw err {EPERM}"),
            format!("raw6 err {EPERM}"),
            format!("udplite err {EPERM}"),
            format!("mptcp err {EPERM}"),
            // TCP sockets may still be created (the connect is what's denied).
            format!("tcp err {EPERM}"),
        ]
    );
    // ICMP ping sockets: refused by us, or earlier by ping_group_range (EACCES).
    assert!(ran.lines[5].starts_with("ping err"), "{:?}", ran.lines);
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert!(c.raw_refused >= 4, "{c:?}");
    // Root outside the cgroup still may.
    let outside = std::process::Command::new(python())
        .args([
            "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
        ])
        .status()
        .expect("python");
    assert!(outside.success());
}

#[test]
fn uid_filter_selects_only_listed_uids() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab {
        cg, proxy, direct, ..
    } = &lab;
    let mut s = lab.settings();
    s.uids = vec![65534];
    let _ic = attach(&s);
    let port = direct.port().to_string();
    let nobody = run_workload(cg, Some(65534), &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        nobody.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")]
    );
    assert_eq!(proxy.seen()[0].origin.as_ref().map(|o| o.uid), Some(65534));
    let root = run_workload(cg, None, &["tcp", "127.0.0.2", &port, "raw"]);
    assert_eq!(
        root.lines,
        vec![
            format!("tcp ok 127.0.0.2 {port} direct"),
            "raw ok".to_owned()
        ]
    );
}

/// A new uid set that fits the map (1,024 uids) alone but not beside the set in force it
/// replaces (new uids go in before stale ones go) is refused before anything is written: the
/// set in force stays whole and none of the new one is selected. Before, the change ran out
/// of room halfway and left the old set plus part of the new one (review 47).
#[test]
fn a_uid_change_that_cannot_fit_beside_the_set_in_force_changes_nothing() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab { cg, direct, .. } = &lab;
    let port = direct.port().to_string();
    let mut s = lab.settings();
    s.uids = (60000..60600).chain([65534]).collect();
    let _ic = attach(&s);
    let mut next = lab.settings();
    next.uids = (61000..61600).collect();
    let err = Interceptor::attach(&next).expect_err("600 new uids beside 601 do not fit");
    let text = iron_proxy::error_chain(&err);
    assert!(text.contains("nothing was changed"), "{text}");
    let nobody = run_workload(cg, Some(65534), &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        nobody.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "the set in force still selects 65534"
    );
    let new = run_workload(cg, Some(61000), &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        new.lines,
        vec![format!("tcp ok 127.0.0.2 {port} direct")],
        "none of the new set is selected"
    );
}

#[test]
fn a_selected_users_subordinate_uids_are_intercepted_too() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab { cg, direct, .. } = &lab;
    let mut s = lab.settings();
    s.uids = vec![65534];
    // What `newuidmap` lets that user run processes as (from /etc/subuid).
    s.uid_ranges = vec![UidRange {
        start: 300000,
        count: 65536,
    }];
    let _ic = attach(&s);
    let port = direct.port().to_string();
    let redirected = format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}");
    for uid in [300000, 300005, 365535] {
        let ran = run_workload(cg, Some(uid), &["tcp", "127.0.0.2", &port]);
        assert_eq!(ran.lines, vec![redirected.clone()], "uid {uid}");
    }
    for uid in [299999, 365536] {
        let ran = run_workload(cg, Some(uid), &["tcp", "127.0.0.2", &port]);
        assert_eq!(
            ran.lines,
            vec![format!("tcp ok 127.0.0.2 {port} direct")],
            "uid {uid}"
        );
    }
}

#[test]
fn proxy_identity_is_exempt_but_proxy_class_deny_applies() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab {
        cg, proxy, direct, ..
    } = &lab;
    let mut s = lab.settings();
    s.proxy = ProxyIdentity {
        uid: Some(65533),
        ..ProxyIdentity::default()
    };
    s.deny = vec![
        DenyCidr::all("127.0.0.3/32".parse().expect("cidr")),
        DenyCidr::workload("127.0.0.4/32".parse().expect("cidr")),
    ];
    let _ic = attach(&s);
    let port = direct.port().to_string();
    let ran = run_workload(
        cg,
        Some(65533),
        &[
            "tcp",
            "127.0.0.2",
            &port,
            "tcp",
            "127.0.0.3",
            "80",
            "tcp",
            "127.0.0.4",
            "1",
        ],
    );
    assert_eq!(
        ran.lines,
        vec![
            format!("tcp ok 127.0.0.2 {port} direct"),
            format!("tcp err {EPERM}"),
            format!("tcp err {ECONNREFUSED}"),
        ]
    );
    assert!(proxy.seen().is_empty());
}

#[test]
fn a_workload_with_the_proxys_pid_but_not_its_cgroup_is_intercepted() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let port = lab.direct.port().to_string();
    let ops = ["wait", "tcp", "127.0.0.2", &port];
    // What a workload would be after the proxy exited and it was handed the
    // proxy's old pid: the pid matches, the cgroup (this test's, standing for
    // the proxy's) does not. It is redirected like any workload.
    let own = intercept::cgroup_id(&intercept::current_cgroup().expect("own cgroup"))
        .expect("own cgroup id");
    let (ic, ran) = run_workload_attached(&lab.cg, &ops, |pid| {
        let mut s = lab.settings();
        s.proxy = ProxyIdentity {
            tgid: Some(pid),
            cgroup_id: Some(own),
            uid: None,
        };
        s
    });
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")]
    );
    drop(ic);
    // Pid and cgroup both match: the proxy, exempt (its connection goes direct).
    let (ic, ran) = run_workload_attached(&lab.cg, &ops, |pid| {
        let mut s = lab.settings();
        s.proxy = ProxyIdentity {
            tgid: Some(pid),
            cgroup_id: Some(lab.cg.id()),
            uid: None,
        };
        s
    });
    assert_eq!(ran.lines, vec![format!("tcp ok 127.0.0.2 {port} direct")]);
    drop(ic);
    // The proxy's own identity carries its cgroup.
    let me = ProxyIdentity::current_process();
    assert_eq!(me.cgroup_id, Some(own));
    assert_eq!(me.tgid, Some(std::process::id()));
}

#[test]
fn many_concurrent_connections_keep_distinct_origins() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let mut s = settings(&cg, &pins, proxy.addr);
    s.deny.clear();
    let _ic = attach(&s);
    let ran = run_workload(&cg, None, &["many", "20000", "500"]);
    assert_eq!(ran.lines, vec!["many ok 500"]);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 500);
    let dsts: std::collections::BTreeSet<SocketAddr> = seen
        .iter()
        .filter_map(|s| s.origin.as_ref().map(|o| o.dst))
        .collect();
    assert_eq!(
        dsts.len(),
        500,
        "every connection has its own original destination"
    );
}

#[test]
fn pinned_interception_outlives_the_handle_until_detach() {
    // Bound in this order so that they drop in reverse: servers, pins, cgroup.
    let Some(Lab {
        cg,
        pins,
        proxy,
        direct,
    }) = Lab::start()
    else {
        return;
    };
    let port = direct.port().to_string();
    let s = settings(&cg, &pins, proxy.addr);
    drop(attach(&s));

    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "still intercepted after drop"
    );

    // Takeover: same links, new programs, counters kept.
    let before = Interceptor::status(&pins.path).expect("status");
    drop(attach(&s));
    let after = Interceptor::status(&pins.path).expect("status");
    assert_eq!(before.links.len(), after.links.len());
    for (b, a) in before.links.iter().zip(&after.links) {
        assert_eq!(
            (b.link_id, &b.hook),
            (a.link_id, &a.hook),
            "the link is kept"
        );
        assert_ne!(b.prog_id, a.prog_id, "{} got the new program", a.hook);
        assert!(a.attached);
    }
    assert!(
        after.counters.expect("counters").redirected >= 1,
        "counters survive takeover"
    );

    // The proxy is gone: workloads fail closed.
    drop(proxy);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(ran.lines, vec![format!("tcp err {ECONNREFUSED}")]);

    Interceptor::detach(&pins.path).expect("detach");
    assert!(!Path::new(&pins.path).exists(), "pins removed");
    assert!(!Interceptor::status(&pins.path).expect("status").pinned);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &port, "raw"]);
    assert_eq!(
        ran.lines,
        vec![
            format!("tcp ok 127.0.0.2 {port} direct"),
            "raw ok".to_owned()
        ]
    );
}

#[test]
fn takeover_drops_cgroups_no_longer_selected() {
    if !privileged() {
        return;
    }
    let a = TestCgroup::new();
    let b = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let direct = Server::direct("127.0.0.2:0");
    let port = direct.port().to_string();
    let mut s = settings(&a, &pins, proxy.addr);
    s.cgroups.push(b.path.clone());
    drop(attach(&s));
    assert_eq!(
        Interceptor::status(&pins.path).expect("status").links.len(),
        2 * LINKS_PER_CGROUP
    );
    s.cgroups.pop();
    let _ic = attach(&s);
    assert_eq!(
        Interceptor::status(&pins.path).expect("status").links.len(),
        LINKS_PER_CGROUP
    );
    let in_b = run_workload(&b, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(in_b.lines, vec![format!("tcp ok 127.0.0.2 {port} direct")]);
    let in_a = run_workload(&a, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        in_a.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")]
    );
}

#[test]
fn attach_rejects_a_pin_path_off_bpffs() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let mut s = settings(&cg, &TestPins::new(), "127.0.0.1:9".parse().expect("addr"));
    s.pin_path = std::env::temp_dir().join("iron-proxy-not-bpffs");
    let err = Interceptor::attach(&s).expect_err("not bpffs");
    assert!(err.to_string().contains("not on a BPF filesystem"), "{err}");
}

/// The getsockopt helper: runs in its own process, in a cgroup with the
/// getsockopt program, and is a no-op unless the parent test started it.
#[test]
fn getsockopt_helper() {
    if std::env::var("IRON_GETSOCKOPT_HELPER").as_deref() != Ok("1") {
        return;
    }
    getsockopt_child::run();
}

#[test]
fn getsockopt_answers_so_original_dst() {
    if !privileged() {
        return;
    }
    getsockopt_child::parent_test();
}

mod getsockopt_child;
