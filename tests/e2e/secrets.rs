//! Static secrets through the real binary and MITM: the quickstart's five requests, inject
//! formatters and wire casing, every replace location, `require`, fail-closed on a secret that
//! cannot be resolved, and AWS Secrets Manager / Parameter Store sources against moto.
//!
//! Each test ends with a leak scan: the proxy's whole output (logs and audit) holds none of
//! the real values, although the upstream saw them.

mod aws;

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
    assert!(
        echo.to_string().contains(OPENAI),
        "httpbin echoes the real key: {echo}"
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
        px.logs().iter().any(|l| l.contains("TRACE")),
        "IRON_LOG_FILTER=trace took effect"
    );
    assert_no_leak(&px, &[OPENAI, INTERNAL]);
}

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

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

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
