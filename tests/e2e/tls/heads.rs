//! Large heads that are not malformed: a request or response with many header fields (150,
//! past hyper's default of 100), and HTTP/2 header lists past hyper's default of 16 KiB, go
//! through; only a head over the byte limit (128 KiB) is refused (see `malformed.rs`, which
//! checks the 431 and its audit record). Real clients: curl over HTTP/1.1 and HTTP/2, Python
//! requests through CONNECT; the fake upstream echoes what arrived.

use super::*;

/// How many fields: past hyper's default limit of 100.
const FIELDS: usize = 150;

/// `-H` options for [`FIELDS`] fields `X-Many-<i>` whose values are `len` bytes.
fn many_headers(len: usize) -> Vec<String> {
    (0..FIELDS)
        .flat_map(|i| ["-H".to_string(), format!("X-Many-{i}: {}", "v".repeat(len))])
        .collect()
}

/// How many of the upstream's received fields are `X-Many-*`.
fn many_seen(up: &UpstreamHandle, path: &str) -> usize {
    let seen = up.wait_for_request(|q| q.path() == path);
    seen.headers()
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-many-"))
        .count()
}

#[test]
fn requests_with_many_header_fields_reach_the_upstream_whole() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // HTTP/1.1: 150 short fields (a 4 KiB head).
    let r = Curl::get("https://httpbin.test/anything/many-h1")
        .args(["--http1.1"])
        .args(many_headers(8))
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(many_seen(&up, "/anything/many-h1"), FIELDS);
    // HTTP/2: 150 fields of 200 bytes, a header list of about 35 KiB.
    let r = Curl::get("https://httpbin.test/anything/many-h2")
        .args(["--http2"])
        .args(many_headers(200))
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(many_seen(&up, "/anything/many-h2"), FIELDS);
    // The same on plain HTTP/1.1 through the HTTP listener, with 150 fields of 600 bytes
    // (a 90 KiB head: under the byte limit).
    let r = Curl::get("http://httpbin.test/anything/many-plain")
        .args(many_headers(600))
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(many_seen(&up, "/anything/many-plain"), FIELDS);
    for path in [
        "/anything/many-h1",
        "/anything/many-h2",
        "/anything/many-plain",
    ] {
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert!(rec.is_allowed(), "{path}: {rec}");
        assert_eq!(rec.status_code(), Some(200), "{path}: {rec}");
    }
}

#[test]
fn python_requests_with_many_header_fields_go_through_connect() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let script = r#"
import json, os, sys
os.environ["HTTPS_PROXY"] = sys.argv[1]
os.environ["REQUESTS_CA_BUNDLE"] = sys.argv[2]
import requests
headers = {"X-Many-%d" % i: "v" * 40 for i in range(int(sys.argv[3]))}
r = requests.get("https://httpbin.test/anything/many-py", headers=headers, timeout=20)
many = [k for k in r.json()["headers"] if k.lower().startswith("x-many-")]
print(json.dumps({"status": r.status_code, "many": len(many)}))
"#;
    let proxy = format!("http://{}", hostport(px.tunnel_addr()));
    let out = python(
        script,
        [proxy.as_str(), px.ca(), FIELDS.to_string().as_str()],
    );
    let v = out.assert_ok().json();
    assert_eq!(v["status"], 200, "{out}");
    assert_eq!(v["many"], FIELDS, "{out}");
    assert_eq!(many_seen(&up, "/anything/many-py"), FIELDS);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/many-py"));
    assert!(rec.is_allowed(), "{rec}");
}

/// The upstream's answer with 150 fields reaches the client, over an HTTP/1.1 upstream
/// connection (hyper's client refused more than 100 fields: 502) and over an HTTP/2 one (a
/// header list of about 35 KiB: hyper's client took 16 KiB).
#[test]
fn responses_with_many_header_fields_reach_the_client_whole() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");
    for (version, len) in [("--http1.1", 8), ("--http2", 200)] {
        let path = format!("/many-headers?count={FIELDS}&len={len}");
        let r = Curl::get(&format!("https://httpbin.test{path}"))
            .args([version])
            .via(&px)
            .run();
        assert_eq!(r.status, 200, "{version}: {r}");
        let many = r
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-many-"))
            .count();
        assert_eq!(many, FIELDS, "{version}: {r}");
    }
}

/// An upstream HTTP/1.1 answer whose head is over the byte limit (128 KiB, as for request
/// heads; hyper's client took about 408 KiB) is a 502 `upstream_error` whose `error` says the
/// head was too large; one just under the limit goes through. Both the plain listener (the
/// held HTTP/1 client) and MITM'd TLS.
#[test]
fn an_upstream_http1_head_over_the_byte_limit_is_a_502() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");
    // 100 fields of 1,000 bytes: about 100 KiB, under the limit.
    let r = Curl::get("https://httpbin.test/many-headers?count=100&len=1000")
        .args(["--http1.1"])
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    // 200 fields of 1,000 bytes: about 200 KiB, over it (and under hyper's default).
    for scheme in ["https", "http"] {
        let r = Curl::get(&format!(
            "{scheme}://httpbin.test/many-headers?count=200&len=1000"
        ))
        .args(["--http1.1"])
        .via(&px)
        .run();
        assert_eq!(r.status, 502, "{scheme}: {r}");
        let rec = px.wait_for_audit(|a| {
            a.path() == Some("/many-headers")
                && a.str("mode") == Some(scheme)
                && a.status_code() == Some(502)
        });
        assert_eq!(rec.str("reason"), Some("upstream_error"), "{scheme}: {rec}");
        assert_eq!(rec.status_code(), Some(502), "{scheme}: {rec}");
        let error = rec.str("error").unwrap_or_default();
        assert!(error.contains("response head too large"), "{scheme}: {rec}");
    }
}
