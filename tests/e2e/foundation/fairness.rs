//! One workload must not deny service to others: the share of
//! `proxy.max_buffered_bytes` one client's bodies may hold, and the share of
//! the proxy's own resolver's lookups in flight one client's requests may
//! take. The two clients are two loopback source addresses (127.0.0.2 and
//! 127.0.0.3), which the proxy counts apart.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iron_proxy_tests::*;

use super::bodies::{body_file, body_swapping_proxy};
use super::plain;

/// One client (127.0.0.2) trickling bodies holds at most half of a 2048-byte
/// `proxy.max_buffered_bytes`: its third 500-byte body is refused with 503
/// `body_buffer_full` naming its share, and a second client (127.0.0.3) still
/// gets its 600-byte buffered body through. Before, the first client's four bodies
/// held 2000 bytes and the second client's got 503.
#[test]
fn one_client_holds_half_the_body_budget_and_another_still_buffers() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("body.test").start(&net);
    let px = body_swapping_proxy(
        &net,
        "  max_buffered_bytes: 2048\nmetrics:\n  listen: auto\n",
        r#"["body.test"]"#,
    );
    let held_bytes = || px.metric("iron_proxy_buffered_body_bytes", &[]);
    let stall = |name: &str| {
        let mut s = connect_from([127, 0, 0, 2].into(), px.http_addr());
        let head = format!(
            "POST http://body.test/anything/{name} HTTP/1.1\r\nHost: body.test\r\n\
             Content-Length: 600\r\n\r\n"
        );
        std::io::Write::write_all(&mut s, head.as_bytes()).expect("head");
        std::io::Write::write_all(&mut s, &[b'x'; 500]).expect("most of the body");
        s
    };
    let mut held = Vec::new();
    for (name, bytes) in [("a1", 500.0), ("a2", 1000.0)] {
        held.push(stall(name));
        wait_until(Duration::from_secs(10), "the body held", || {
            (held_bytes() == Some(bytes)).then_some(())
        });
    }
    for name in ["a3", "a4"] {
        held.push(stall(name));
        let path = format!("/anything/{name}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path.as_str()));
        assert_eq!(rec.str("reason"), Some("body_buffer_full"), "{rec}");
        assert_eq!(rec.status_code(), Some(503), "{rec}");
        assert!(
            rec.str("error")
                .is_some_and(|e| e.contains("share") && e.contains("1024 of 2048")),
            "{rec}"
        );
    }
    assert_eq!(
        held_bytes(),
        Some(1000.0),
        "the refused bodies hold nothing"
    );

    let dir = paths::scratch_dir("fairness");
    let data = body_file(dir.path(), "b", "token=pk-body-placeholder&", 600);
    plain(&px, "http://body.test/anything/b")
        .args(["--interface", "127.0.0.3", "--data-binary", &data])
        .run()
        .expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/b");

    drop(held);
    wait_until(Duration::from_secs(10), "the held bodies let go", || {
        (held_bytes() == Some(0.0)).then_some(())
    });
}

/// A nameserver on loopback that never answers names under `slow.test` and
/// relays every other query to `next` (the fake internet's dnsmasq). Stops on drop.
struct SlowResolver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowResolver {
    fn start(next: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the slow resolver");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                if qname(&query).is_none_or(|q| q.ends_with("slow.test")) {
                    continue; // held unanswered: the slow resolver
                }
                let answer_to = socket.try_clone().expect("clone the socket");
                std::thread::spawn(move || {
                    let relay = UdpSocket::bind("0.0.0.0:0").expect("bind the relay");
                    relay
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("read timeout");
                    relay.send_to(&query, next).expect("relay the query");
                    let mut answer = [0u8; 1500];
                    if let Ok(n) = relay.recv(&mut answer) {
                        let _ = answer_to.send_to(&answer[..n], from);
                    }
                });
            }
        });
        SlowResolver {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The question's name of a DNS query, lowercase, without the final dot.
fn qname(packet: &[u8]) -> Option<String> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            return Some(labels.join(".").to_ascii_lowercase());
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
}

/// A client (127.0.0.2) whose requests keep 64 lookups in flight on a resolver that does
/// not answer (names it made up under an allowed `*.slow.test`) has its next request refused
/// after 3 s with 503 `dns_lookup_busy`; another client (127.0.0.3) still gets its name
/// resolved and its answer meanwhile. Before, lookups in flight had no bound.
#[test]
fn a_client_past_its_share_of_lookups_gets_503_dns_lookup_busy() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("fast.test").start(&net);
    let slow = SlowResolver::start(net.resolver());
    let px = Proxy::with(format!(
        r#"
dns:
  upstream_resolver: "{}"
metrics:
  listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["*.slow.test", "fast.test"]
"#,
        slow.addr
    ))
    .start();

    // 65 requests at once from one client, each for a name of its own.
    let urls: Vec<String> = (0..65)
        .map(|i| format!("http://made-up-{i}.slow.test/get"))
        .collect();
    let mut flood = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "30", "--parallel"])
        .args(["--parallel-immediate", "--parallel-max", "100"])
        .args([
            "--interface",
            "127.0.0.2",
            "--connect-to",
            &px.connect_to_http(),
        ])
        .args(&urls)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");

    let rec = px.wait_for_audit(|a| a.str("reason") == Some("dns_lookup_busy"));
    assert_eq!(rec.status_code(), Some(503), "{rec}");
    assert_eq!(rec.str("action"), Some("error"), "{rec}");
    assert!(
        rec.host().is_some_and(|h| h.ends_with(".slow.test")),
        "{rec}"
    );
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("64 per client, 256 in all")),
        "{rec}"
    );
    assert_eq!(
        px.metric("iron_proxy_resolver_lookups_in_flight", &[]),
        Some(64.0),
        "the client's share is held"
    );
    assert!(
        px.metric("iron_proxy_resolver_lookups_busy_total", &[])
            .is_some_and(|n| n >= 1.0),
        "the refusal counted"
    );

    // The other client's name is looked up in a place of its own.
    plain(&px, "http://fast.test/get")
        .args(["--interface", "127.0.0.3"])
        .run()
        .expect_status(200);
    up.wait_for_request(|q| q.path() == "/get");

    let _ = flood.kill();
    let _ = flood.wait();
}
