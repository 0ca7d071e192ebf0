//! Replace mode: regex header matching, `Authorization: Basic`, body and path swaps, several
//! secrets on one request, `require`, and fail-closed on a secret that cannot be resolved.

use iron_proxy_tests::*;
use serde_json::json;

use super::{assert_no_leak, b64};

const REGEX_REAL: &str = "real-service-token-77";
const BODY_REAL: &str = "real-body-secret-88";
const PATH_REAL: &str = "123456:real/bot-token";
const REQUIRED_REAL: &str = "real-required-key-99";
const BASIC_REAL: &str = "real-basic-password-66";

/// Replace entries for every location, and a `require` entry on its own path.
const REPLACE: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: SERVICE_TOKEN}
          replace:
            proxy_value: "pk-proxy-service"
            match_headers: ["/^x-.*-token$/"]
          rules:
            - host: "httpbin.test"
        - source: {type: env, var: BODY_SECRET}
          replace:
            proxy_value: "pk-proxy-body"
            match_headers: ["X-Body-Key"]
            match_body: true
          rules:
            - host: "httpbin.test"
              methods: ["POST"]
        - source: {type: env, var: TELEGRAM_BOT_TOKEN}
          replace:
            proxy_value: "proxy-tg-token-123"
            match_headers: []
            match_path: true
          rules:
            - host: "httpbin.test"
              paths: ["/anything/bot*"]
        - source: {type: env, var: BASIC_PASSWORD}
          replace:
            proxy_value: "pk-proxy-basic"
            match_headers: ["Authorization"]
          rules:
            - host: "httpbin.test"
              paths: ["/anything/basic-auth"]
        - source: {type: env, var: REQUIRED_KEY}
          replace:
            proxy_value: "pk-proxy-required"
            match_headers: ["x-api-key"]
            require: true
          rules:
            - host: "httpbin.test"
              paths: ["/anything/required"]
log:
  level: "debug"
"#;

fn replace_proxy(net: &FakeInternet) -> ProxyProcess {
    Proxy::with(REPLACE)
        .resolver(net)
        .env("SERVICE_TOKEN", REGEX_REAL)
        .env("BODY_SECRET", BODY_REAL)
        .env("TELEGRAM_BOT_TOKEN", PATH_REAL)
        .env("REQUIRED_KEY", REQUIRED_REAL)
        .env("BASIC_PASSWORD", BASIC_REAL)
        .start()
}

#[test]
fn replace_in_regex_headers_body_path_and_several_at_once() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = replace_proxy(&net);

    // Regex header matching: X-Service-Token matches /^x-.*-token$/, X-Token-Hint does not,
    // so its placeholder goes through untouched.
    Curl::get("https://httpbin.test/anything/regex")
        .header("X-Service-Token", "pk-proxy-service")
        .header("X-Token-Hint", "pk-proxy-service")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/regex");
    assert_eq!(seen.header("x-service-token"), Some(REGEX_REAL), "{seen}");
    assert_eq!(
        seen.header("x-token-hint"),
        Some("pk-proxy-service"),
        "{seen}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/regex"));
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "SERVICE_TOKEN", "locations": ["header:X-Service-Token"]}])),
        "{rec}"
    );

    // Authorization: Basic is decoded, swapped and re-encoded.
    Curl::get("https://httpbin.test/anything/basic-auth")
        .args(["-u", "x-access-token:pk-proxy-basic"])
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/basic-auth");
    let basic = format!("Basic {}", b64(&format!("x-access-token:{BASIC_REAL}")));
    assert_eq!(seen.header("authorization"), Some(basic.as_str()), "{seen}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/basic-auth"));
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "BASIC_PASSWORD", "locations": ["header:Authorization"]}])),
        "{rec}"
    );

    // Body swap: Content-Length follows the new size.
    let body = r#"{"key":"pk-proxy-body","note":"pk-proxy-body twice"}"#;
    Curl::get("https://httpbin.test/anything/body")
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/body");
    let expected = body.replace("pk-proxy-body", BODY_REAL);
    assert_eq!(seen.body(), expected, "{seen}");
    assert_eq!(
        seen.header("content-length"),
        Some(expected.len().to_string().as_str()),
        "{seen}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/body"));
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "BODY_SECRET", "locations": ["body"]}])),
        "{rec}"
    );

    // Path swap (Telegram style); the audit keeps the workload's placeholder path.
    Curl::get("https://httpbin.test/anything/botproxy-tg-token-123/sendMessage")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path().ends_with("/sendMessage"));
    // Percent-encoded for one path segment: the '/' inside the token cannot split it.
    let encoded = PATH_REAL.replace('/', "%2F");
    assert_eq!(
        seen.path(),
        format!("/anything/bot{encoded}/sendMessage"),
        "{seen}"
    );
    let rec = px.wait_for_audit(|a| a.path().is_some_and(|p| p.ends_with("/sendMessage")));
    assert_eq!(
        rec.path(),
        Some("/anything/botproxy-tg-token-123/sendMessage"),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "TELEGRAM_BOT_TOKEN", "locations": ["path"]}])),
        "{rec}"
    );

    // Several secrets on one request, in config order.
    Curl::get("https://httpbin.test/anything/bot-multi/proxy-tg-token-123")
        .args(["-X", "POST", "--data-binary", "pk-proxy-body"])
        .header("X-Service-Token", "pk-proxy-service")
        .header("X-Body-Key", "pk-proxy-body")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path().starts_with("/anything/bot-multi/"));
    assert_eq!(seen.header("x-service-token"), Some(REGEX_REAL), "{seen}");
    assert_eq!(seen.header("x-body-key"), Some(BODY_REAL), "{seen}");
    assert_eq!(seen.body(), BODY_REAL, "{seen}");
    assert!(!seen.path().contains("proxy-tg-token-123"), "{seen}");
    let rec = px.wait_for_audit(|a| {
        a.path()
            .is_some_and(|p| p.starts_with("/anything/bot-multi/"))
    });
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([
            {"secret": "SERVICE_TOKEN", "locations": ["header:X-Service-Token"]},
            {"secret": "BODY_SECRET", "locations": ["header:X-Body-Key", "body"]},
            {"secret": "TELEGRAM_BOT_TOKEN", "locations": ["path"]},
        ])),
        "{rec}"
    );

    up.assert_no_request(|r| {
        let s = r.0.to_string();
        (s.contains("pk-proxy-body") || s.contains("proxy-tg-token-123"))
            && !r.path().ends_with("/regex")
    });
    assert_no_leak(
        &px,
        &[
            REGEX_REAL, BODY_REAL, PATH_REAL, &encoded, BASIC_REAL, &basic,
        ],
    );
}

#[test]
fn require_refuses_requests_without_the_proxy_token() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = replace_proxy(&net);

    // The workload tries its own credential: refused, never forwarded.
    let r = Curl::get("https://httpbin.test/anything/required")
        .header("X-Api-Key", "workload-own-key")
        .via(&px)
        .run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/required"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("secrets"), "{rec}");
    assert_eq!(rec.str("reason"), Some("proxy_token_missing"), "{rec}");
    assert_eq!(
        rec.annotation("secrets", "rejected"),
        Some(&json!("REQUIRED_KEY")),
        "{rec}"
    );
    up.assert_untouched();

    // With the token it goes through, swapped.
    Curl::get("https://httpbin.test/anything/required")
        .header("X-Api-Key", "pk-proxy-required")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/required");
    assert_eq!(seen.header("x-api-key"), Some(REQUIRED_REAL), "{seen}");
    assert_no_leak(&px, &[REQUIRED_REAL]);
}

/// Entries whose env var is unset.
const UNRESOLVABLE: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: IRON_E2E_UNSET_INJECT}
          inject:
            header: "Authorization"
            formatter: "Bearer {{ .Value }}"
          rules:
            - host: "httpbin.test"
              paths: ["/anything/inject"]
        - source: {type: env, var: IRON_E2E_UNSET_REPLACE}
          replace:
            proxy_value: "pk-proxy-unset"
            match_headers: []
          rules:
            - host: "httpbin.test"
"#;

#[test]
fn unresolvable_secret_fails_closed_and_never_forwards_the_placeholder() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(UNRESOLVABLE).resolver(&net).start();

    // Inject entry that matches: 502, not forwarded without the credential.
    let r = Curl::get("https://httpbin.test/anything/inject")
        .via(&px)
        .run();
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/inject"));
    assert_eq!(rec.action(), Some("error"), "{rec}");
    assert_eq!(rec.str("reason"), Some("secret_unavailable"), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("IRON_E2E_UNSET_INJECT")),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("secrets", "secret_unavailable"),
        Some(&json!("IRON_E2E_UNSET_INJECT")),
        "{rec}"
    );

    // Replace entry whose token is present: 502, the placeholder never leaves.
    let r = Curl::get("https://httpbin.test/anything/replace")
        .header("X-Whatever", "pk-proxy-unset")
        .via(&px)
        .run();
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/replace"));
    assert_eq!(rec.str("reason"), Some("secret_unavailable"), "{rec}");
    up.assert_untouched();

    // Replace entry whose token is absent does not need the value.
    Curl::get("https://httpbin.test/anything/plain")
        .via(&px)
        .run()
        .expect_status(200);
    up.wait_for_request(|r| r.path() == "/anything/plain");
    up.assert_no_request(|r| r.path() != "/anything/plain");
}
