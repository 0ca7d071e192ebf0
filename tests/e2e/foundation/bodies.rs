//! Request bodies: streamed by default, whatever their size; buffered only
//! when a transform needs them (here `secrets` with `replace.match_body`),
//! and then refused with 413 past `proxy.max_request_body_bytes`, never
//! truncated; read only as far as needed when a transform reads just their
//! start (`body_capture`), the rest streaming on untouched.

use std::time::Duration;

use iron_proxy_tests::*;

use super::{allowed, audited, plain, refused, Expect, NOT_ALLOWLISTED};

/// Writes `len` bytes of `fill`, optionally starting with `prefix`, to a file
/// for `curl --data-binary @file`.
pub(super) fn body_file(dir: &std::path::Path, name: &str, prefix: &str, len: usize) -> String {
    let mut body = prefix.as_bytes().to_vec();
    body.resize(len, b'x');
    body_arg(dir, name, &body)
}

/// Writes `body` to a file for `curl --data-binary @file` and returns that argument.
fn body_arg(dir: &std::path::Path, name: &str, body: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    format!("@{}", path.display())
}

/// POSTs a 32 MiB body to `http://body.test/anything/raw` through the proxy
/// at argv[1]:argv[2] in one go, then prints the response's status line.
const RAW_BIG_POST: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
n = 32 << 20
s.sendall(("POST http://body.test/anything/raw HTTP/1.1\r\nHost: body.test\r\n"
           "Content-Type: application/octet-stream\r\n"
           "Content-Length: %d\r\n\r\n" % n).encode())
chunk = b"token=pk-body-placeholder&" + b"x" * ((1 << 20) - 26)
try:
    for _ in range(32):
        s.sendall(chunk)
except OSError as e:
    sys.exit("sending the body failed: %s" % e)
data = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    data += d
print(data.split(b"\r\n")[0].decode())
"#;

#[test]
fn a_body_larger_than_the_cap_streams_when_no_transform_needs_it() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("stream.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  max_request_body_bytes: 1024
transforms:
  - name: allowlist
    config:
      domains: ["stream.test"]
"#,
    )
    .resolver(&net)
    .start();
    let dir = paths::scratch_dir("bodies");
    // Over 1 MiB, so curl also exercises `Expect: 100-continue`.
    let data = body_file(dir.path(), "big", "", 3 << 20);

    let r = plain(&px, "http://stream.test/anything/big")
        .args(["--data-binary", &data])
        .run();
    r.expect_status(200);
    assert_eq!(r.json()["body_len"], 3 << 20, "the whole body arrived: {r}");
    let seen = up.wait_for_request(|q| q.path() == "/anything/big");
    assert_eq!(seen.0["body_len"], 3 << 20, "{seen}");
    audited(&px, "stream.test", "/anything/big", &allowed(200));
}

#[test]
fn a_transform_that_reads_only_the_start_lets_a_long_body_through_whole() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("capture.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  max_request_body_bytes: 1024
transforms:
  - name: allowlist
    config:
      domains: ["capture.test"]
  - name: body_capture
    config:
      max_request_body_bytes: 64
      rules:
        - host: "capture.test"
  - name: allowlist
    config:
      rules:
        - host: "capture.test"
          paths: ["/anything/*"]
"#,
    )
    .resolver(&net)
    .start();
    // Refused by the transform after body_capture: the record keeps what was captured, since
    // denied requests are the ones worth investigating.
    plain(&px, "http://capture.test/denied")
        .args(["--data-binary", "exfil=1"])
        .run()
        .expect_status(403);
    let rec = audited(&px, "capture.test", "/denied", &NOT_ALLOWLISTED);
    assert_eq!(rec.0["body_capture"]["request_body"], "exfil=1", "{rec}");
    let dir = paths::scratch_dir("bodies");
    // 3 MiB: far past both caps; distinct bytes everywhere, so a lost or
    // reordered chunk would show.
    let body: String = (0..(3 << 20) / 8).map(|i| format!("{i:07x}\n")).collect();
    let data = body_arg(dir.path(), "long", body.as_bytes());
    let r = plain(&px, "http://capture.test/anything/long")
        .args(["--data-binary", &data])
        .run();
    r.expect_status(200);
    let echo = r.json();
    assert_eq!(echo["body_len"], 3 << 20, "{}", echo["body_len"]);
    assert!(
        echo["data"] == body.as_str(),
        "the upstream got the body unchanged"
    );
    let rec = audited(&px, "capture.test", "/anything/long", &allowed(200));
    let capture = &rec.0["body_capture"];
    assert_eq!(capture["request_body"], body[..64], "{rec}");
    assert_eq!(capture["request_body_truncated"], true, "{rec}");
}

/// A proxy with `max_request_body_bytes: 1024` (and the `proxy:` lines in `more`)
/// allowing `domains`, whose `secrets` swaps a placeholder in `body.test`'s request
/// bodies, so it buffers them.
pub(super) fn body_swapping_proxy(net: &FakeInternet, more: &str, domains: &str) -> ProxyProcess {
    body_swapping_proxy_capped(net, 1024, more, domains)
}

/// [`body_swapping_proxy`] with `max_request_body_bytes: cap`.
fn body_swapping_proxy_capped(
    net: &FakeInternet,
    cap: usize,
    more: &str,
    domains: &str,
) -> ProxyProcess {
    Proxy::with(format!(
        r#"
proxy:
  max_request_body_bytes: {cap}
{more}transforms:
  - name: allowlist
    config:
      domains: {domains}
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: FOUNDATION_BODY_SECRET}}
          replace:
            proxy_value: "pk-body-placeholder"
            match_body: true
          rules:
            - host: "body.test"
"#
    ))
    .env("FOUNDATION_BODY_SECRET", "real-body-secret")
    .resolver(net)
    .start()
}

#[test]
fn a_body_a_transform_must_read_is_refused_past_the_cap() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("body.test").start(&net);
    let other = Upstream::http("other.test").start(&net);
    let px = body_swapping_proxy(&net, "", r#"["body.test", "other.test"]"#);
    let dir = paths::scratch_dir("bodies");

    // Within the cap, the body is buffered and the placeholder swapped.
    let small = body_file(dir.path(), "small", "token=pk-body-placeholder&", 600);
    plain(&px, "http://body.test/anything/small")
        .args(["--data-binary", &small])
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|q| q.path() == "/anything/small");
    assert!(seen.body().starts_with("token=real-body-secret&"), "{seen}");
    audited(&px, "body.test", "/anything/small", &allowed(200));

    // Past the cap: 413, audited, and nothing reaches the upstream.
    let big = body_file(dir.path(), "big", "token=pk-body-placeholder&", 4096);
    let r = plain(&px, "http://body.test/anything/big")
        .args(["--data-binary", &big])
        .run();
    assert_eq!(r.status, 413, "{r}");
    assert!(r.body.contains("max_request_body_bytes"), "{r}");
    audited(
        &px,
        "body.test",
        "/anything/big",
        &Expect {
            rejected_by: Some("secrets"),
            ..refused(413, "request_body_too_large")
        },
    );
    // A body far past the cap (curl waits for `100 Continue`) gets the same answer,
    // not a reset connection.
    let huge = body_file(dir.path(), "huge", "token=pk-body-placeholder&", 3 << 20);
    let r = plain(&px, "http://body.test/anything/huge")
        .args(["--data-binary", &huge])
        .run();
    assert_eq!(r.status, 413, "{r}");
    audited(
        &px,
        "body.test",
        "/anything/huge",
        &Expect {
            rejected_by: Some("secrets"),
            ..refused(413, "request_body_too_large")
        },
    );
    // A client that sends its whole 32 MiB body without waiting (no `Expect`),
    // far more than the socket buffers hold: the proxy refuses after the cap,
    // then reads and drops the rest (lingering close) instead of resetting
    // the connection, so the client finishes sending and reads the 413.
    let raw = python(
        RAW_BIG_POST,
        [
            px.http_addr().ip().to_string(),
            px.http_addr().port().to_string(),
        ],
    );
    raw.assert_ok();
    assert_eq!(
        raw.stdout.trim(),
        "HTTP/1.1 413 Payload Too Large",
        "stderr: {}",
        raw.stderr
    );
    audited(
        &px,
        "body.test",
        "/anything/raw",
        &Expect {
            rejected_by: Some("secrets"),
            ..refused(413, "request_body_too_large")
        },
    );
    up.assert_no_request(|q| {
        q.path() == "/anything/big" || q.path() == "/anything/huge" || q.path() == "/anything/raw"
    });

    // The same body to a host outside the transform's rules streams through.
    let r = plain(&px, "http://other.test/anything/big")
        .args(["--data-binary", &big])
        .run();
    r.expect_status(200);
    let seen = other.wait_for_request(|q| q.path() == "/anything/big");
    assert_eq!(seen.0["body_len"], 4096, "{seen}");
    assert!(
        seen.body().starts_with("token=pk-body-placeholder&"),
        "no transform touched it: {seen}"
    );
    audited(&px, "other.test", "/anything/big", &allowed(200));
}

/// A chunked body that breaks off while a transform reads it (all of it for `secrets` with
/// `match_body`, its start for `body_capture`) is the client's fault: 400 and a record whose
/// error names the cause once, down to the parser's complaint.
#[test]
fn a_broken_body_read_by_a_transform_is_audited_with_its_cause() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("broken.test").start(&net);
    let readers = [
        (
            "secrets match_body",
            r#"
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: FOUNDATION_BODY_SECRET}
          replace:
            proxy_value: "pk-body-placeholder"
            match_body: true
          rules:
            - host: "broken.test"
"#,
        ),
        (
            "body_capture",
            r#"
  - name: body_capture
    config:
      max_request_body_bytes: 64
      rules:
        - host: "broken.test"
"#,
        ),
    ];
    for (reader, transform) in readers {
        let px = Proxy::with(format!(
            "transforms:\n  - name: allowlist\n    config:\n      domains: [\"broken.test\"]\n{transform}"
        ))
        .env("FOUNDATION_BODY_SECRET", "real-body-secret")
        .resolver(&net)
        .start();
        let script = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"POST /anything/broken HTTP/1.1\r\nHost: broken.test\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    data += d
print(data.split(b"\r\n")[0].decode())
"#;
        let addr = px.http_addr();
        let r = python(script, [addr.ip().to_string(), addr.port().to_string()]);
        r.assert_ok();
        assert!(
            r.stdout.starts_with("HTTP/1.1 400"),
            "{reader}: {}",
            r.stdout
        );
        let rec = px.wait_for_audit(|a| a.path() == Some("/anything/broken"));
        assert_eq!(
            rec.str("reason"),
            Some("client_body_error"),
            "{reader}: {rec}"
        );
        let error = rec.str("error").unwrap_or_default();
        assert!(
            error.starts_with("client request body: ") && error.contains("chunk size"),
            "{reader}: the cause is named: {error:?}"
        );
        let causes: Vec<&str> = error.split(": ").collect();
        let mut unique = causes.clone();
        unique.dedup();
        assert_eq!(causes, unique, "{reader}: a cause repeated in {error:?}");
    }
}

/// Sends argv[3] (a request head, `\n` for CRLF) to the proxy at argv[1]:argv[2], then
/// argv[4] as the start of the body, and prints the status line of the answer and how long
/// it took, in whole seconds (`HTTP/1.1 408 Request Timeout 2`).
const STALLED_BODY: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.settimeout(30)
t = time.monotonic()
s.sendall(sys.argv[3].replace("\n", "\r\n").encode() + sys.argv[4].encode())
line = s.makefile("rb").readline().decode().strip()
print(line, int(time.monotonic() - t))
"#;

#[test]
fn a_body_a_transform_reads_that_stalls_is_answered_408_and_an_oversized_one_413_at_once() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("body.test").start(&net);
    let px = body_swapping_proxy(
        &net,
        "  upstream_response_header_timeout: 2s\n",
        r#"["body.test"]"#,
    );
    let addr = px.http_addr();
    let send = |head: &str, start: &str| {
        let out = python(
            STALLED_BODY,
            [
                addr.ip().to_string(),
                addr.port().to_string(),
                head.to_string(),
                start.to_string(),
            ],
        );
        out.assert_ok();
        out.stdout.trim().to_string()
    };

    // 100 bytes declared, 3 sent, then nothing: 408 after the 2 s limit, not a hang.
    let got = send(
        "POST http://body.test/anything/stall HTTP/1.1\nHost: body.test\nContent-Length: 100\n\n",
        "abc",
    );
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    let secs: u64 = got
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    assert!((2..10).contains(&secs), "{got}");
    audited(
        &px,
        "body.test",
        "/anything/stall",
        &Expect {
            level: "ERROR",
            ..super::failed(408, "client_body_timeout")
        },
    );
    up.assert_no_request(|q| q.path() == "/anything/stall");

    // A declared length past the cap, waiting for `100 Continue`: 413 at once, no 100.
    let got = send(
        "POST http://body.test/anything/declared HTTP/1.1\nHost: body.test\n\
         Content-Length: 9000000000000000000\nExpect: 100-continue\n\n",
        "",
    );
    assert!(got.starts_with("HTTP/1.1 413 "), "{got}");
    audited(
        &px,
        "body.test",
        "/anything/declared",
        &Expect {
            rejected_by: Some("secrets"),
            ..refused(413, "request_body_too_large")
        },
    );
}

/// Buffered bodies share `proxy.max_buffered_bytes`: with two clients (127.0.0.2 and
/// 127.0.0.3, so that neither is past its share, half the total) each holding most of a
/// 1000-byte body in the proxy (they stall before its last byte), a third body that would take
/// the sum past 2048 bytes is refused at once with 503 `body_buffer_full` (before, nothing
/// bounded the sum: an HTTP/2 connection's 100 streams held 100 bodies), and the room comes
/// back as the held bodies go.
#[test]
fn buffered_bodies_share_one_budget_and_one_over_it_is_refused() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("body.test").start(&net);
    let px = body_swapping_proxy(
        &net,
        "  max_buffered_bytes: 2048\nmetrics:\n  listen: auto\n",
        r#"["body.test"]"#,
    );
    let held_bytes = || px.metric("iron_proxy_buffered_body_bytes", &[]);
    let stall = |name: &str, from: [u8; 4]| {
        let mut s = connect_from(from.into(), px.http_addr());
        let head = format!(
            "POST http://body.test/anything/{name} HTTP/1.1\r\nHost: body.test\r\n\
             Content-Length: 1000\r\n\r\n"
        );
        std::io::Write::write_all(&mut s, head.as_bytes()).expect("head");
        std::io::Write::write_all(&mut s, &[b'x'; 900]).expect("most of the body");
        s
    };
    let first = stall("first", [127, 0, 0, 2]);
    wait_until(Duration::from_secs(10), "the first body held", || {
        (held_bytes() == Some(900.0)).then_some(())
    });
    let second = stall("second", [127, 0, 0, 3]);
    wait_until(Duration::from_secs(10), "both bodies held", || {
        (held_bytes() == Some(1800.0)).then_some(())
    });

    let dir = paths::scratch_dir("bodies");
    let data = body_file(dir.path(), "third", "token=pk-body-placeholder&", 600);
    let r = plain(&px, "http://body.test/anything/third")
        .args(["--data-binary", &data])
        .run();
    assert_eq!(r.status, 503, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/third"));
    assert_eq!(rec.str("reason"), Some("body_buffer_full"), "{rec}");
    assert_eq!(rec.status_code(), Some(503), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("max_buffered_bytes")),
        "{rec}"
    );

    drop((first, second));
    wait_until(Duration::from_secs(10), "the held bodies let go", || {
        (held_bytes() == Some(0.0)).then_some(())
    });
    plain(&px, "http://body.test/anything/again")
        .args(["--data-binary", &data])
        .run()
        .expect_status(200);
}

/// The proxy's resident memory (`VmRSS`), in bytes.
fn resident_bytes(px: &ProxyProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", px.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Memory that held bodies whole goes back to the OS once the burst is over, with the proxy
/// quiet. mimalloc hands freed memory back only when a thread next allocates a page or
/// collects its heap; before the proxy's workers collected theirs every 2 s
/// (`alloc::purge_idle_memory`), a quiet proxy kept about 120 MB of four 50 MB uploads' memory
/// resident for good (141 MB of RSS 30 s after them, 20 MB before).
#[test]
fn memory_that_held_large_bodies_goes_back_to_the_os_after_the_burst() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("body.test").start(&net);
    let px = body_swapping_proxy_capped(&net, 32 << 20, "", r#"["body.test"]"#);
    let dir = paths::scratch_dir("bodies");
    let data = body_file(dir.path(), "burst", "token=pk-body-placeholder&", 30 << 20);
    let before = resident_bytes(&px);
    std::thread::scope(|s| {
        let posts: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    plain(&px, "http://body.test/status/204")
                        .args(["--data-binary", &data])
                        .run()
                        .expect_status(204);
                })
            })
            .collect();
        for p in posts {
            p.join().expect("a post's thread");
        }
    });
    audited(&px, "body.test", "/status/204", &allowed(204));
    // Back within a few seconds of the burst: within 24 MiB of where it started.
    let settled = wait_until(
        Duration::from_secs(20),
        "the burst's memory returned",
        || {
            let now = resident_bytes(&px);
            (now < before + (24 << 20)).then_some(now)
        },
    );
    assert!(
        settled < before + (24 << 20),
        "{settled} against {before} before"
    );
}
