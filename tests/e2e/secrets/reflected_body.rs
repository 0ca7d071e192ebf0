//! A credential that `secrets` put in the request and the upstream wrote back in its response
//! body (here `/reflect`, which answers with the request's headers as JSON) reaches the
//! workload masked, whatever the body's framing: one piece with `Content-Length`, chunked with
//! the value cut across chunks, gzip-coded, JSON with `/` written `\/`, or inside an echoed
//! `Authorization: Basic` pair (base64); over HTTP/1.1 and
//! HTTP/2, with curl and Python requests. With `scrub_response_bodies: false` it comes through.

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;

/// 22 bytes, with a `/` (so that JSON writers that escape it give a second form).
const KEY: &str = "real-body-key/0042+xyz";

fn config(scrub: bool) -> String {
    format!(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: secrets
    config:
      scrub_response_bodies: {scrub}
      secrets:
        - source: {{type: env, var: BODY_KEY}}
          inject:
            header: "X-Api-Key"
          rules:
            - host: "echo.test"
        - source: {{type: env, var: BODY_KEY}}
          inject:
            header: "Authorization"
            formatter: 'Basic {{{{ base64 "x-access-token:" .Value }}}}'
          rules:
            - host: "echo.test"
              paths: ["/reflect/basic"]
"#
    )
}

/// The mask a match of `len` bytes becomes.
fn mask(len: usize) -> String {
    format!("[redacted]{}", "*".repeat(len - 10))
}

/// The `secrets` response trace entry's annotations of the record for `path`.
fn body_annotations(px: &ProxyProcess, path: &str) -> Value {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    assert!(rec.is_allowed(), "{rec}");
    rec.response_transforms()
        .iter()
        .find(|t| t["name"] == "secrets")
        .map(|t| t["annotations"].clone())
        .unwrap_or_else(|| panic!("no secrets response entry in {rec}"))
}

/// The client got the mask where the key was, never the key.
fn assert_masked(what: &str, body: &str, field: &str, len: usize) {
    assert!(
        !body.contains("real-body-key"),
        "{what}: the key came back: {body}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    // Names as the upstream got them: `X-Api-Key` over HTTP/1.1, lower case over HTTP/2.
    let got = v["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)))
        .map(|(_, v)| v.clone());
    assert_eq!(got, Some(json!(mask(len))), "{what}: {body}");
}

#[test]
fn a_credential_reflected_in_a_response_body_is_masked() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("echo.test").start(&net);
    let px = Proxy::with(config(true))
        .resolver(&net)
        .env("BODY_KEY", KEY)
        .start();
    // The record carries no query: each case has a path of its own.
    let get = |case: &str, query: &str, extra: &[&str]| {
        Curl::get(&format!("https://echo.test/reflect/{case}?{query}"))
            .args(extra.iter().copied())
            .via(&px)
            .run()
    };

    // One piece with Content-Length: the length holds.
    let r = get("plain", "", &["--http1.1"]);
    r.expect_status(200);
    assert_masked("identity", &r.body, "X-Api-Key", KEY.len());
    assert_eq!(
        r.header("content-length"),
        Some(r.body_bytes.len().to_string().as_str()),
        "{r}"
    );
    let seen = up.wait_for_request(|q| q.path() == "/reflect/plain");
    assert_eq!(
        seen.header("x-api-key"),
        Some(KEY),
        "the upstream got the real key"
    );

    // Chunked, 5 bytes a chunk: the key is cut across five chunks.
    let r = get("chunked", "chunk=5", &["--http1.1"]);
    r.expect_status(200);
    assert_masked("chunked", &r.body, "X-Api-Key", KEY.len());
    assert_eq!(r.header("content-length"), None, "{r}");

    // gzip-coded, cut in 7-byte chunks: decoded, scrubbed, sent as identity (curl is not
    // asked to decode: what it gets is the plain text).
    let r = get("gzip", "coding=gzip&chunk=7", &["--http1.1"]);
    r.expect_status(200);
    assert_masked("gzip", &r.body, "X-Api-Key", KEY.len());
    assert_eq!(r.header("content-encoding"), None, "{r}");

    // JSON with `/` written `\/`: the escaped form (one byte longer) is masked.
    let r = get("escaped", "escape_slash=1", &["--http1.1"]);
    r.expect_status(200);
    assert!(
        r.body.contains("\\/"),
        "the upstream escaped slashes: {}",
        r.body
    );
    assert_masked("escaped", &r.body, "X-Api-Key", KEY.len() + 1);

    // An `Authorization: Basic` pair echoed: its base64 is masked where it carries the key.
    let r = get("basic", "", &["--http1.1"]);
    r.expect_status(200);
    let pair = super::b64(&format!("x-access-token:{KEY}"));
    assert!(
        !r.body.contains(&pair[8..28]),
        "the pair came back: {}",
        r.body
    );
    let v: Value = serde_json::from_str(&r.body).expect("json");
    let auth = v["headers"]["Authorization"].as_str().unwrap_or_default();
    assert!(
        auth.starts_with("Basic ") && auth.contains("[redacted]"),
        "{}",
        r.body
    );
    assert_eq!(auth.len(), "Basic ".len() + pair.len(), "{}", r.body);

    // HTTP/2 to the client, chunked and gzip-coded upstream.
    let r = get("h2", "coding=gzip&chunk=3", &["--http2", "-v"]);
    r.expect_status(200);
    assert!(r.stderr.contains("HTTP/2 200"), "not HTTP/2: {}", r.stderr);
    assert_masked("h2", &r.body, "X-Api-Key", KEY.len());

    // Python requests through CONNECT, asking for gzip itself (it decodes what it gets).
    let script = r#"
import json, sys, requests
tunnel, ca = sys.argv[1], sys.argv[2]
r = requests.get('https://echo.test/reflect/requests?coding=gzip&chunk=4',
                 proxies={'https': tunnel}, verify=ca)
print(json.dumps({'status': r.status_code, 'body': r.text,
                  'encoding': r.headers.get('content-encoding')}))
"#;
    let out = python(
        script,
        [format!("http://{}", px.tunnel_addr()), px.ca().to_string()],
    );
    let got = out.assert_ok().json();
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["encoding"], Value::Null, "{got}");
    assert_masked(
        "requests",
        got["body"].as_str().unwrap_or(""),
        "X-Api-Key",
        KEY.len(),
    );

    // Each record counts its matches, and says when the body was decoded.
    for (case, found, decoded) in [
        ("plain", 1, None),
        ("chunked", 1, None),
        ("gzip", 1, Some(json!(["gzip"]))),
        ("escaped", 1, None),
        ("basic", 2, None),
        ("h2", 1, Some(json!(["gzip"]))),
        ("requests", 1, Some(json!(["gzip"]))),
    ] {
        let a = body_annotations(&px, &format!("/reflect/{case}"));
        assert_eq!(a["response_body_redacted"], json!(found), "{case}: {a}");
        assert_eq!(
            a.get("response_body_decoded").cloned(),
            decoded,
            "{case}: {a}"
        );
    }
    // And the metric counts every match (the records are written, so the counts are in).
    let m = Curl::get(&format!("http://{}/metrics", px.metrics_addr())).run();
    assert!(
        m.body
            .lines()
            .any(|l| l == "iron_proxy_response_body_redactions_total 8"),
        "{}",
        m.body
    );
    assert_no_leak(&px, &[KEY, "real-body-key"]);
}

/// A gzip body that turns out corrupt (a wrong CRC, found at its end) is cut as an error:
/// the client sees the transfer fail, the record says why; a HEAD of a coded answer keeps its
/// headers (nothing to scrub).
#[test]
fn a_body_that_cannot_be_decoded_is_cut_and_a_head_is_left_alone() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("echo.test").start(&net);
    let px = Proxy::with(config(true))
        .resolver(&net)
        .env("BODY_KEY", KEY)
        .start();
    let r = Curl::get("https://echo.test/reflect/corrupt?coding=gzip&corrupt=1&chunk=16")
        .args(["--http1.1"])
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    assert_ne!(r.exit, 0, "curl saw the body cut: {r}");
    assert!(!r.body.contains("real-body-key"), "{}", r.body);
    let rec = px.wait_for_audit(|a| a.path() == Some("/reflect/corrupt"));
    assert_eq!(
        rec.str("reason"),
        Some("response_body_undecodable"),
        "{rec}"
    );
    assert!(
        rec.0["error"]
            .as_str()
            .is_some_and(|e| e.contains("CRC-32")),
        "{rec}"
    );

    let r = Curl::get("https://echo.test/reflect/head?coding=gzip")
        .args(["--head"])
        .via(&px)
        .run();
    r.expect_status(200);
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/reflect/head"));
    assert!(rec.is_allowed() && rec.0.get("error").is_none(), "{rec}");
    assert_no_leak(&px, &[KEY, "real-body-key"]);
}

/// The switch: with `scrub_response_bodies: false` the reflected key comes back as the
/// upstream wrote it (the headers are still scrubbed).
#[test]
fn scrub_response_bodies_false_lets_the_body_through() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("echo.test").start(&net);
    let px = Proxy::with(config(false))
        .resolver(&net)
        .env("BODY_KEY", KEY)
        .start();
    let r = Curl::get("https://echo.test/reflect?coding=gzip")
        .args(["--compressed"])
        .via(&px)
        .run();
    r.expect_status(200);
    assert!(r.body.contains(KEY), "{}", r.body);
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/reflect"));
    assert!(
        !rec.0.to_string().contains("response_body_redacted"),
        "{rec}"
    );
}
