//! Clients that hold file descriptors: silent or half-sent connections to the metrics and
//! management listeners are closed like the data plane's (the metrics listener defaults to
//! every interface, so workloads reach it); the proxy raises its soft open-file limit to the
//! hard one at start-up; and at the descriptor ceiling each accept loop warns once per
//! period, not once per retry, then says when it accepts again; below that ceiling,
//! `proxy.max_connections` (by default two fifths of the open-file limit) refuses the
//! connections over it, so the ones accepted can still dial their upstreams.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use iron_proxy_tests::*;

use super::API_KEY;

/// Reads until the proxy closes the connection; panics if it is still open after `bound`.
fn read_until_closed(mut s: TcpStream, what: &str, bound: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(bound)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // A timed read a signal interrupted is retried: see `timed_read`.
        match timed_read::read_some(&mut s, &mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{what}: the proxy kept the connection open ({e}); got {got:?}"),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

#[test]
fn silent_and_half_sent_clients_of_metrics_and_management_are_closed() {
    let px = Proxy::with(
        "management:\n  listen: auto\n  api_key_env: IRON_E2E_MGMT_KEY\ntransforms: []\n",
    )
    .env("IRON_E2E_MGMT_KEY", API_KEY)
    .start();
    let silent_metrics = connect(px.metrics_addr());
    let silent_management = connect(px.management_addr());
    let mut half_head = connect(px.metrics_addr());
    half_head
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n")
        .expect("writing half a head");
    let mut half_preface = connect(px.management_addr());
    half_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .expect("writing half a preface");
    // Meanwhile both answer.
    assert!(
        iron_proxy_tests::proxy::readyz_ok(px.metrics_addr()),
        "metrics answers"
    );
    let status = Curl::get(&format!("http://{}/v1/status", px.management_addr()))
        .header("Authorization", &format!("Bearer {API_KEY}"))
        .run();
    assert_eq!(status.status, 200, "{status:?}");
    // The first bytes are due within 10 s and a whole head within 30 s; a minute is the
    // bound past which the connection counts as held open forever.
    let bound = Duration::from_secs(60);
    for (what, s) in [
        ("a silent metrics client", silent_metrics),
        ("a silent management client", silent_management),
        ("half an HTTP/2 preface", half_preface),
    ] {
        let got = read_until_closed(s, what, bound);
        assert!(
            got.is_empty(),
            "{what}: closed without a reply, got {got:?}"
        );
    }
    let got = read_until_closed(half_head, "half a request head", bound);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "half a head: closed, or answered 408: {got:?}"
    );
}

/// Reads HTTP/2 frames until the proxy sends a GOAWAY, answering its PINGs (as HTTP/2
/// libraries do, so the proxy's liveness PINGs see a live client); panics if none came
/// within `bound`.
fn read_until_goaway(mut s: TcpStream, what: &str, bound: Duration) {
    let deadline = std::time::Instant::now() + bound;
    let (mut got, mut at, mut kinds) = (Vec::new(), 0, Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            panic!("{what}: no GOAWAY within {bound:?}; frame types {kinds:?}");
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match timed_read::read_some(&mut s, &mut buf) {
            Ok(0) => panic!("{what}: closed without a GOAWAY; frame types {kinds:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: no GOAWAY ({e}); frame types {kinds:?}"),
        }
        while at + 9 <= got.len() {
            let len = usize::from(got[at]) << 16
                | usize::from(got[at + 1]) << 8
                | usize::from(got[at + 2]);
            if at + 9 + len > got.len() {
                break;
            }
            let (kind, flags) = (got[at + 3], got[at + 4]);
            kinds.push(kind);
            if kind == 6 && flags & 1 == 0 {
                // PING: the same payload back, with ACK.
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&got[at + 9..at + 17]);
                s.write_all(&ack).expect("PING ACK");
            }
            at += 9 + len;
            if kind == 7 {
                return;
            }
        }
    }
}

/// An HTTP/2 client that sends its preface and SETTINGS and then opens no stream is sent
/// GOAWAY after 10 s, on the proxy's listeners and the metrics and management endpoints
/// alike: it was held open for as long as it answered PINGs.
#[test]
fn http2_clients_that_open_no_stream_are_sent_goaway() {
    let px = Proxy::with(
        "management:\n  listen: auto\n  api_key_env: IRON_E2E_MGMT_KEY\ntransforms: []\n",
    )
    .env("IRON_E2E_MGMT_KEY", API_KEY)
    .start();
    let idle = |addr: SocketAddr| {
        let mut s = connect(addr);
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        // An empty SETTINGS frame.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).expect("settings");
        s
    };
    let clients = [
        ("metrics", idle(px.metrics_addr())),
        ("management", idle(px.management_addr())),
        ("http_listen", idle(px.http_addr())),
    ];
    let started = std::time::Instant::now();
    let waits: Vec<_> = clients
        .into_iter()
        .map(|(what, s)| {
            std::thread::spawn(move || read_until_goaway(s, what, Duration::from_secs(25)))
        })
        .collect();
    for w in waits {
        w.join().expect("a GOAWAY");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "not before the 10 s bound: {:?}",
        started.elapsed()
    );
}

/// A policy that refuses every host but one, without resolving anything.
const ALLOW_ONE: &str =
    "transforms:\n  - name: allowlist\n    config:\n      domains: [\"allowed.test\"]\n";

/// A stand-in executable that runs the proxy under `prlimit --nofile=SOFT:HARD`.
fn under_nofile_limit(dir: &Path, soft: u64, hard: u64) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("iron-proxy-limited");
    let bin = paths::iron_proxy_bin();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={soft}:{hard} -- {} \"$@\"\n",
            bin.display()
        ),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `(soft, hard)` of "Max open files" in /proc/PID/limits.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = paths::scratch_dir("nofile");
    let px = Proxy::with("transforms: []")
        .binary(under_nofile_limit(dir.path(), 256, 2048))
        .start();
    assert_eq!(nofile(px.pid()), (2048, 2048));
    let line = px.wait_for_log(|l| l.contains("raised the open-file limit"));
    assert!(
        line.contains("\"from\":256") && line.contains("\"to\":2048"),
        "{line}"
    );
}

#[test]
fn at_the_descriptor_ceiling_accept_loops_warn_once_per_period_and_recover() {
    let dir = paths::scratch_dir("ceiling");
    // 128 descriptors: the proxy's own (listeners, runtime, pipes) are about 30. The
    // connection cap, by default well below the ceiling, is lifted to reach it.
    let px = Proxy::with(format!("proxy:\n  max_connections: 1000000\n{ALLOW_ONE}"))
        .binary(under_nofile_limit(dir.path(), 128, 128))
        .start();
    let addr = px.http_addr();
    // Silent clients fill the table; the rest wait in the listen backlog while each accept
    // fails. The proxy closes the silent ones after 10 s, and the backlog is served.
    let clients: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    // One snapshot of the log, taken when a loop accepts again after a long run of failures
    // (the silent clients' 10 s). A descriptor the proxy frees on its own (start-up's last
    // files, a resolver socket) can end a run after a retry or two first: those count too.
    let lines: Vec<LogLine> = wait_until(
        Duration::from_secs(120),
        "a log line saying the http listener accepts again after a long run of failures",
        || {
            let lines = px.log_lines();
            lines
                .iter()
                .any(|l| is_recovery(l) && failures_of(l) >= 50)
                .then_some(lines)
        },
    );
    drop(clients);
    let failures: u64 = lines
        .iter()
        .filter(|l| is_recovery(l))
        .map(failures_of)
        .sum();
    let warnings: Vec<&LogLine> = lines
        .iter()
        .filter(|l| l.level() == "warn" && l.msg().starts_with("accept failed on http listener"))
        .collect();
    assert!(!warnings.is_empty(), "the ceiling is reported");
    assert!(
        warnings.iter().all(|w| w
            .str("error")
            .is_some_and(|e| e.contains("Too many open files"))),
        "{warnings:?}"
    );
    // A loop retries every 50 ms; it warns when its run of failures starts and then at most
    // every 10 s (200 retries), where it used to warn at every retry.
    assert!(
        warnings.len() as u64 * 10 <= failures,
        "{} warnings for {failures} failed accepts",
        warnings.len()
    );
    // And the listener serves again.
    let r = Curl::get(&format!("http://{addr}/"))
        .header("Host", "other.test")
        .run();
    assert_eq!(
        r.status, 403,
        "served (and refused by the allowlist): {r:?}"
    );
}

/// `proxy.max_connections`, unset: two fifths of the open-file limit (256 here: 102). One
/// client fills the proxy with half-sent request heads (each held for the 30 s head bound).
/// Before the cap the proxy took them until it had no descriptor left, and a client it had
/// already accepted got 502 `connect_failed` ("Too many open files") for its next request,
/// which needed a new upstream connection. Now the connections over the cap are closed at
/// once, each audited `connection_limit`, the warning about them rate limited, and that
/// client's request is served.
#[test]
fn connections_over_the_default_cap_are_refused_so_accepted_ones_can_still_dial() {
    require_root!();
    let net = FakeInternet::new();
    let _first = Upstream::http("first.test").start(&net);
    let _second = Upstream::http("second.test").start(&net);
    let dir = paths::scratch_dir("max-connections");
    let px = Proxy::with(
        "transforms:\n  - name: allowlist\n    config:\n      domains: [\"first.test\", \"second.test\"]\n",
    )
    .binary(under_nofile_limit(dir.path(), 256, 256))
    .resolver(&net)
    .start();
    let started = px.wait_for_log(|l| l.contains("\"msg\":\"proxy.max_connections\""));
    assert!(
        started.contains("\"max\":\"102\"") && started.contains("\"source\":\"open-file limit\""),
        "{started}"
    );
    let addr = px.http_addr();
    // A well-behaved client, served once on its keep-alive connection.
    let mut good = super::KeepAlive::open(addr, Duration::from_secs(20));
    let status = good.status("/get", "first.test");
    assert!(status.contains(" 200 "), "{status}");
    // Another client opens 300 connections and leaves a request head half sent on each.
    const HOGS: usize = 300;
    let hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| {
            let mut s = connect(addr);
            // Refused ones may be closed already.
            let _ = s.write_all(b"GET /get HTTP/1.1\r\n");
            s
        })
        .collect();
    // Until the proxy has taken them in: refused over the cap, or (without it) its accepts
    // failing at the descriptor ceiling.
    wait_until(
        Duration::from_secs(20),
        "the half-sent connections refused, or the accept loop at the ceiling",
        || {
            let refused = px
                .audit()
                .iter()
                .filter(|a| a.str("reason") == Some("connection_limit"))
                .count();
            let at_ceiling = px
                .logs()
                .iter()
                .any(|l| l.contains("accept failed on http listener"));
            (refused >= HOGS - 101 || at_ceiling).then_some(())
        },
    );
    // The accepted client's next request needs a new upstream connection: it gets one.
    let status = good.status("/get", "second.test");
    assert!(
        status.contains(" 200 "),
        "served while the hogs are held: {status}"
    );
    let refused: Vec<AuditRecord> = px
        .audit()
        .iter()
        .filter(|a| a.str("reason") == Some("connection_limit"))
        .cloned()
        .collect();
    // 101 connections besides the good one fit under the cap (the harness's readiness
    // probes may still hold a place or two as they close).
    assert!(
        (HOGS - 101..=HOGS - 98).contains(&refused.len()),
        "{} refused of {HOGS}",
        refused.len()
    );
    for rec in &refused {
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.status_code(), Some(0), "{rec}");
        assert!(
            rec.str("error")
                .is_some_and(|e| e.contains("(proxy.max_connections: 102)")),
            "{rec}"
        );
    }
    let warnings = px
        .log_lines()
        .into_iter()
        .filter(|l| l.msg() == "refused connections over proxy.max_connections")
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for {} refusals",
        refused.len()
    );
    assert!(
        !px.logs().iter().any(|l| l.contains("Too many open files")),
        "the ceiling was never reached"
    );
    drop(hogs);
}

fn is_recovery(l: &LogLine) -> bool {
    l.msg() == "accepting connections again" && l.str("listener") == Some("http")
}

/// The failed accepts a recovery line reports.
fn failures_of(l: &LogLine) -> u64 {
    l.0["failures"].as_u64().expect("failures is a count")
}

/// How many connections one client address may have open in
/// [`one_clients_connections_are_capped_and_another_clients_are_not`].
const CAP: usize = 4;

/// `proxy.max_connections_per_client`: a client at the cap (here 127.0.0.1, holding
/// keep-alive connections it got answers on) has its next connections closed without a reply,
/// on every listener (the cap counts all of them), each audited once; meanwhile another client
/// (127.0.0.2) is served, and once the first closes one of its connections it is served again.
/// The warning about the refusals is rate limited: a flood of them is not a flood of warnings.
#[test]
fn one_clients_connections_are_capped_and_another_clients_are_not() {
    let px = Proxy::with(format!(
        "proxy:\n  tunnel_listen: auto\n  max_connections_per_client: {CAP}\n{ALLOW_ONE}"
    ))
    .start();
    let addr = px.http_addr();
    // CAP connections, each shown accepted and served (the allowlist's 403), kept open. The
    // harness's readiness probes were connections from 127.0.0.1 too: until the proxy has seen
    // them close, a slot may still be theirs, so a connection refused now is tried again (and
    // its refusal counted with the others).
    let mut held: Vec<super::KeepAlive> = Vec::new();
    let mut refused_early = 0;
    wait_until(
        Duration::from_secs(10),
        "the held connections served",
        || {
            while held.len() < CAP {
                let mut c = super::KeepAlive::open(addr, Duration::from_secs(20));
                match c.try_status("/", "other.test") {
                    Some(status) => {
                        assert!(status.contains(" 403 "), "{status}");
                        held.push(c);
                    }
                    None => {
                        refused_early += 1;
                        return None;
                    }
                }
            }
            Some(())
        },
    );
    // Over the cap: closed without a reply, on the HTTP listener and on the tunnel listener.
    const FLOOD: usize = 40;
    for i in 0..FLOOD {
        let to = if i % 2 == 0 { addr } else { px.tunnel_addr() };
        let mut s = connect(to);
        // The proxy may have closed it already: a failed write is a refusal too.
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
        let got = read_until_closed(s, "a connection over the cap", Duration::from_secs(20));
        assert!(got.is_empty(), "closed without a reply, got {got:?}");
    }
    // Another client address is served meanwhile, on both listeners.
    let r = Curl::get(&format!("http://{addr}/"))
        .header("Host", "other.test")
        .args(["--interface", "127.0.0.2"])
        .run();
    assert_eq!(r.status, 403, "127.0.0.2 is served: {r:?}");
    let r = Curl::get("http://other.test/")
        .args(["--interface", "127.0.0.2", "--proxy"])
        .args([format!("http://{}", px.tunnel_addr())])
        .run();
    assert_eq!(
        r.status, 403,
        "127.0.0.2 is served through the tunnel listener: {r:?}"
    );
    // One record per refused connection, naming the reason and the client.
    let refused = wait_until(Duration::from_secs(10), "a record per refusal", || {
        let recs: Vec<AuditRecord> = px
            .audit()
            .iter()
            .filter(|a| a.str("reason") == Some("client_connection_limit"))
            .cloned()
            .collect();
        (recs.len() >= FLOOD + refused_early).then_some(recs)
    });
    assert_eq!(refused.len(), FLOOD + refused_early, "one record each");
    for rec in &refused {
        assert!(
            rec.str("remote_addr")
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{rec}"
        );
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.status_code(), Some(0), "{rec}");
        assert!(
            rec.str("error")
                .is_some_and(|e| e.contains("max_connections_per_client: 4")),
            "{rec}"
        );
    }
    let modes: std::collections::BTreeSet<_> =
        refused.iter().filter_map(|a| a.str("mode")).collect();
    assert_eq!(modes, ["http", "tunnel"].into(), "both listeners refuse");
    // Warned when the refusals started, then at most every 10 s: not once per refusal.
    let warnings = px
        .log_lines()
        .into_iter()
        .filter(|l| l.msg() == "refused connections over proxy.max_connections_per_client")
        .count();
    assert!(warnings >= 1, "the refusals are reported");
    assert!(
        warnings * 10 <= FLOOD,
        "{warnings} warnings for {FLOOD} refusals"
    );
    // The held connections still work; once one closes, 127.0.0.1 is served again.
    assert!(held[0].status("/", "other.test").contains(" 403 "));
    drop(held.pop());
    let r = wait_until(Duration::from_secs(10), "127.0.0.1 served again", || {
        let r = Curl::get(&format!("http://{addr}/"))
            .header("Host", "other.test")
            .run();
        (r.status != 0).then_some(r)
    });
    assert_eq!(r.status, 403, "{r:?}");
}

/// Under `proxy.max_connections_per_client`, a tunnel that hyper opened holds its client's slot
/// for as long as the tunnel is open. The connection's first request is a proxied GET, so its
/// CONNECT goes through hyper's upgrade rather than the plain CONNECT reader: hyper's task for
/// the connection ends at the upgrade, and the socket lives on in the tunnel's own task.
#[test]
fn a_tunnel_hyper_upgraded_holds_its_clients_slot_until_it_closes() {
    let px = Proxy::with(format!(
        "proxy:\n  tunnel_listen: auto\n  max_connections_per_client: 1\n{ALLOW_ONE}"
    ))
    .start();
    let tunnel = px.tunnel_addr();
    // Served through hyper (a proxied request, refused by the allowlist), kept alive. The
    // harness's readiness probes were connections from 127.0.0.1 too: until the proxy has seen
    // them close, the one slot may still be theirs, so the first connection is retried.
    let mut c = wait_until(Duration::from_secs(10), "a first connection served", || {
        let mut s = connect(tunnel);
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        s.write_all(b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
            .ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The allowlist's 403 is short and Content-Length framed: read until its body is in.
        while !super::ends_a_response(&got) {
            match timed_read::read_some(&mut s, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        let head = String::from_utf8_lossy(&got).into_owned();
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        Some(s)
    });
    c.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")
        .expect("writing the CONNECT");
    let head = timed_read::read_head(&mut c, "the CONNECT answer");
    assert!(head.starts_with("HTTP/1.1 200"), "tunnel granted: {head}");
    // The tunnel is open (the proxy waits for its ClientHello): the client's one slot is taken,
    // so its next connection is closed without a reply and audited.
    let mut s = connect(tunnel);
    let _ = s.write_all(b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n");
    let got = read_until_closed(
        s,
        "a connection while the tunnel is open",
        Duration::from_secs(5),
    );
    assert!(
        got.is_empty(),
        "refused while the tunnel is open, got {got:?}"
    );
    px.wait_for_audit(|a| {
        a.str("reason") == Some("client_connection_limit") && a.str("mode") == Some("tunnel")
    });
    // Closed, the tunnel no longer counts.
    drop(c);
    let r = wait_until(
        Duration::from_secs(10),
        "served once the tunnel closed",
        || {
            let r = Curl::get("http://other.test/")
                .args(["--proxy".to_string(), format!("http://{tunnel}")])
                .run();
            (r.status != 0).then_some(r)
        },
    );
    assert_eq!(r.status, 403, "{r:?}");
}
