//! The proxy's own sockets inside an intercepted cgroup: connect/sendmsg mark
//! them (the calling task is the proxy) so that the cgroup_skb backstop, which
//! sees only the socket, lets their packets out. The mark must hold for as long
//! as the socket lives, however many sockets the proxy marks after it. (The
//! marks used to sit in a 65,536-entry LRU keyed by socket cookie, where an
//! idle socket lost its mark to newer ones and then had its packets dropped.)
//!
//! Safety: the "proxy" is a python child in the test cgroup and in a network
//! namespace of its own, where 198.18.0.1 is assigned to `lo`: its packets
//! never leave that namespace, which goes away with the child.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use iron_proxy::intercept::{Interceptor, ProxyIdentity};

use super::support::*;
use super::{attach, settings, EPERM};

/// Sets up the child's network namespace, then runs the rest of its argv.
const NETNS_SETUP: &str = "ip link set lo up && ip addr add 198.18.0.1/32 dev lo && exec \"$@\"";

/// Holds a connected UDP socket made before interception (so never marked),
/// prints `ready`, waits for a line on stdin (the test attaches, naming this
/// process as the proxy), then marks two sockets: one by `connect()`
/// (connect4), one by an unconnected `sendto()` (sendmsg4). It connects and
/// closes `argv[1]` more (each marked), and finally sends one datagram on each
/// held socket: `connected <ok|errno> sendto <ok|errno> early <ok|errno>`.
const PROXY: &str = r#"
import socket, sys
n = int(sys.argv[1])
DST = ('198.18.0.1', 9)
def udp():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def conn():
    s = udp()
    s.connect(DST)
    return s
def send(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return str(e.errno)
early = conn()
print('ready', flush=True)
sys.stdin.readline()
connected = conn()
unconnected = udp()
first = send(lambda: unconnected.sendto(b'x', DST))
assert first == 'ok', 'the first sendto is marked before it leaves: ' + first
for _ in range(n):
    conn().close()
print('connected', send(lambda: connected.send(b'x')),
      'sendto', send(lambda: unconnected.sendto(b'x', DST)),
      'early', send(lambda: early.send(b'x')), flush=True)
"#;

/// Twice the capacity of the old LRU of marks: enough newer marks that the
/// LRU would have evicted the idle one.
const NEWER_MARKS: usize = 2 * 65536;

#[test]
fn a_proxy_socket_stays_exempt_after_many_newer_marked_sockets() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", NETNS_SETUP, "sh", python(), "-c", PROXY])
        .arg(NEWER_MARKS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cg.spawn(&mut cmd, None);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the child's ready line");
    assert_eq!(line.trim(), "ready", "the child set up its namespace");

    // The child is the proxy by its pid only: the backstop cannot see the
    // sending task, so it knows the child's sockets only by their marks.
    let mut s = settings(&cg, &pins, "127.0.0.1:9".parse().expect("addr"));
    s.proxy = ProxyIdentity {
        tgid: Some(child.id()),
        ..ProxyIdentity::default()
    };
    let _ic = attach(&s);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("telling the child to go");

    line.clear();
    stdout.read_line(&mut line).expect("the child's result");
    assert_eq!(
        line.trim(),
        format!("connected ok sendto ok early {EPERM}"),
        "the marked sockets pass the backstop after {NEWER_MARKS} newer marks; \
         the socket from before interception does not"
    );
    assert!(child.wait().expect("child exit").success());
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(c.backstop_dropped, 1, "only the unmarked send: {c:?}");
    assert!(
        c.proxy_exempt > NEWER_MARKS as u64,
        "every connect was the proxy's: {c:?}"
    );
}
