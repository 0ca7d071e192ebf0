//! MITM through `https_listen`: curl over HTTP/1.1 and HTTP/2, Python requests through
//! `HTTPS_PROXY`, and SNI/Host agreement.

use super::*;

#[test]
fn curl_over_http1_and_http2_reaches_upstream_with_the_same_version() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    for (flag, tag, want) in [("--http1.1", "h1", "HTTP/1.1"), ("--http2", "h2", "HTTP/2")] {
        let path = format!("/anything/{tag}");
        let r = Curl::get(&up.url(&path)).args([flag]).via(&px).run();
        let echo = r.expect_status(200).json();
        assert_eq!(echo["sni"], "httpbin.test", "{r}");
        let seen = up.wait_for_request(|q| q.path() == path);
        assert_eq!(
            seen.http_version(),
            want,
            "curl {flag}: the upstream should see the client's HTTP version: {seen}"
        );
        let rec = px.wait_for_audit(|a| a.path() == Some(path.as_str()));
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(rec.str("mode"), Some("https"), "{rec}");
        assert_eq!(rec.str("sni"), Some("httpbin.test"), "{rec}");
        assert_eq!(rec.status_code(), Some(200), "{rec}");
    }
}

#[test]
fn a_client_offering_only_http_1_0_through_alpn_is_served() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    // curl --http1.0 offers ALPN "http/1.0" alone; refusing it
    // (no_application_protocol) would fail a client every server accepts.
    let r = Curl::get(&up.url("/anything/h10"))
        .args(["--http1.0"])
        .via(&px)
        .run();
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/h10");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/h10"));
    assert!(rec.is_allowed(), "{rec}");
}

#[test]
fn python_requests_through_https_proxy_is_intercepted_and_audited() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let script = r#"
import json, os, sys
os.environ["HTTPS_PROXY"] = sys.argv[1]
os.environ["REQUESTS_CA_BUNDLE"] = sys.argv[2]
import requests
r = requests.get("https://httpbin.test/anything/py?x=1", headers={"X-From": "requests"}, timeout=20)
print(json.dumps({"status": r.status_code, "echo": r.json()}))
"#;
    let proxy = format!("http://{}", hostport(px.tunnel_addr()));
    let out = python(script, [proxy.as_str(), px.ca()]);
    let v = out.assert_ok().json();
    assert_eq!(v["status"], 200, "{out}");
    assert_eq!(v["echo"]["args"]["x"], "1", "{out}");
    let seen = up.wait_for_request(|q| q.path() == "/anything/py");
    assert_eq!(seen.header("x-from"), Some("requests"), "{seen}");

    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/py"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("tunnel"), "{rec}");
    assert_eq!(
        rec.pointer("/tunnel/kind"),
        Some(&"connect".into()),
        "{rec}"
    );
    assert_eq!(
        rec.pointer("/tunnel/target"),
        Some(&"httpbin.test:443".into()),
        "{rec}"
    );
}

#[test]
fn host_header_that_disagrees_with_sni_gets_421_and_never_reaches_upstream() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let other = Upstream::https("sse.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    for flag in ["--http1.1", "--http2"] {
        // SNI httpbin.test, Host (or :authority) sse.test: domain fronting.
        let r = Curl::get(&up.url("/anything/fronted"))
            .args([flag])
            .header("Host", "sse.test")
            .via(&px)
            .run();
        assert_eq!(r.status, 421, "curl {flag}:\n{r}");
    }
    // The second record may come after curl has exited.
    let recs = px.wait_for_audits(2, |a| a.path() == Some("/anything/fronted"));
    assert_eq!(
        recs.len(),
        2,
        "one record per refused request:\n{}",
        px.audit()
    );
    for rec in &recs {
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.str("reason"), Some("host_mismatch"), "{rec}");
        assert_eq!(rec.status_code(), Some(421), "{rec}");
        assert_eq!(rec.str("sni"), Some("httpbin.test"), "{rec}");
    }
    up.assert_untouched();
    other.assert_untouched();
}

#[test]
fn duration_covers_the_wait_for_the_upstream() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // The upstream sleeps 1 s before it sends its response headers.
    Curl::get(&up.url("/delay/1"))
        .via(&px)
        .run()
        .expect_status(200);
    let rec = px.wait_for_audit(|a| a.path() == Some("/delay/1"));
    assert!(
        rec.duration_ms().is_some_and(|d| d >= 1000),
        "duration_ms must include the upstream's 1 s: {rec}"
    );
}

#[test]
fn sequential_client_connections_share_one_warm_upstream_connection() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // Over HTTP/1.1 the held connection goes back to the idle pool; over HTTP/2 the
    // client connection's own HTTP/2 client goes to the spares (upstream/own_h2.rs).
    for (flag, tag) in [("--http1.1", "h1"), ("--http2", "h2")] {
        // Three curl processes, each its own client connection and TLS handshake.
        for n in 0..3 {
            let path = format!("/anything/reuse-{tag}-{n}");
            Curl::get(&up.url(&path))
                .args([flag])
                .via(&px)
                .run()
                .expect_status(200);
        }
        let ports: Vec<_> = (0..3)
            .map(|n| {
                let path = format!("/anything/reuse-{tag}-{n}");
                let q = up.wait_for_request(|q| q.path() == path);
                let want = if tag == "h2" { "HTTP/2" } else { "HTTP/1.1" };
                assert_eq!(q.http_version(), want, "curl {flag}");
                q.origin_port().expect("the upstream logs the source port")
            })
            .collect();
        assert!(
            ports.iter().all(|p| *p == ports[0]),
            "curl {flag}: each client connection's request should reuse the idle upstream \
             connection the previous one left; source ports: {ports:?}"
        );
    }
}

#[test]
fn python_ssl_resumes_its_tls_session_with_the_proxy() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // The stdlib's ssl module (OpenSSL), straight at https_listen: a second
    // connection offering the first one's session ticket is resumed.
    let script = r#"
import json, socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
def get(path, session=None):
    with socket.create_connection((host, port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="httpbin.test", session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: httpbin.test\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return s.session, s.session_reused, data.split(b"\r\n", 1)[0].decode()
first, reused1, status1 = get("/anything/full")
_, reused2, status2 = get("/anything/resumed", first)
print(json.dumps({"reused": [reused1, reused2], "status": [status1, status2]}))
"#;
    let addr = px.https_addr();
    let out = python(
        script,
        [
            addr.ip().to_string(),
            addr.port().to_string(),
            px.ca().to_string(),
        ],
    );
    let v = out.assert_ok().json();
    assert_eq!(v["reused"], serde_json::json!([false, true]), "{out}");
    assert_eq!(
        v["status"],
        serde_json::json!(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]),
        "{out}"
    );
    up.wait_for_request(|q| q.path() == "/anything/resumed");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/resumed"));
    assert!(rec.is_allowed(), "{rec}");
}
