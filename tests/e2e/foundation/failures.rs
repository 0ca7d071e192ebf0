//! Upstream failures map to one status and one audit reason each: a name that
//! does not resolve (502 `dns_failure`), an address where nothing listens
//! (502 `connect_failed`), an untrusted certificate (502 `upstream_tls_failed`)
//! and no response headers in time (504 `upstream_timeout`), a time that
//! starts when the request body has been sent: a slow upload is not cut off.
//! The 502 body names the host and the class of failure, never the addresses
//! the proxy resolved or tried (the audit record's `error` keeps those).

use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use iron_proxy_tests::*;

use super::{allowed, audited, audited_path, failed, plain, LoopbackServer, TRUNCATED};

#[test]
fn unreachable_upstreams_get_502_with_the_cause() {
    require_root!();
    let net = FakeInternet::new();
    let silent = net.add_host();
    net.dns().set("silent.test", &[IpAddr::V4(silent.v4)]);
    let badcert = Upstream::https("badcert.test").untrusted_cert().start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["*.test"]
"#,
    )
    .resolver(&net)
    .start();

    let r = plain(&px, "http://nxdomain.test/get").run();
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(
        r.body, "iron-proxy: nxdomain.test: name did not resolve\n",
        "{r}"
    );
    let rec = audited(&px, "nxdomain.test", "/get", &failed(502, "dns_failure"));
    assert_eq!(
        rec.str("error"),
        Some("resolving nxdomain.test: no such name (NXDOMAIN)"),
        "the record names the DNS outcome: {rec}"
    );
    assert!(net.dns().was_queried("nxdomain.test"));

    let r = plain(&px, "http://silent.test/get").run();
    assert_eq!(r.status, 502, "{r}");
    assert!(
        r.body
            .starts_with("iron-proxy: connecting to silent.test:80: connection "),
        "host and class: {r}"
    );
    assert_no_address(&r.body, &[silent.v4.into()]);
    let rec = audited(&px, "silent.test", "/get", &failed(502, "connect_failed"));
    assert!(
        rec.str("error")
            .unwrap_or_default()
            .contains(&silent.v4.to_string()),
        "the audit record keeps the address tried: {rec}"
    );

    let r = Curl::get("https://badcert.test/get").via(&px).run();
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(
        r.body, "iron-proxy: TLS handshake with badcert.test failed: certificate not trusted\n",
        "{r}"
    );
    assert_no_address(&r.body, &[badcert.ip().into()]);
    audited(
        &px,
        "badcert.test",
        "/get",
        &failed(502, "upstream_tls_failed"),
    );
    badcert.assert_untouched();
}

/// Panics if `body` holds any IP address, naming `known` ones first.
fn assert_no_address(body: &str, known: &[IpAddr]) {
    for ip in known {
        assert!(
            !body.contains(&ip.to_string()),
            "{ip} in the body: {body:?}"
        );
    }
    let found: Vec<IpAddr> = body
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .flat_map(|w| {
            let w = w.trim_end_matches('.');
            std::iter::once(w).chain(w.split(':'))
        })
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        found.is_empty(),
        "addresses {found:?} in the body: {body:?}"
    );
}

#[test]
fn slow_response_headers_get_504() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("slow.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  upstream_response_header_timeout: 1s
transforms:
  - name: allowlist
    config:
      domains: ["slow.test"]
"#,
    )
    .resolver(&net)
    .start();

    let r = plain(&px, "http://slow.test/delay/3").run();
    assert_eq!(r.status, 504, "{r}");
    audited(
        &px,
        "slow.test",
        "/delay/3",
        &failed(504, "upstream_timeout"),
    );
    up.wait_for_request(|q| q.path() == "/delay/3");

    let r = Curl::get("https://slow.test/delay/2").via(&px).run();
    assert_eq!(r.status, 504, "{r}");
    audited(
        &px,
        "slow.test",
        "/delay/2",
        &failed(504, "upstream_timeout"),
    );
}

#[test]
fn a_response_body_cut_short_is_an_error_in_the_audit() {
    require_root!();
    let net = FakeInternet::new();
    let local = LoopbackServer::answering(TRUNCATED);
    let px = loopback_proxy(&net, "short.test");

    // The head (200, 100 bytes promised) goes out; the body stops at 8.
    let r = plain(&px, &format!("http://short.test:{}/short", local.port)).run();
    assert_eq!(r.status, 200, "{r}");
    assert_ne!(r.exit, 0, "curl reports the short body: {r}");
    let rec = audited(
        &px,
        "short.test",
        "/short",
        &failed(200, "upstream_body_error"),
    );
    // The cause, not just hyper's outer "error reading a body from connection".
    assert!(
        rec.str("error")
            .is_some_and(|e| e.starts_with("response body:")
                && e.contains("end of file before message length reached")),
        "{rec}"
    );
}

/// A proxy for `upload.test` whose header timeout (1 s) is far shorter
/// than the uploads below (about 3 s at curl's `--limit-rate 100K`).
fn upload_proxy(net: &FakeInternet) -> ProxyProcess {
    Proxy::with(
        r#"
proxy:
  upstream_response_header_timeout: 1s
transforms:
  - name: allowlist
    config:
      domains: ["upload.test"]
"#,
    )
    .resolver(net)
    .start()
}

/// Writes a `len`-byte body of distinct lines (a lost or reordered chunk
/// would show) to `dir` and returns it with its `--data-binary` argument.
fn distinct_body(dir: &std::path::Path, len: usize) -> (String, String) {
    let mut body: String = (0..len.div_ceil(8)).map(|i| format!("{i:07x}\n")).collect();
    body.truncate(len);
    let path = dir.join("upload");
    std::fs::write(&path, &body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    (body, format!("@{}", path.display()))
}

/// `curl` uploading `data` at 100 KiB/s, without `Expect: 100-continue`.
fn slow_upload(curl: Curl, data: &str) -> Curl {
    curl.args([
        "--data-binary",
        data,
        "--limit-rate",
        "100K",
        "-H",
        "Expect:",
        "-H",
        "content-type: text/plain",
    ])
}

#[test]
fn a_slow_upload_is_not_cut_off_by_the_header_timeout() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("upload.test").start(&net);
    let px = upload_proxy(&net);
    let dir = paths::scratch_dir("uploads");
    let (body, data) = distinct_body(dir.path(), 300_000);

    // HTTP/1 on http_listen (the held upstream connection), then HTTP/2
    // through the MITM listener (the pooled client, h2 upstream).
    for (url, version, curl) in [
        ("/post", "HTTP/1.1", plain(&px, "http://upload.test/post")),
        (
            "/anything/h2",
            "HTTP/2",
            Curl::get("https://upload.test/anything/h2").via(&px),
        ),
    ] {
        let started = std::time::Instant::now();
        let r = slow_upload(curl, &data).run();
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{url}: {r}");
        assert!(
            took >= std::time::Duration::from_secs(2),
            "{url}: the upload was not slow ({took:?}), so the test proves nothing"
        );
        let echo = r.json();
        assert_eq!(echo["body_len"], 300_000, "{url}: {}", echo["body_len"]);
        assert!(
            echo["data"] == body.as_str(),
            "{url}: the upstream got the body unchanged"
        );
        let seen = up.wait_for_request(|q| q.path() == url);
        assert_eq!(seen.0["body_len"], 300_000, "{seen}");
        assert_eq!(seen.http_version(), version, "{seen}");
        audited(&px, "upload.test", url, &allowed(200));
    }
}

#[test]
fn an_upstream_that_reads_the_whole_body_and_never_answers_gets_504() {
    require_root!();
    let net = FakeInternet::new();
    // Reads the whole body, then waits 5 s before its headers.
    let up = Upstream::https("upload.test").start(&net);
    let px = upload_proxy(&net);
    let dir = paths::scratch_dir("uploads");
    let (_, data) = distinct_body(dir.path(), 200_000);

    let started = std::time::Instant::now();
    let r = slow_upload(plain(&px, "http://upload.test/delay/5"), &data).run();
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r}");
    assert!(
        r.body.contains("no response headers within 1s"),
        "the answer says why: {r}"
    );
    // The 2 s upload, then the 1 s header timeout (not counted from the request's start);
    // the upstream would answer after its 5 s, at about 7 s (the bound leaves a loaded
    // machine its slack: the 504 itself says the timer fired).
    assert!(
        took >= std::time::Duration::from_millis(2500) && took < std::time::Duration::from_secs(6),
        "timed out after {took:?}"
    );
    let seen = up.wait_for_request(|q| q.path() == "/delay/5");
    assert_eq!(
        seen.0["body_len"], 200_000,
        "the whole body arrived: {seen}"
    );
    audited(
        &px,
        "upload.test",
        "/delay/5",
        &failed(504, "upstream_timeout"),
    );
}

/// Chunked framing with a Content-Length beside it, larger (100) or smaller (2) than the
/// body: the chunks frame it, and the length is not passed on to frame the decoded body.
const CHUNKED_WITH_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\
    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\nloopback\r\n0\r\n\r\n";
const CHUNKED_WITH_SHORT_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\nloopback\r\n0\r\n\r\n";

#[test]
fn a_chunked_response_with_a_content_length_reaches_the_client_whole() {
    require_root!();
    let net = FakeInternet::new();
    let long = LoopbackServer::answering(CHUNKED_WITH_LENGTH);
    let short = LoopbackServer::answering(CHUNKED_WITH_SHORT_LENGTH);
    let px = loopback_proxy(&net, "both.test");
    for (port, path) in [(long.port, "/long"), (short.port, "/short")] {
        let r = plain(&px, &format!("http://both.test:{port}{path}")).run();
        assert_eq!((r.status, r.exit), (200, 0), "{path}: {r}");
        assert_eq!(r.body, "loopback", "{path}: {r}");
        assert_ne!(r.header("content-length"), Some("100"), "{path}: {r}");
        assert_ne!(r.header("content-length"), Some("2"), "{path}: {r}");
    }
}

/// A chunked answer whose trailer section carries fields no trailer may (framing and
/// connection control, RFC 9110 §6.5.1) beside one that may.
const FORBIDDEN_TRAILERS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
    Transfer-Encoding: chunked\r\nTrailer: X-Trailer-Check\r\nConnection: close\r\n\r\n\
    8\r\nloopback\r\n0\r\nX-Trailer-Check: done\r\nContent-Length: 5\r\n\
    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// Trailers pass without the fields a trailer section may not carry: an HTTP/2 client got
/// a stream reset (a `content-length` or `connection` trailer is malformed in HTTP/2), and
/// the record of any answer with trailers said the client went away after its body
/// (hyper stops polling a body at its trailers).
#[test]
fn trailers_pass_without_forbidden_fields_and_end_the_record_cleanly() {
    require_root!();
    let net = FakeInternet::new();
    let up = LoopbackServer::answering(FORBIDDEN_TRAILERS);
    let px = loopback_proxy(&net, "trailers.test");
    for (version, path) in [("--http1.1", "/h1"), ("--http2-prior-knowledge", "/h2")] {
        let r = plain(&px, &format!("http://trailers.test:{}{path}", up.port))
            .header("TE", "trailers")
            .args([version])
            .run();
        assert_eq!((r.status, r.exit), (200, 0), "{version}: {r}");
        assert_eq!(r.body, "loopback", "{version}: {r}");
        assert_eq!(r.header("x-trailer-check"), Some("done"), "{version}: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.status_code(), Some(200), "{rec}");
        assert_eq!(rec.str("error"), None, "{version}: {rec}");
        assert_eq!(rec.pointer("/bytes_received"), None, "{version}: {rec}");
    }
}

/// An answer whose transfer coding is not chunked (`gzip`, read until close): only the
/// chunked framing is undone, so the client would get the coded bytes as the body, without
/// the header saying so. Refused 502 instead (was passed on re-chunked).
#[test]
fn an_answer_in_a_transfer_coding_other_than_chunked_is_refused() {
    require_root!();
    let net = FakeInternet::new();
    let up = LoopbackServer::answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n\x1f\x8b\x08\x00coded",
    );
    let px = loopback_proxy(&net, "coded.test");
    let r = plain(&px, &format!("http://coded.test:{}/coded", up.port)).run();
    assert_eq!(r.status, 502, "{r}");
    assert!(r.body.contains("\"gzip\""), "{r}");
    let rec = audited_path(&px, "/coded", &failed(502, "upstream_error"));
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("transfer coding")),
        "{rec}"
    );
}

/// A proxy with the deny list off whose allowlist admits `name`, which resolves to loopback,
/// where the raw [`LoopbackServer`]s listen.
fn loopback_proxy(net: &FakeInternet, name: &str) -> ProxyProcess {
    net.dns().set(name, &[IpAddr::from([127, 0, 0, 1])]);
    let config = format!(
        "proxy:\n  upstream_deny_cidrs: []\ntransforms:\n  - name: allowlist\n    config:\n      \
         domains: [\"{name}\"]\n"
    );
    Proxy::with(config.as_str()).resolver(net).start()
}

/// A request whose headers the proxy vouches for loses the client's trailers: beside an
/// injected credential (`X-Inj`), a client trailer `X-Inj` reached the upstream, which may
/// merge trailers into headers; past a `header_allowlist`, a trailer `Cookie` went through
/// that the allowlist strips as a header. A request of neither kind keeps its trailers.
#[test]
fn trailers_of_a_request_the_proxy_vouches_for_are_dropped() {
    require_root!();
    let net = FakeInternet::new();
    let up = LoopbackServer::answering_whole(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    net.dns()
        .set("trailers.test", &[IpAddr::from([127, 0, 0, 1])]);
    let px = Proxy::with(
        r#"
proxy:
  upstream_deny_cidrs: []
transforms:
  - name: allowlist
    config:
      domains: ["trailers.test"]
  - name: header_allowlist
    config:
      headers: ["Content-Type", "Trailer", "TE", "X-Inj"]
      rules: [{host: "trailers.test", paths: ["/filtered"]}]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: INJ_SECRET}
          inject: {header: "X-Inj"}
          rules: [{host: "trailers.test", paths: ["/inj"]}]
"#,
    )
    .env("INJ_SECRET", "injected-value-42")
    .resolver(&net)
    .start();
    let send = |path: &str| {
        let mut s = std::net::TcpStream::connect(px.http_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let req = format!(
            "POST http://trailers.test:{port}{path} HTTP/1.1\r\nHost: trailers.test:{port}\r\n\
             Transfer-Encoding: chunked\r\nTrailer: X-Inj, Cookie\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n0\r\nX-Inj: client-chosen\r\nCookie: session=abc\r\n\r\n",
            port = up.port
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        wait_until(Duration::from_secs(10), "the upstream's copy", || {
            up.heads().into_iter().find(|h| h.contains(path))
        })
    };
    for path in ["/inj", "/filtered"] {
        let got = send(path);
        assert!(got.contains("hello"), "{path}: the body arrives: {got}");
        assert!(
            !got.contains("client-chosen") && !got.contains("session=abc"),
            "{path}: no client trailer: {got}"
        );
    }
    assert!(send("/inj")
        .to_ascii_lowercase()
        .contains("x-inj: injected-value-42"));
    let plain = send("/plain");
    assert!(
        plain.contains("client-chosen") && plain.contains("session=abc"),
        "a request of neither kind keeps its trailers: {plain}"
    );
}
