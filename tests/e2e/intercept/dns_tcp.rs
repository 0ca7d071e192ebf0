//! DNS over TCP from intercepted workloads: every workload redirected on this host reaches the
//! DNS server from the same loopback address, so the server bounds each workload's connections
//! (its uid and cgroup, from the interception record) rather than each address's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use iron_proxy_tests::cgroup::system_python;
use iron_proxy_tests::process::ChildGuard;
use iron_proxy_tests::*;
use serde_json::json;

use super::lab::Lab;

/// Opens N TCP connections to port 53 of a resolver (redirected to the proxy's DNS server),
/// sends one A query on each and prints how many got an answer and how many were closed;
/// then holds them until a line arrives on stdin.
const HOG: &str = r#"
import socket, struct, sys
resolver, n = sys.argv[1], int(sys.argv[2])
def query(i):
    name = b''.join(bytes([len(l)]) + l for l in (b'hog%d' % i, b'example')) + b'\0'
    return struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 1, 1)
def answered(s, i):
    try:
        q = query(i)
        s.sendall(struct.pack('>H', len(q)) + q)
        head = b''
        while len(head) < 2:
            d = s.recv(2 - len(head))
            if not d:
                return False
            head += d
        return True
    except OSError:
        return False
conns = [socket.create_connection((resolver, 53), timeout=10) for _ in range(n)]
results = [answered(s, i) for i, s in enumerate(conns)]
print(sum(results), len(results) - sum(results), flush=True)
sys.stdin.readline()
"#;

/// One workload holding as many DNS connections as the server allows one client (128) does
/// not shut another workload out of DNS over TCP. Before, both were 127.0.0.1 to the server:
/// the second workload's connection was closed as soon as it was accepted.
#[test]
fn one_workload_at_its_dns_tcp_bound_leaves_the_others_served() {
    require_root!();
    let net = FakeInternet::new();
    let other = TestCgroup::new();
    let lab = Lab::start_with(&net, |c| {
        c["intercept"]["cgroups"]
            .as_array_mut()
            .expect("cgroups list")
            .push(json!(other.path()));
    });
    let resolver = net.add_host().v4.to_string();

    let mut cmd = Command::new(system_python());
    cmd.args(["-c", HOG, &resolver, "129"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    lab.cg.enter(&mut cmd, None);
    let mut hog = ChildGuard::spawn("dns tcp hog", &mut cmd);
    let out = hog.child_mut().stdout.take().expect("hog stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("the hog's count");
    assert_eq!(
        line.trim(),
        "128 1",
        "the hog gets its 128 connections, the next is closed"
    );

    // The hog holds its 128 open: another workload is still answered over TCP.
    let ran = other.dig(&[
        &format!("@{resolver}"),
        "+tcp",
        "example.test",
        "A",
        "+short",
        "+time=3",
        "+tries=1",
    ]);
    assert_eq!(
        ran.stdout.trim(),
        net.host_side_v4().to_string(),
        "the other workload's TCP query: {ran}"
    );
    hog.child_mut()
        .stdin
        .take()
        .expect("hog stdin")
        .write_all(b"done\n")
        .expect("release the hog");
    drop(hog);
    drop(lab);
}
