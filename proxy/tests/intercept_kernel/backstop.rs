//! The cgroup_skb egress backstop leaves loopback alone: a server inside the
//! intercepted cgroup still answers a loopback client outside it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use iron_proxy::intercept::Interceptor;

use super::support::*;
use super::{attach, settings};

/// Listens on `argv[1]` port 0, prints the port, answers one client.
const SERVER: &str = r#"
import socket, sys
host = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.bind((host, 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.recv(100)
c.sendall(b'served\n')
c.close()
"#;

#[test]
fn a_workload_server_answers_loopback_clients() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let _ic = attach(&settings(&cg, &pins, proxy.addr));

    for host in ["127.0.0.1", "::1"] {
        let mut cmd = Command::new(python());
        cmd.args(["-c", SERVER, host])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cg.spawn(&mut cmd, None);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("port {line:?}: {e}"));
        let addr = std::net::SocketAddr::new(host.parse().expect("ip"), port);
        assert_eq!(
            connect_here(addr).expect("connecting to the workload server"),
            "served",
            "the reply to a loopback client must pass the backstop ({host})"
        );
        assert!(child.wait().expect("server exit").success());
    }
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(c.backstop_dropped, 0, "{c:?}");
}
