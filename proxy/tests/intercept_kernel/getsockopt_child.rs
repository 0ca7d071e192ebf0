//! `SO_ORIGINAL_DST` through the cgroup/getsockopt program: the listener runs
//! in a child process (this test binary again) inside a second test cgroup
//! that has the getsockopt program attached, and asks with nix's
//! `OriginalDst` / `Ip6tOriginalDst`. An answered question takes the tuple
//! entry out of the map; an unanswered one (`SOL_IP` for an IPv6 origin)
//! leaves it for the `SOL_IPV6` retry.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};

use nix::sys::socket::{getsockopt, sockopt};

use super::support::*;
use super::*;

/// In the child: listen on v4 and v6, print the ports, answer one
/// connection on each with what getsockopt says.
pub fn run() {
    let l4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
    let l6 = TcpListener::bind("[::1]:0").expect("bind v6");
    let mut out = std::io::stdout();
    writeln!(
        out,
        "HELPER ports {} {}",
        l4.local_addr().expect("a").port(),
        l6.local_addr().expect("a").port()
    )
    .expect("stdout");
    out.flush().expect("flush");
    let (c4, _) = l4.accept().expect("accept v4");
    let answer4 = match getsockopt(&c4, sockopt::OriginalDst) {
        Ok(sin) => SocketAddr::from((
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ))
        .to_string(),
        Err(e) => format!("error:{e}"),
    };
    let ends4 = ends(&c4);
    finish(c4);
    writeln!(out, "HELPER v4 {answer4} {ends4}").expect("stdout");
    out.flush().expect("flush");
    let (c6, _) = l6.accept().expect("accept v6");
    // SOL_IP cannot carry an IPv6 origin: unanswered, the entry stays.
    let sol_ip = match getsockopt(&c6, sockopt::OriginalDst) {
        Ok(_) => "answered",
        Err(_) => "unanswered",
    };
    let answer6 = match getsockopt(&c6, sockopt::Ip6tOriginalDst) {
        Ok(sin6) => SocketAddr::from((
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
        ))
        .to_string(),
        Err(e) => format!("error:{e}"),
    };
    // An unrelated getsockopt in the same cgroup still works.
    let plain = getsockopt(&c6, sockopt::ReuseAddr)
        .map(|_| "ok")
        .unwrap_or("broken");
    let ends6 = ends(&c6);
    finish(c6);
    writeln!(out, "HELPER v6 {sol_ip} {answer6} plain {plain} {ends6}").expect("stdout");
    out.flush().expect("flush");
}

/// "<peer> <local>" of an accepted connection.
fn ends(conn: &std::net::TcpStream) -> String {
    format!(
        "{} {}",
        conn.peer_addr().expect("peer"),
        conn.local_addr().expect("local")
    )
}

/// Reads the workload's line, so closing does not reset the connection.
fn finish(conn: std::net::TcpStream) {
    let mut line = String::new();
    let _ = BufReader::new(&conn).read_line(&mut line);
}

pub fn parent_test() {
    let workloads = TestCgroup::new();
    let proxy_cg = TestCgroup::new();
    let pins = TestPins::new();

    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "getsockopt_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("IRON_GETSOCKOPT_HELPER", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = proxy_cg.spawn(&mut cmd, None);
    // Lines arrive through a channel so a silent helper fails the test
    // instead of hanging it (the cgroup guard then kills the helper).
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test getsockopt_helper ... " before our first line.
            if let Some(at) = line.find("HELPER ") {
                let _ = tx.send(line[at + "HELPER ".len()..].to_owned());
            }
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the getsockopt helper answers within 30s")
    };
    let ports = next();
    let p4: u16 = field(&ports, 1).parse().expect("v4 port");
    let p6: u16 = field(&ports, 2).parse().expect("v6 port");

    let mut s = settings(&workloads, &pins, SocketAddr::from(([127, 0, 0, 1], p4)));
    s.listen_v6 = Some(std::net::SocketAddrV6::new(Ipv6Addr::LOCALHOST, p6, 0, 0));
    s.getsockopt_cgroups = vec![proxy_cg.path.clone()];
    let ic = attach(&s);

    // The helper replies nothing; the workload just connects and closes.
    let ran = run_workload(
        &workloads,
        None,
        &["tcp", "127.0.0.2", "8080", "tcp", "::1", "9443"],
    );
    assert!(
        ran.lines.iter().all(|l| l.starts_with("tcp ok")),
        "{:?}",
        ran.lines
    );
    let v4 = next();
    assert_eq!(
        v4.split(' ').take(2).collect::<Vec<_>>(),
        ["v4", "127.0.0.2:8080"],
        "{v4}"
    );
    let v6 = next();
    assert_eq!(
        v6.split(' ').take(5).collect::<Vec<_>>(),
        ["v6", "unanswered", "[::1]:9443", "plain", "ok"],
        "{v6}"
    );
    // Both answered questions took their entries out of the tuple map.
    for (line, at) in [(&v4, 2), (&v6, 5)] {
        let addr = |n: usize| -> SocketAddr { field(line, n).parse().expect("address") };
        assert_eq!(
            ic.original_dst().lookup(addr(at), addr(at + 1)),
            None,
            "tuple entry left after the answer: {line}"
        );
    }
    let status = child.wait().expect("helper exit");
    assert!(status.success(), "helper failed: {status}");
    let c = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(c.origdst_answered, 2);
}
