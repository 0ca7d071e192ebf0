//! `hmac_sign` through the real binary: curl's request arrives signed, and Python's own
//! `hmac` module (not ours) verifies the signature from what the upstream received; the
//! body-integrity refusals reach the client and the audit log; nothing secret is logged.

use iron_proxy_tests::*;
use serde_json::json;

use super::{assert_no_leak, b64};

const KEY: &str = "e2e-hmac-signing-key";
const API_KEY: &str = "ak-e2e-0042";

const CONFIG: &str = r#"
proxy:
  max_request_body_bytes: 1024
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: hmac_sign
    config:
      timestamp:
        format: unix_millis
      signature:
        algorithm: sha256
        key_encoding: base64
        output_encoding: base64
        message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}"
      credentials:
        key: {type: env, var: API_KEY}
        secret: {type: env, var: API_SECRET}
      headers:
        - {name: "X-Api-Key", value: "{{.Credentials.key}}"}
        - {name: "X-Signature", value: "{{.Signature}}"}
        - {name: "X-Timestamp", value: "{{.Timestamp}}"}
      rules:
        - host: "httpbin.test"
          paths: ["/anything/signed"]
log:
  level: "debug"
"#;

/// HMAC-SHA256 of `message` under the base64 key `key_b64`, base64, by Python's stdlib.
fn python_hmac(key_b64: &str, message: &str) -> String {
    let script = "import base64, hashlib, hmac, json, sys\n\
                  key = base64.b64decode(sys.argv[1])\n\
                  tag = hmac.new(key, sys.argv[2].encode(), hashlib.sha256).digest()\n\
                  print(json.dumps(base64.b64encode(tag).decode()))";
    let r = python(script, [key_b64, message]);
    r.assert_ok();
    r.json().as_str().expect("a string").to_string()
}

#[test]
fn hmac_sign_signs_what_an_independent_hmac_verifies() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let key_b64 = b64(KEY);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("API_KEY", API_KEY)
        .env("API_SECRET", &key_b64)
        .start();

    // A signed POST; the workload's own X-Signature is replaced.
    let body = r#"{"order":{"size":"0.1","side":"buy"}}"#;
    Curl::get("https://httpbin.test/anything/signed?symbol=BTC-USD")
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .header("X-Signature", "forged-by-the-workload")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/signed");
    assert_eq!(
        seen.body(),
        body,
        "the body reached the upstream unchanged: {seen}"
    );
    let sigs: Vec<_> = seen
        .headers()
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-signature"))
        .collect();
    assert_eq!(sigs.len(), 1, "one X-Signature upstream: {seen}");
    let ts = seen.header("x-timestamp").expect("X-Timestamp").to_string();
    assert_eq!(ts.len(), 13, "unix millis: {ts}");
    let message = format!("{ts}POST/anything/signed?symbol=BTC-USD{body}");
    assert_eq!(sigs[0].1, python_hmac(&key_b64, &message), "{seen}");
    assert_eq!(seen.header("x-api-key"), Some(API_KEY), "{seen}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/signed") && a.is_allowed());
    assert_eq!(
        rec.annotation("hmac_sign", "injected"),
        Some(&json!([
            "header:X-Api-Key",
            "header:X-Signature",
            "header:X-Timestamp"
        ])),
        "{rec}"
    );
    let signature = sigs[0].1.to_string();

    // Outside the rules: not signed.
    Curl::get("https://httpbin.test/anything/plain")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/plain");
    assert_eq!(seen.header("x-signature"), None, "{seen}");

    // A chunked body cannot be proven complete: 400, and the upstream never sees it.
    let r = Curl::get("https://httpbin.test/anything/signed?chunked=1")
        .args([
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "abc",
        ])
        .via(&px)
        .run();
    assert_eq!(r.status, 400, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/signed") && !a.is_allowed());
    assert_eq!(rec.str("reason"), Some("chunked_body_not_allowed"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("hmac_sign"), "{rec}");

    // A body over proxy.max_request_body_bytes would be signed truncated: 413 body_truncated.
    let big = "x".repeat(2000);
    let r = Curl::get("https://httpbin.test/anything/signed?big=1")
        .args(["-X", "POST", "--data-binary", &big])
        .via(&px)
        .run();
    assert_eq!(r.status, 413, "{r}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("body_truncated"));
    assert_eq!(rec.rejected_by(), Some("hmac_sign"), "{rec}");
    assert_eq!(rec.status_code(), Some(413), "{rec}");
    up.assert_no_request(|r| {
        r.0.to_string().contains("chunked=1") || r.0.to_string().contains("big=1")
    });

    assert_no_leak(&px, &[KEY, &key_b64, API_KEY, &signature]);
}
