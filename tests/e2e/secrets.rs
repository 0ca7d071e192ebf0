//! Static secrets through the real binary and MITM: the quickstart's five requests, inject
//! formatters and wire casing, every replace location, `require`, fail-closed on a secret that
//! cannot be resolved, AWS Secrets Manager / Parameter Store sources against moto, and
//! `hmac_sign` verified by Python's own HMAC.
//!
//! Each test ends with a leak scan: the proxy's whole output (logs and audit) holds none of
//! the real values, although the upstream saw them.

mod aws;
mod aws_auth;
mod aws_stream;
mod backend_dns;
mod gcp;
mod hmac;
mod inject;
mod minted_scrub;
mod oauth;
mod reflected_body;
mod reflected_head;
mod replace;
mod reread;
mod schemes;
mod signed_scrub;

use iron_proxy_tests::*;
use serde_json::{json, Value};

const OPENAI: &str = "sk-real-openai-key-do-not-share";
const INTERNAL: &str = "real-internal-secret-value";

/// The quickstart's `proxy.yaml`, on the fake internet's names (`httpbin.test`), plus
/// `match_query: true` on the OpenAI entry for the query-parameter request.
const QUICKSTART: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: OPENAI_API_KEY}
          replace:
            proxy_value: "proxy-openai-abc123"
            match_headers: ["Authorization"]
            match_body: false
            match_query: true
          rules:
            - host: "httpbin.test"
        - source: {type: env, var: INTERNAL_TOKEN}
          replace:
            proxy_value: "proxy-internal-tok"
            match_headers: []
            match_body: false
          rules:
            - host: "httpbin.test"
log:
  level: "info"
"#;

/// Panics if any line the proxy wrote contains one of `values`.
pub(crate) fn assert_no_leak(px: &ProxyProcess, values: &[&str]) {
    let logs = px.logs();
    assert!(!logs.is_empty(), "the proxy wrote nothing at all");
    for v in values {
        if let Some(line) = logs.iter().find(|l| l.contains(v)) {
            panic!("the proxy's output leaks a secret value ({v:?}):\n{line}");
        }
    }
}

/// The `secrets` trace entry's annotation `key` of the audit record for `path` whose
/// annotations mention `secret` (several requests share a path).
fn secrets_annotation(px: &ProxyProcess, path: &str, secret: &str, key: &str) -> Value {
    let rec = px.wait_for_audit(|a| {
        a.path() == Some(path)
            && a.annotations("secrets")
                .is_some_and(|m| Value::Object(m.clone()).to_string().contains(secret))
    });
    assert!(rec.is_allowed(), "{rec}");
    rec.annotation("secrets", key)
        .cloned()
        .unwrap_or_else(|| panic!("no secrets.{key} annotation in {rec}"))
}

#[test]
fn quickstart_five_requests() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let example = Upstream::https("example.test").start(&net);
    let px = Proxy::with(QUICKSTART)
        .resolver(&net)
        .env("OPENAI_API_KEY", OPENAI)
        .env("INTERNAL_TOKEN", INTERNAL)
        // Every crate at TRACE (hyper, h2, rustls too): the leak scan at the end covers it all.
        .env("IRON_LOG_FILTER", "trace")
        .start();

    // 1. Allowed.
    Curl::get("https://httpbin.test/get")
        .via(&px)
        .run()
        .expect_status(200);
    up.wait_for_request(|r| r.path() == "/get");

    // 2. Blocked.
    let r = Curl::get("https://example.test/").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.host() == Some("example.test"));
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    example.assert_untouched();

    // 3. Swap in Authorization.
    let echo = Curl::get("https://httpbin.test/headers")
        .header("Authorization", "Bearer proxy-openai-abc123")
        .via(&px)
        .run()
        .expect_status(200)
        .json();
    let seen =
        up.wait_for_request(|r| r.path() == "/headers" && r.header("authorization").is_some());
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {OPENAI}").as_str()),
        "{seen}"
    );
    // httpbin echoes the request's headers: the workload gets the key masked (same length).
    assert!(
        !echo.to_string().contains(OPENAI),
        "the echo leaks the key: {echo}"
    );
    assert_eq!(
        echo["headers"]["authorization"],
        json!(format!(
            "Bearer [redacted]{}",
            "*".repeat(OPENAI.len() - 10)
        )),
        "{echo}"
    );
    assert_eq!(
        secrets_annotation(&px, "/headers", "OPENAI_API_KEY", "swapped"),
        json!([{"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]}])
    );

    // 4. Swap in a custom header (empty match_headers scans all headers).
    Curl::get("https://httpbin.test/headers")
        .header("X-Internal", "proxy-internal-tok")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/headers" && r.header("x-internal").is_some());
    assert_eq!(seen.header("x-internal"), Some(INTERNAL), "{seen}");
    assert_eq!(
        secrets_annotation(&px, "/headers", "INTERNAL_TOKEN", "swapped"),
        json!([{"secret": "INTERNAL_TOKEN", "locations": ["header:X-Internal"]}])
    );

    // 5. Swap in a query parameter; the other parameter is untouched.
    Curl::get("https://httpbin.test/get?token=proxy-openai-abc123&q=hello")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/get" && r.0["args"].get("token").is_some());
    assert_eq!(
        seen.0["args"],
        json!({"token": OPENAI, "q": "hello"}),
        "{seen}"
    );
    assert_eq!(
        secrets_annotation(&px, "/get", "OPENAI_API_KEY", "swapped"),
        json!([{"secret": "OPENAI_API_KEY", "locations": ["query:token"]}])
    );

    // No request carried a placeholder upstream.
    up.assert_no_request(|r| r.0.to_string().contains("proxy-openai-abc123"));
    up.assert_no_request(|r| r.0.to_string().contains("proxy-internal-tok"));
    assert!(
        px.log_lines().iter().any(|l| l.level() == "trace"),
        "IRON_LOG_FILTER=trace took effect"
    );
    assert_no_leak(&px, &[OPENAI, INTERNAL]);
}

/// Standard base64, as the `base64` formatter helper and `Authorization: Basic` use.
pub(crate) fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
