//! IPv6 extension headers from workloads: the setsockopt program refuses an
//! IPv6 routing header (`IPV6_RTHDR`, which needs no capability), and the
//! backstop passes no packet whose first next header is an extension header
//! (hop-by-hop, routing, fragment, destination options) as loopback: a type 4
//! segment routing header whose first segment is `::1` would go on from
//! loopback to its later segments.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use iron_proxy::intercept::Interceptor;

use super::support::*;
use super::{attach, settings, EPERM};

/// Sets `IPV6_RTHDR` (level 41, option 57) to a type 4 segment routing header (first
/// segment `::1`, then `fdaa::1`) on an IPv6 UDP and an IPv6 TCP socket, then an ordinary
/// option; prints `<name> ok` or `<name> <errno>` for each.
const ROUTING_HEADER: &str = r#"
import socket
srh = bytes([0, 4, 4, 1, 1, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, 'fdaa::1') + socket.inet_pton(socket.AF_INET6, '::1')
for name, typ, level, opt, val in (
    ('udp_rthdr', socket.SOCK_DGRAM, 41, 57, srh),
    ('tcp_rthdr', socket.SOCK_STREAM, 41, 57, srh),
    ('unicast_hops', socket.SOCK_DGRAM, 41, 16, (5).to_bytes(4, 'little')),
):
    s = socket.socket(socket.AF_INET6, typ)
    try:
        s.setsockopt(level, opt, val)
        print(name, 'ok', flush=True)
    except OSError as e:
        print(name, e.errno, flush=True)
    s.close()
"#;

fn run(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_ipv6_routing_header_is_refused() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let _ic = attach(&settings(&cg, &pins, "127.0.0.1:9".parse().expect("addr")));

    // Outside the cgroup the kernel takes it (no capability is needed for it).
    let outside = run(Command::new(python()).args(["-c", ROUTING_HEADER]));
    assert_eq!(
        outside,
        ["udp_rthdr ok", "tcp_rthdr ok", "unicast_hops ok"],
        "the kernel accepts the header outside the cgroup"
    );
    for uid in [None, Some(65534)] {
        let mut cmd = Command::new(python());
        cmd.args(["-c", ROUTING_HEADER])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cg.spawn(&mut cmd, uid);
        let out = child.wait_with_output().expect("workload");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            [
                format!("udp_rthdr {EPERM}"),
                format!("tcp_rthdr {EPERM}"),
                "unicast_hops ok".to_owned()
            ],
            "uid {uid:?}"
        );
    }
}

/// A workload TCP connect to `::1` (redirected to the IPv6 listener on `::1`) from a socket
/// with a destination options header (root may set one: `CAP_NET_RAW`); then the same
/// without it. Prints `ok` or the error for each.
const DSTOPTS: &str = r#"
import socket, sys
port = int(sys.argv[1])
for opts in (True, False):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(3)
    if opts:
        # Next header, length 0 (8 bytes), a PadN option of four bytes.
        s.setsockopt(41, 59, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
    try:
        s.connect(('::1', port))
        print('ok', flush=True)
    except OSError as e:
        print(type(e).__name__, flush=True)
    s.close()
"#;

#[test]
fn a_packet_with_an_ipv6_extension_header_does_not_pass_as_loopback() {
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
    let _ic = attach(&s);

    let mut cmd = Command::new(python());
    cmd.args(["-c", DSTOPTS, "8443"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cg
        .spawn(&mut cmd, None)
        .wait_with_output()
        .expect("workload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["TimeoutError", "ok"],
        "the SYN with a destination options header is dropped; the plain one passes"
    );
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert!(c.backstop_dropped >= 1, "{c:?}");
}
