//! HTTP hygiene on `proxy.http_listen`: absolute-form requests, the upstream
//! port taken from Host, hop-by-hop headers (and the client's proxy
//! credentials) never forwarded, header-name case kept on HTTP/1.1, dot
//! segments refused, encoded slashes passed through untouched.

use iron_proxy_tests::*;

use super::{allowed, audited, audited_path, failed, plain, refused};

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["*.hyg.test"]
"#;

/// `curl -x http://<http_listen> URL`: an absolute-form request to the plain listener.
fn absolute(px: &ProxyProcess, url: &str) -> Curl {
    Curl::new([
        "-x".to_string(),
        format!("http://{}", px.http_addr()),
        url.to_string(),
    ])
}

#[test]
fn absolute_form_and_host_ports_route_to_the_named_upstream() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("abs.hyg.test").start(&net);
    let ported = Upstream::http("ported.hyg.test")
        .plain_port(8080)
        .start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let r = absolute(&px, "http://abs.hyg.test/anything/abs?q=1").run();
    r.expect_status(200);
    let seen = up.wait_for_request(|q| q.path() == "/anything/abs");
    assert_eq!(seen.host(), "abs.hyg.test", "{seen}");
    assert_eq!(seen.0["args"]["q"], "1", "the query is forwarded: {seen}");
    let rec = audited(&px, "abs.hyg.test", "/anything/abs", &allowed(200));
    assert_eq!(rec.str("mode"), Some("http"), "{rec}");

    // The port comes from Host (origin form) or from the URI (absolute form).
    plain(&px, "http://ported.hyg.test:8080/anything/host-port")
        .run()
        .expect_status(200);
    let seen = ported.wait_for_request(|q| q.path() == "/anything/host-port");
    assert!(
        seen.0["listener"].as_str().unwrap_or("").ends_with(":8080"),
        "{seen}"
    );
    audited(&px, "ported.hyg.test", "/anything/host-port", &allowed(200));
    absolute(&px, "http://ported.hyg.test:8080/anything/abs-port")
        .run()
        .expect_status(200);
    ported.wait_for_request(|q| q.path() == "/anything/abs-port");
    audited(&px, "ported.hyg.test", "/anything/abs-port", &allowed(200));

    // Nothing listens on the default port there: the port really was taken from Host.
    let r = plain(&px, "http://ported.hyg.test/anything/default-port").run();
    assert_eq!(r.status, 502, "{r}");
    audited(
        &px,
        "ported.hyg.test",
        "/anything/default-port",
        &failed(502, "connect_failed"),
    );
}

#[test]
fn absolute_form_host_header_cannot_front_another_name() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("front.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let r = absolute(&px, "http://front.hyg.test/anything/fronted")
        .header("Host", "evil.example")
        .run();
    assert_eq!(r.status, 421, "{r}");
    audited(
        &px,
        "front.hyg.test",
        "/anything/fronted",
        &refused(421, "host_mismatch"),
    );
    up.assert_no_request(|q| q.host() == "evil.example");
}

#[test]
fn connect_on_the_plain_listener_is_refused_with_405() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("tunnel.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    // An HTTPS URL through an http:// proxy makes curl send CONNECT.
    let r = absolute(&px, "https://tunnel.hyg.test/get").run();
    assert!(r.stderr.contains("405"), "{r}");
    let rec = px.wait_for_audit(|a| a.method() == Some("CONNECT"));
    assert_eq!(rec.host(), Some("tunnel.hyg.test"), "{rec}");
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.status_code(), Some(405), "{rec}");
    assert_eq!(rec.str("reason"), Some("connect_not_supported"), "{rec}");
    assert_eq!(rec.str("level"), Some("WARN"), "{rec}");
    assert_eq!(rec.rejected_by(), None, "{rec}");
    up.assert_untouched();
}

#[test]
fn hop_by_hop_headers_and_proxy_credentials_are_not_forwarded() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("hop.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let hop = |curl: Curl| {
        curl.header("Connection", "keep-alive, X-Hop-Named")
            .header("X-Hop-Named", "1")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("TE", "gzip")
            .header("Trailer", "X-Checksum")
            .header("X-End-To-End", "kept")
            .header("X-MiXeD-CaSe", "kept")
    };
    hop(plain(&px, "http://hop.hyg.test/anything/origin-form"))
        .header("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA==")
        .run()
        .expect_status(200);
    // curl sends Proxy-Authorization itself for -U on an absolute-form request.
    hop(absolute(&px, "http://hop.hyg.test/anything/absolute-form"))
        .args(["-U", "user:proxy-password"])
        .run()
        .expect_status(200);

    for path in ["/anything/origin-form", "/anything/absolute-form"] {
        let seen = up.wait_for_request(|q| q.path() == path);
        for h in [
            "connection",
            "x-hop-named",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
        ] {
            assert_eq!(seen.header(h), None, "{h} reached the upstream: {seen}");
        }
        assert_eq!(seen.header("x-end-to-end"), Some("kept"), "{seen}");
        // Trailer is end-to-end (RFC 9110 §6.6.2).
        assert_eq!(seen.header("trailer"), Some("X-Checksum"), "{seen}");
        let names: Vec<&str> = seen.headers().into_iter().map(|(k, _)| k).collect();
        assert!(
            names.contains(&"X-MiXeD-CaSe"),
            "header-name case is kept on HTTP/1.1, got {names:?}"
        );
        audited(&px, "hop.hyg.test", path, &allowed(200));
    }
}

#[test]
fn hop_by_hop_response_headers_are_not_returned() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("rsp.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let path =
        "/response-headers?Connection=X-Up-Hop&X-Up-Hop=1&Proxy-Authenticate=Basic&X-Up-Kept=1";
    let r = plain(&px, &format!("http://rsp.hyg.test{path}")).run();
    r.expect_status(200);
    for h in ["x-up-hop", "proxy-authenticate"] {
        assert_eq!(r.header(h), None, "{h} reached the client: {r}");
    }
    assert_eq!(r.header("x-up-kept"), Some("1"), "{r}");
    audited(&px, "rsp.hyg.test", "/response-headers", &allowed(200));
}

#[test]
fn response_trailers_reach_an_http1_client() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("trl.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    // curl passes trailers to its header dump, after the headers.
    let r = plain(&px, "http://trl.hyg.test/trailers")
        .header("TE", "trailers")
        .run();
    r.expect_status(200);
    assert_eq!(r.header("trailer"), Some("X-Trailer-Check"), "{r}");
    assert_eq!(r.header("x-trailer-check"), Some("done"), "{r}");
    audited(&px, "trl.hyg.test", "/trailers", &allowed(200));
}

/// Sends `bytes` to `http_listen` as they are and returns the first response head.
fn raw_head(px: &ProxyProcess, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(px.http_addr()).expect("connecting to the proxy");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(bytes).expect("writing to the proxy");
    iron_proxy_tests::timed_read::read_head(&mut s, "raw request")
}

#[test]
fn a_request_names_one_valid_host_or_is_refused() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("one.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    for (path, host_lines, what) in [
        // Policy would read the first and an upstream (a CDN front) the last.
        (
            "/dup",
            "Host: one.hyg.test\r\nHost: evil.example\r\n",
            "more than one Host",
        ),
        (
            "/dup-same",
            "Host: one.hyg.test\r\nHost: one.hyg.test\r\n",
            "more than one Host",
        ),
        (
            "/userinfo",
            "Host: eve:EvePW@one.hyg.test\r\n",
            "not a valid host",
        ),
        (
            "/port-range",
            "Host: one.hyg.test:99999\r\n",
            "not a valid host",
        ),
        (
            "/port-sign",
            "Host: one.hyg.test:+80\r\n",
            "not a valid host",
        ),
        // An empty label: the upstream's virtual hosts may not read it as one.hyg.test.
        (
            "/empty-label",
            "Host: one.hyg.test..\r\n",
            "not a valid host",
        ),
    ] {
        let head = raw_head(
            &px,
            format!("GET {path} HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n").as_bytes(),
        );
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
        let rec = audited_path(&px, path, &refused(400, "invalid_host"));
        assert!(
            rec.str("error").is_some_and(|e| e.contains(what)),
            "{path}: {rec}"
        );
        // Userinfo may be a credential: the record quotes the host without it.
        assert!(!rec.to_string().contains("EvePW"), "{path}: {rec}");
    }
    // Absolute form with userinfo: the same.
    let head = raw_head(
        &px,
        b"GET http://eve:EvePW@one.hyg.test/abs-userinfo HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let rec = audited_path(&px, "/abs-userinfo", &refused(400, "invalid_host"));
    assert!(!rec.to_string().contains("EvePW"), "{rec}");
    up.assert_untouched();
}

#[test]
fn a_request_target_has_the_form_its_method_allows() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("form.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();
    let host = "Host: form.hyg.test\r\nConnection: close\r\n\r\n";

    for (line, says) in [
        // Asterisk form is for OPTIONS, authority form for CONNECT.
        ("GET * HTTP/1.1", "asterisk"),
        ("GET form.hyg.test:80 HTTP/1.1", "authority form"),
        ("GET index.html HTTP/1.1", "authority form"),
        // A scheme other than http(s) would be served as plain HTTP.
        ("GET ftp://form.hyg.test/file HTTP/1.1", "\"ftp\""),
        ("GET ws://form.hyg.test/chat HTTP/1.1", "\"ws\""),
    ] {
        let head = raw_head(&px, format!("{line}\r\n{host}").as_bytes());
        assert!(head.starts_with("HTTP/1.1 400"), "{line}: {head}");
        let rec = px.wait_for_audit(|a| {
            a.str("reason") == Some("invalid_target")
                && a.str("error").is_some_and(|e| e.contains(says))
        });
        assert_eq!(rec.status_code(), Some(400), "{line}: {rec}");
        assert_eq!(rec.action(), Some("reject"), "{line}: {rec}");
    }

    // A method token as long as the head allows is refused, and its record
    // holds only the start of it.
    let long = "X".repeat(5000);
    let head = raw_head(&px, format!("{long} /long HTTP/1.1\r\n{host}").as_bytes());
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");
    let rec = audited_path(&px, "/long", &refused(501, "method_too_long"));
    assert_eq!(rec.method(), Some(&long[..32]), "{rec}");
    up.assert_untouched();

    // What stays allowed: OPTIONS * and a registered method of 17 bytes.
    for (line, method, path) in [
        ("OPTIONS * HTTP/1.1", "OPTIONS", "*"),
        (
            "UPDATEREDIRECTREF /ref HTTP/1.1",
            "UPDATEREDIRECTREF",
            "/ref",
        ),
    ] {
        let head = raw_head(&px, format!("{line}\r\n{host}").as_bytes());
        assert!(
            head.contains("x-fake-upstream: form.hyg.test"),
            "{line}: {head}"
        );
        up.wait_for_request(|q| q.method() == method && q.path() == path);
        let rec = px.wait_for_audit(|a| a.path() == Some(path) && a.method() == Some(method));
        assert_eq!(rec.action(), Some("allow"), "{rec}");
    }
}

#[test]
fn a_refusal_does_not_invite_an_expected_upload() {
    require_root!();
    let net = FakeInternet::new();
    let px = Proxy::with(CONFIG).resolver(&net).start();

    // The client waits for 100 Continue before sending 2 MB: the refusal comes
    // first and alone.
    let head = raw_head(
        &px,
        b"POST /upload HTTP/1.1\r\nHost: denied.example\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    audited(&px, "denied.example", "/upload", &super::NOT_ALLOWLISTED);
}

#[test]
fn dot_segments_are_refused_and_encoded_slashes_kept() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("paths.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    for path in [
        "/anything/../get",
        "/anything/./get",
        "/anything/%2e%2E/get",
        "/anything/.%2e/get",
        // Separators and path parameters other servers read (QA E).
        "/anything/..%2Fget",
        "/anything/..;/get",
        "/anything/..%5cget",
        // Encoded twice, or as overlong UTF-8: servers that decode twice or leniently
        // (the credential audit's finding 7).
        "/anything/%252e%252e/get",
        "/anything/%c0%ae%c0%ae/get",
        "/anything/..%252fget",
        "/anything/..%c0%afget",
        // Encoded twice in the other spellings a double decode reads (session 47's review).
        "/anything/%25%32%65%25%32%65/get",
        "/anything/%252%65%252%65/get",
        "/anything/..%25%32%66get",
    ] {
        let r = plain(&px, &format!("http://paths.hyg.test{path}"))
            .args(["--path-as-is"])
            .run();
        assert_eq!(r.status, 400, "{path}: {r}");
        audited(&px, "paths.hyg.test", path, &refused(400, "invalid_path"));
        let r = Curl::get(&format!("https://paths.hyg.test{path}"))
            .args(["--path-as-is"])
            .via(&px)
            .run();
        assert_eq!(r.status, 400, "{path} over MITM: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path) && a.str("mode") == Some("https"));
        assert_eq!(rec.str("reason"), Some("invalid_path"), "{rec}");
        assert_eq!(rec.status_code(), Some(400), "{rec}");
    }
    // No Host header at all (HTTP/1.1 origin form).
    let r = plain(&px, "http://paths.hyg.test/anything/no-host")
        .header("Host", "")
        .run();
    assert_eq!(r.status, 400, "{r}");
    audited_path(&px, "/anything/no-host", &refused(400, "missing_host"));
    up.assert_untouched();

    for (curl, path) in [
        (
            plain(&px, "http://paths.hyg.test/anything/a%2Fb"),
            "/anything/a%2Fb",
        ),
        (
            Curl::get("https://paths.hyg.test/anything/c%2fd").via(&px),
            "/anything/c%2fd",
        ),
    ] {
        curl.run().expect_status(200);
        up.wait_for_request(|q| q.path() == path);
        audited(&px, "paths.hyg.test", path, &allowed(200));
    }
}

#[test]
fn a_transfer_coding_other_than_chunked_is_refused_501() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("te.hyg.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();
    // gzip under chunked: hyper undoes the chunking only, so the body would go on still
    // gzip-coded and without a header saying so.
    let head = raw_head(
        &px,
        b"POST http://te.hyg.test/anything/te HTTP/1.1\r\nHost: te.hyg.test\r\n\
          Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");
    audited(
        &px,
        "te.hyg.test",
        "/anything/te",
        &refused(501, "unsupported_transfer_coding"),
    );
    up.assert_untouched();
}
