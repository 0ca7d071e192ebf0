//! Bypass attempts on the boundary itself rather than on where traffic goes: other socket
//! families, the proxy's own ports, killing it, leaving the cgroup, daemonising, other
//! network namespaces.

use std::time::Duration;

use iron_proxy_tests::cgroup::system_python;
use iron_proxy_tests::*;
use nix::sys::signal::Signal;
use serde_json::json;

use super::assert_no_address;
use crate::intercept::lab::{
    assert_probes, probe, resolve, start_intercepting, wait_stopped, Lab, EPERM, PROBE,
};

#[test]
fn raw_sockets_are_refused() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    let specs = vec!["raw,-,0".to_string(), "raw6,-,0".to_string()];
    assert_probes(
        &probe(&lab.cg, &specs),
        &specs,
        json!(EPERM),
        "raw sockets, even as root",
    );
    // Other protocols are refused too: MPTCP and UDP-Lite by the sock_create hook; SCTP and
    // ICMP "ping" sockets fail on this kernel before the hook (no SCTP module; root is not
    // in ping_group_range), and the hook would refuse them with EPERM otherwise.
    let others = ["mptcp,-,0", "udplite,-,0", "sctp,-,0", "ping,-,0"].map(String::from);
    let results = probe(&lab.cg, &others);
    assert_probes(&results, &others[..2], json!(EPERM), "sock_create");
    for spec in &others[2..] {
        assert!(results[spec].is_i64(), "{spec} must fail: {results}");
    }
    // AF_PACKET is outside the cgroup hooks; without CAP_NET_RAW the kernel refuses it.
    let packet = vec!["packet,-,0".to_string()];
    let out = lab
        .cg
        .command(system_python())
        .as_uid(65534)
        .python(PROBE, &packet);
    out.assert_ok();
    assert_probes(
        &out.json(),
        &packet,
        json!(EPERM),
        "AF_PACKET without CAP_NET_RAW",
    );
}

#[test]
fn the_proxys_own_ports_are_unreachable_from_workloads() {
    require_root!();
    let net = FakeInternet::new();
    let cg = TestCgroup::new();
    let pins = PinGuard::new();
    let mut config = crate::intercept::lab::base_config(&net, &cg, &pins);
    config["management"] = json!({"listen": "auto"});
    let px = start_intercepting(
        Proxy::with(config)
            .resolver(&net)
            .env("IRON_MANAGEMENT_API_KEY", "test-management-token"),
    );
    let transparent = px
        .logs()
        .iter()
        .find(|l| l.contains("listening") && l.contains("transparent"))
        .and_then(|l| l.rsplit_once("127.0.0.1:").map(|(_, p)| p.to_string()))
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .expect("transparent listener port in the log");
    let ports = [
        px.metrics_addr().port().to_string(),
        px.management_addr().port().to_string(),
        px.http_addr().port().to_string(),
        px.https_addr().port().to_string(),
        px.dns_addr().port().to_string(),
        transparent,
    ];
    let mut specs = Vec::new();
    for p in &ports {
        for host in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            specs.push(format!("tcp,{host},{p}"));
        }
    }
    assert_probes(
        &probe(&cg, &specs),
        &specs,
        json!(EPERM),
        "loopback is in the default deny list",
    );
    // Through a non-loopback local address the connection is redirected like any other,
    // and an IP-literal Host is refused.
    let url = format!(
        "http://{}:{}/reload",
        net.host_side_v4(),
        px.management_addr().port()
    );
    let r = cg.curl(["-X", "POST", &url]);
    assert_eq!(r.status, 403, "{r}");
    drop(px);
    drop(pins);
}

/// The proxy killed: interception stays (pinned), so workloads' connects and DNS datagrams
/// are refused (EPERM: no socket of the proxy's where they are redirected), and DNS gets no
/// answer. A process that binds the transparent listener's port meanwhile (another
/// local user) receives nothing: the programs refuse connects to a listener that does not
/// carry the proxy's mark (before, it received every workload's connection); so does one
/// that binds the DNS listener's port (UDP and TCP).
#[test]
fn killing_the_proxy_fails_closed() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    // A known port for the transparent listener, to squat it below.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut lab = Lab::start_with(&net, |c| {
        c["intercept"]["listen"] = json!(listen.to_string());
    });
    lab.px.signal(Signal::SIGKILL);
    wait_stopped(&mut lab.px);
    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/dead",
    ]);
    assert_eq!(r.exit, 7, "connect refused, not the internet: {r}");
    // By the kernel, before any packet: no socket with the proxy's mark where the connect
    // is redirected (before, it passed and met the closed port: ECONNREFUSED).
    let direct = vec![format!("tcp,{},443", up.ip())];
    assert_probes(
        &probe(&lab.cg, &direct),
        &direct,
        json!(EPERM),
        "nothing bound at the listener",
    );
    // Another process binds the listener's port while the proxy is down: the workloads'
    // connections are refused, not handed to it (it is not marked as the proxy's).
    let squatter = std::net::TcpListener::bind(listen).expect("squat the listener's port");
    squatter.set_nonblocking(true).expect("nonblocking");
    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/squatted",
    ]);
    assert_eq!(r.exit, 7, "refused, not delivered to the squatter: {r}");
    assert!(
        squatter.accept().is_err(),
        "the squatter received a workload's connection"
    );
    drop(squatter);
    // The same for the DNS listener's port, UDP and TCP: the workloads' queries are
    // refused, not handed to the process that bound it (before, it received them all and
    // could answer with any address).
    let dns = lab.px.dns_addr();
    let udp = std::net::UdpSocket::bind(dns).expect("squat the dns udp port");
    udp.set_nonblocking(true).expect("nonblocking");
    let tcp = std::net::TcpListener::bind(dns).expect("squat the dns tcp port");
    tcp.set_nonblocking(true).expect("nonblocking");
    let at = format!("@{}", net.resolver().ip());
    for transport in ["+notcp", "+tcp"] {
        let ran = lab.cg.dig(&[
            &at,
            transport,
            "httpbin.test",
            "+short",
            "+time=2",
            "+tries=1",
        ]);
        assert_no_address(&ran, &format!("DNS ({transport}) with the port squatted"));
    }
    let mut buf = [0u8; 512];
    assert_eq!(
        udp.recv_from(&mut buf).map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the squatter received a workload's DNS query"
    );
    assert!(
        tcp.accept().is_err(),
        "the squatter received a workload's DNS connection"
    );
    drop((udp, tcp));
    let ran = lab
        .cg
        .dig(&[&at, "httpbin.test", "+short", "+time=2", "+tries=1"]);
    assert_no_address(&ran, "DNS with the proxy dead");
    up.assert_untouched();
    assert!(!net.dns().was_queried("httpbin.test"));
}

#[test]
fn a_double_forked_child_is_still_intercepted() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let out = lab.cg.shared_dir().join("grandchild.out");
    let script = format!(
        "(setsid sh -c 'curl -sS --noproxy \"*\" --max-time 10 -o /dev/null -w %{{http_code}} \
         --resolve {} http://unlisted.test/anything/grandchild > {} 2>&1' &) ; exit 0",
        resolve("unlisted.test", 80, up.ip()),
        out.display()
    );
    let parent = lab.cg.command("sh").args(["-c", &script]).run();
    assert_eq!(parent.exit, 0, "{parent}");
    let status = wait_until(Duration::from_secs(15), "the grandchild's curl", || {
        std::fs::read_to_string(&out).ok().filter(|s| s.len() >= 3)
    });
    assert_eq!(status.trim(), "403", "the grandchild was intercepted");
    let rec = lab.audit_for("/anything/grandchild");
    assert_eq!(
        rec.pointer("/client/cgroup"),
        Some(&json!(lab.cg.relative()))
    );
    assert_eq!(rec.pointer("/client/comm"), Some(&json!("curl")));
    assert_ne!(rec.pointer("/client/pid"), Some(&json!(parent.pid)));
    up.assert_untouched();
}

#[test]
fn another_network_namespace_does_not_escape_the_hooks() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    // A root workload enters the fake internet's own namespace, right next to the upstream:
    // the hooks follow the cgroup, so the connect is still redirected, to a loopback port
    // where nothing listens in that namespace: refused (EPERM, no proxy socket there).
    let r = lab
        .cg
        .command("ip")
        .args([
            "netns",
            "exec",
            net.name(),
            "curl",
            "-sS",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{}/anything/netns", up.ip()))
        .run();
    assert_eq!(r.exit, 7, "connect refused: {r}");
    up.assert_untouched();
}

#[test]
fn an_unprivileged_workload_cannot_leave_the_cgroup_kill_the_proxy_or_detach() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let nobody = |program: &str| lab.cg.command(program).as_uid(65534);

    let root_procs = iron_proxy_tests::cgroup::cgroup2_mount().join("cgroup.procs");
    let r = nobody("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} ; grep '^0::' /proc/self/cgroup",
            root_procs.display()
        ))
        .run();
    assert!(r.stderr.contains("Permission denied"), "{r}");
    assert_eq!(
        r.stdout.trim(),
        format!("0::{}", lab.cg.relative()),
        "still in the cgroup: {r}"
    );

    let r = nobody("kill").args(["-9", &lab.px.pid().to_string()]).run();
    assert_ne!(r.exit, 0, "{r}");
    let r = nobody("rm").arg("-rf").arg(lab.pins.path()).run();
    assert_ne!(r.exit, 0, "{r}");
    let r = nobody(&paths::iron_proxy_bin().to_string_lossy())
        .args(["intercept", "detach", "-config"])
        .arg(lab.px.config_path())
        .run();
    assert_ne!(r.exit, 0, "{r}");
    // Looking at the 0700 pin directory is refused, and said: neither "off" nor "removed".
    for action in ["status", "detach"] {
        let r = nobody(&paths::iron_proxy_bin().to_string_lossy())
            .args(["intercept", action, "-pin-path"])
            .arg(lab.pins.path())
            .run();
        assert_ne!(r.exit, 0, "{r}");
        let text = r.to_string();
        assert!(
            text.contains(&lab.pins.path().display().to_string())
                && text.contains("Permission denied"),
            "{text}"
        );
        assert!(
            !text.contains("interception: off") && !text.contains("removed"),
            "{text}"
        );
    }

    // Interception is still in force.
    let r = nobody("curl").curl([
        "--resolve",
        &resolve("unlisted.test", 80, up.ip()),
        "http://unlisted.test/anything/after",
    ]);
    assert_eq!(r.status, 403, "{r}");
    up.assert_untouched();
}

/// A workload joins multicast groups on the fake internet's veth, six ways (IPv4
/// `IP_ADD_MEMBERSHIP`, `IP_ADD_SOURCE_MEMBERSHIP` with the data in the source address,
/// `MCAST_JOIN_GROUP`; IPv6 `IPV6_JOIN_GROUP`, `MCAST_JOIN_SOURCE_GROUP`, `IPV6_JOIN_ANYCAST`),
/// then sets two ordinary options, one with a value over a page. Prints a JSON map of
/// `ok` or the errno.
const MULTICAST: &str = r#"
import json, socket, struct, sys
dev, ip = sys.argv[1], sys.argv[2]
idx = socket.if_nametoindex(dev)
def gsr(family, group, source):
    # struct group_source_req: interface, then two sockaddr_storage (128 bytes each), padded.
    def ss(a):
        if family == socket.AF_INET:
            b = struct.pack('=H2s4s', socket.AF_INET, b'\0\0', socket.inet_aton(a))
        else:
            b = struct.pack('=H2sI16sI', socket.AF_INET6, b'\0\0', 0, socket.inet_pton(socket.AF_INET6, a), 0)
        return b + bytes(128 - len(b))
    return struct.pack('=I4x', idx) + ss(group) + ss(source)
def gr(family, group):
    s = gsr(family, group, '0.0.0.0' if family == socket.AF_INET else '::')
    return s[:8 + 128]
cases = {
    'ip_add_membership': (socket.AF_INET, 0, 35, socket.inet_aton('239.1.2.3') + socket.inet_aton(ip)),
    'ip_add_source_membership': (socket.AF_INET, 0, 39, socket.inet_aton('232.1.2.3') + socket.inet_aton(ip) + socket.inet_aton('104.117.110.116')),
    'mcast_join_group': (socket.AF_INET, 0, 42, gr(socket.AF_INET, '239.1.2.4')),
    'ipv6_join_group': (socket.AF_INET6, 41, 20, socket.inet_pton(socket.AF_INET6, 'ff05::1234') + struct.pack('=I', idx)),
    'mcast_join_source_group6': (socket.AF_INET6, 41, 46, gsr(socket.AF_INET6, 'ff35::1234', 'fdaa::6875:6e74')),
    'ipv6_join_anycast': (socket.AF_INET6, 41, 27, socket.inet_pton(socket.AF_INET6, 'fdaa:ffff::1') + struct.pack('=I', idx)),
    'so_sndbuf': (socket.AF_INET, socket.SOL_SOCKET, socket.SO_SNDBUF, struct.pack('i', 65536)),
    'so_sndbuf_over_a_page': (socket.AF_INET, socket.SOL_SOCKET, socket.SO_SNDBUF, struct.pack('i', 65536) + bytes(5000)),
}
out = {}
for name, (family, level, opt, val) in cases.items():
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.setsockopt(level, opt, val)
        out[name] = 'ok'
    except OSError as e:
        out[name] = e.errno
    s.close()
print(json.dumps(out))
"#;

/// Joining a multicast group makes the kernel send IGMP/MLD membership reports carrying the
/// groups and sources the workload chose, out of the interface it names, with no socket of
/// the workload's to see them: refused (EPERM) by the setsockopt hook, for root inside the
/// cgroup too; ordinary options (one over a page long) still pass.
#[test]
fn multicast_joins_are_refused() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    let before = crate::backstop::intercept_event(&lab.px, "udp_refused");
    let out = lab.cg.python(
        MULTICAST,
        [
            net.host_interface().to_string(),
            net.host_side_v4().to_string(),
        ],
    );
    out.assert_ok();
    let got = out.json();
    for join in [
        "ip_add_membership",
        "ip_add_source_membership",
        "mcast_join_group",
        "ipv6_join_group",
        "mcast_join_source_group6",
        "ipv6_join_anycast",
    ] {
        assert_eq!(got[join], json!(EPERM), "{join}: {got}");
    }
    assert_eq!(got["so_sndbuf"], "ok", "{got}");
    assert_eq!(got["so_sndbuf_over_a_page"], "ok", "{got}");
    assert!(
        crate::backstop::intercept_event(&lab.px, "udp_refused") >= before + 6,
        "counted as udp_refused"
    );
}
