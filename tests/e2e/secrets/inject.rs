//! Inject mode: the `Bearer` and `base64` formatters, header casing on the wire, query
//! parameters, method and path scoping.

use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::{assert_no_leak, b64, OPENAI};

const GH_TOKEN: &str = "ghp_realGitHubToken123";
const API_KEY: &str = "real-api-key-0042";
const QUERY_KEY: &str = "real query/key&=";

/// Inject entries scoped by path, so one upstream serves every case.
const INJECT: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: OPENAI_API_KEY}
          inject:
            header: "Authorization"
            formatter: "Bearer {{ .Value }}"
          rules:
            - host: "httpbin.test"
              paths: ["/anything/bearer"]
        - source: {type: env, var: GITHUB_TOKEN}
          inject:
            header: "Authorization"
            formatter: 'Basic {{ base64 "x-access-token:" .Value }}'
          rules:
            - host: "httpbin.test"
              paths: ["/anything/basic"]
        - source: {type: env, var: VENDOR_KEY}
          inject:
            header: "X-Vendor-API-key"
          rules:
            - host: "httpbin.test"
              methods: ["POST"]
              paths: ["/anything/case"]
        - source: {type: env, var: QUERY_KEY}
          inject:
            query_param: "api_key"
          rules:
            - host: "httpbin.test"
              paths: ["/anything/query"]
log:
  level: "debug"
"#;

fn injected(px: &ProxyProcess, path: &str) -> Value {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    assert!(rec.is_allowed(), "{rec}");
    rec.annotation("secrets", "injected")
        .cloned()
        .unwrap_or_else(|| panic!("no secrets.injected annotation in {rec}"))
}

#[test]
fn inject_formatters_query_param_and_wire_casing() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(INJECT)
        .resolver(&net)
        .env("OPENAI_API_KEY", OPENAI)
        .env("GITHUB_TOKEN", GH_TOKEN)
        .env("VENDOR_KEY", API_KEY)
        .env("QUERY_KEY", QUERY_KEY)
        .start();

    // Bearer formatter; the workload's own Authorization is replaced, not kept alongside.
    Curl::get("https://httpbin.test/anything/bearer")
        .header("authorization", "Bearer workload-made-this-up")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/bearer");
    let auth: Vec<_> = seen
        .headers()
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .collect();
    assert_eq!(auth.len(), 1, "exactly one Authorization upstream: {seen}");
    assert_eq!(auth[0].1, format!("Bearer {OPENAI}"), "{seen}");
    assert_eq!(
        injected(&px, "/anything/bearer"),
        json!([{"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]}])
    );

    // Basic with the base64 helper: base64("x-access-token:" + value).
    Curl::get("https://httpbin.test/anything/basic")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/basic");
    let expected = format!("Basic {}", b64(&format!("x-access-token:{GH_TOKEN}")));
    assert_eq!(
        seen.header("authorization"),
        Some(expected.as_str()),
        "{seen}"
    );
    assert_eq!(
        injected(&px, "/anything/basic"),
        json!([{"secret": "GITHUB_TOKEN", "locations": ["header:Authorization"]}])
    );

    // Casing on the wire: as written in the config, even though the workload sent another
    // spelling; other headers keep the workload's spelling. HTTP/1.1 to the upstream needs the
    // plain listener: over TLS the proxy speaks h2 to an upstream that offers it, and h2
    // lowercases every name.
    Curl::get("http://httpbin.test/anything/case")
        .args(["-X", "POST", "-d", "x=1"])
        .header("x-vendor-api-KEY", "workload-value")
        .header("X-Workload-Header", "kept")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/case");
    assert_eq!(seen.http_version(), "HTTP/1.1", "{seen}");
    let names: Vec<&str> = seen.headers().into_iter().map(|(k, _)| k).collect();
    let vendor: Vec<_> = seen
        .headers()
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-vendor-api-key"))
        .collect();
    assert_eq!(
        vendor,
        vec![("X-Vendor-API-key", API_KEY)],
        "configured casing, one value: {names:?}"
    );
    assert!(
        names.contains(&"X-Workload-Header"),
        "the workload's casing is kept: {names:?}"
    );
    // A GET does not match the POST-only rule: nothing injected.
    Curl::get("https://httpbin.test/anything/case")
        .via(&px)
        .run()
        .expect_status(200);
    let get = up.wait_for_request(|r| r.path() == "/anything/case" && r.method() == "GET");
    assert_eq!(get.header("x-vendor-api-key"), None, "{get}");

    // Query parameter: added (percent-encoded), an existing one replaced, the rest kept.
    Curl::get("https://httpbin.test/anything/query?api_key=forged&x=1&y=a%20b")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/query");
    assert_eq!(
        seen.0["args"],
        json!({"api_key": QUERY_KEY, "x": "1", "y": "a b"}),
        "{seen}"
    );
    assert!(
        seen.0["url"].as_str().unwrap_or("").contains("x=1&y=a%20b"),
        "other parameters byte for byte: {seen}"
    );
    assert_eq!(
        injected(&px, "/anything/query"),
        json!([{"secret": "QUERY_KEY", "locations": ["query:api_key"]}])
    );

    assert_no_leak(
        &px,
        &[
            OPENAI,
            GH_TOKEN,
            API_KEY,
            QUERY_KEY,
            &b64(&format!("x-access-token:{GH_TOKEN}")),
        ],
    );
}

/// An upstream that reflects the request in its response headers (here: every query pair
/// becomes a header, as a redirect keeping the query would carry it) does not hand the
/// injected credential back: the header has `[redacted]`, in whatever URL form it came, and
/// the response trace names it.
#[test]
fn a_credential_reflected_in_response_headers_is_redacted() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: QUERY_KEY}
          inject:
            query_param: "api_key"
          rules:
            - host: "httpbin.test"
              paths: ["/response-headers"]
"#,
    )
    .resolver(&net)
    .env("QUERY_KEY", "real-reflected-key/42+x")
    .start();
    let r = Curl::get("https://httpbin.test/response-headers?x-kept=visible")
        .via(&px)
        .run();
    r.expect_status(200);
    assert_eq!(r.header("api_key"), Some("[redacted]"), "{r}");
    assert_eq!(r.header("x-kept"), Some("visible"), "{r}");
    assert!(
        !r.headers
            .iter()
            .any(|(_, v)| v.contains("real-reflected-key")),
        "{r}"
    );
    // The body echoes it too (this endpoint writes the pairs as JSON): masked there as well.
    assert!(!r.body.contains("real-reflected-key"), "{}", r.body);
    assert!(r.body.contains("[redacted]"), "{}", r.body);
    let rec = px.wait_for_audit(|a| a.path() == Some("/response-headers"));
    let redacted = rec
        .response_transforms()
        .iter()
        .find(|t| t["name"] == "secrets")
        .map(|t| t["annotations"]["response_redacted"].clone());
    assert_eq!(redacted, Some(json!(["api_key"])), "{rec}");
    assert_no_leak(&px, &["real-reflected-key"]);
}

/// The same for a WebSocket handshake: the upstream (like node's `ws`) answers with the first
/// subprotocol offered, which `secrets` replaced with the real credential; the 101 the client
/// gets has it redacted, as any response would (before, the 101 skipped the response phase).
#[test]
fn a_credential_reflected_in_a_websocket_101_is_redacted() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("ws.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["ws.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: WS_KEY}
          replace:
            proxy_value: "placeholder-ws-token"
            match_headers: ["sec-websocket-protocol"]
          rules:
            - host: "ws.test"
"#,
    )
    .resolver(&net)
    .env("WS_KEY", "real-ws-subprotocol-key-42")
    .start();
    let r = Curl::get("https://ws.test/ws")
        .args(["--http1.1"])
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "placeholder-ws-token, chat")
        .max_time(5)
        .via(&px)
        .run();
    assert_eq!(r.status, 101, "{r}");
    assert_eq!(
        r.header("sec-websocket-protocol"),
        Some("[redacted]"),
        "{r}"
    );
    assert!(
        !r.headers
            .iter()
            .any(|(_, v)| v.contains("real-ws-subprotocol-key")),
        "{r}"
    );
    let rec = px.wait_for_audit_within(Duration::from_secs(20), |a| a.path() == Some("/ws"));
    assert_eq!(rec.status_code(), Some(101), "{rec}");
    let redacted = rec
        .response_transforms()
        .iter()
        .find(|t| t["name"] == "secrets")
        .map(|t| t["annotations"]["response_redacted"].clone());
    assert_eq!(redacted, Some(json!(["sec-websocket-protocol"])), "{rec}");
    assert_no_leak(&px, &["real-ws-subprotocol-key"]);
}
