//! `rules[].schemes`: a credential scoped to `schemes: [https]` is applied to
//! requests the proxy forwards over TLS (`https_listen`, a MITM'd CONNECT) and
//! never to the same request over plain HTTP (`http_listen`, an `http://`
//! request through the tunnel listener), which goes upstream without the
//! injected header, and with a replace placeholder unreplaced (`require` does
//! not refuse it: the entry does not apply).

use iron_proxy_tests::*;
use serde_json::json;

use super::{assert_no_leak, OPENAI};

const REPLACED: &str = "real-replaced-key-77";

const HTTPS_ONLY: &str = r#"
proxy:
  tunnel_listen: auto
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
              paths: ["/anything/inject/*"]
              schemes: [https]
        - source: {type: env, var: REPLACED_KEY}
          replace:
            proxy_value: "pk-proxy-replaced"
            match_headers: ["X-Api-Key"]
            require: true
          rules:
            - host: "httpbin.test"
              paths: ["/anything/replace/*"]
              schemes: [HTTPS]
log:
  level: "debug"
"#;

#[test]
fn an_https_only_secret_is_applied_over_tls_and_never_over_plain_http() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(HTTPS_ONLY)
        .resolver(&net)
        .env("OPENAI_API_KEY", OPENAI)
        .env("REPLACED_KEY", REPLACED)
        .start();
    let bearer = format!("Bearer {OPENAI}");

    // Over TLS: https_listen and a MITM'd CONNECT tunnel get the credential.
    for (curl, path) in [
        (
            Curl::get("https://httpbin.test/anything/inject/listen").via(&px),
            "/anything/inject/listen",
        ),
        (
            Curl::get("https://httpbin.test/anything/inject/connect").through_connect(&px),
            "/anything/inject/connect",
        ),
    ] {
        curl.run().expect_status(200);
        let seen = up.wait_for_request(|r| r.path() == path);
        assert_eq!(
            seen.header("authorization"),
            Some(bearer.as_str()),
            "{seen}"
        );
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(
            rec.annotation("secrets", "injected"),
            Some(&json!([{"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]}])),
            "{rec}"
        );
    }
    Curl::get("https://httpbin.test/anything/replace/tls")
        .header("X-Api-Key", "pk-proxy-replaced")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/replace/tls");
    assert_eq!(seen.header("x-api-key"), Some(REPLACED), "{seen}");

    // Plain HTTP: http_listen and an `http://` request through the tunnel
    // listener go upstream without the credential, and are not refused.
    for (curl, path) in [
        (
            Curl::get("http://httpbin.test/anything/inject/plain").via(&px),
            "/anything/inject/plain",
        ),
        (
            Curl::get("http://httpbin.test/anything/inject/forward").through_connect(&px),
            "/anything/inject/forward",
        ),
    ] {
        curl.header("Authorization", "Bearer workload-value")
            .run()
            .expect_status(200);
        let seen = up.wait_for_request(|r| r.path() == path);
        assert_eq!(seen.sni(), None, "plain HTTP upstream: {seen}");
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer workload-value"),
            "the workload's own header, not the secret: {seen}"
        );
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(rec.annotation("secrets", "injected"), None, "{rec}");
    }
    // Replace: the placeholder reaches the upstream as it is (it is not the
    // secret), and `require` does not refuse a request its entry does not cover.
    Curl::get("http://httpbin.test/anything/replace/plain")
        .header("X-Api-Key", "pk-proxy-replaced")
        .via(&px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == "/anything/replace/plain");
    assert_eq!(
        seen.header("x-api-key"),
        Some("pk-proxy-replaced"),
        "{seen}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/replace/plain"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.annotation("secrets", "swapped"), None, "{rec}");

    up.assert_no_request(|r| {
        r.sni().is_none()
            && (r.0.to_string().contains(OPENAI) || r.0.to_string().contains(REPLACED))
    });
    assert_no_leak(&px, &[OPENAI, REPLACED]);
}
