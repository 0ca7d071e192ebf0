//! `aws_sm` and `aws_ssm` sources against moto's server on loopback: `json_key`, a SecureString
//! parameter, a rotation picked up after `ttl`, a secret the backend does not have (fail
//! closed), and a backend that goes down (the last good value stays in service); then the
//! shapes of secret Secrets Manager stores (`SecretBinary`, multibyte text, 64 KiB), each
//! read as boto3 reads it.
//!
//! The proxy's secret backend client dials directly (backend traffic is the proxy's own, not
//! subject to `upstream_deny_cidrs`), so a loopback moto is reachable while the workload's
//! traffic still goes to the fake internet.

use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::json;

use super::assert_no_leak;

/// A proxy with the AWS environment pointing at `moto` and nowhere else.
fn proxy(moto: &Moto, config: &str, net: &FakeInternet) -> ProxyProcess {
    let mut p = Proxy::with(config).resolver(net);
    for (k, v) in moto.env() {
        p = p.env(k, &v);
    }
    // Every crate at TRACE (the backend HTTP client too) for the leak scan.
    p.env("IRON_LOG_FILTER", "trace").start()
}

const SM_V1: &str = "sk-ant-real-v1-5c1e";
const SM_V2: &str = "sk-ant-real-v2-9f3a";
const SM_OTHER: &str = "other-field-never-used";
const SSM_VALUE: &str = "sk-openai-from-ssm-7d2b";

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source:
            type: aws_sm
            secret_id: "e2e/anthropic"
            json_key: "api_key"
            ttl: 2s
          replace:
            proxy_value: "pk-proxy-anthropic"
            match_headers: ["x-api-key"]
            require: true
          rules:
            - host: "httpbin.test"
              paths: ["/anything/sm"]
        - source:
            type: aws_sm
            secret_id: "e2e/does-not-exist"
          inject:
            header: "X-Missing"
          rules:
            - host: "httpbin.test"
              paths: ["/anything/missing"]
        - source:
            type: aws_ssm
            name: "/myapp/openai-key"
            with_decryption: true
          replace:
            proxy_value: "pk-proxy-openai-param"
            match_headers: ["Authorization"]
          rules:
            - host: "httpbin.test"
              paths: ["/anything/ssm"]
log:
  level: "debug"
"#;

/// What the upstream saw in `header` for a fresh request to `path` carrying `placeholder`.
fn swap_through(
    px: &ProxyProcess,
    up: &UpstreamHandle,
    path: &str,
    header: &str,
    placeholder: &str,
) -> String {
    let marker = format!("{}", up.requests().len());
    Curl::get(&format!("https://httpbin.test{path}?n={marker}"))
        .header(header, placeholder)
        .via(px)
        .run()
        .expect_status(200);
    let seen = up.wait_for_request(|r| r.path() == path && r.0["args"]["n"] == json!(marker));
    seen.header(header).unwrap_or("").to_string()
}

#[test]
fn aws_secrets_manager_and_parameter_store_through_moto() {
    require_root!();
    let mut moto = Moto::start();
    moto.boto(&format!(
        "sm.create_secret(Name='e2e/anthropic', SecretString='{{\"api_key\": \"{SM_V1}\", \"other\": \"{SM_OTHER}\"}}')\n\
         ssm.put_parameter(Name='/myapp/openai-key', Value='Bearer {SSM_VALUE}', Type='SecureString')"
    ), &[]);
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = proxy(&moto, CONFIG, &net);

    // Secrets Manager with json_key.
    assert_eq!(
        swap_through(&px, &up, "/anything/sm", "x-api-key", "pk-proxy-anthropic"),
        SM_V1
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/sm"));
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "e2e/anthropic", "locations": ["header:x-api-key"]}])),
        "{rec}"
    );

    // Parameter Store, SecureString decrypted; the whole header value is the placeholder.
    assert_eq!(
        swap_through(
            &px,
            &up,
            "/anything/ssm",
            "Authorization",
            "pk-proxy-openai-param"
        ),
        format!("Bearer {SSM_VALUE}")
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/ssm"));
    assert_eq!(
        rec.annotation("secrets", "swapped"),
        Some(&json!([{"secret": "/myapp/openai-key", "locations": ["header:Authorization"]}])),
        "{rec}"
    );

    // Rotate in Secrets Manager: requests pick up the new value after the 2 s ttl, and every
    // request in between carries either the old or the new value, never the placeholder.
    moto.boto(
        &format!(
        "sm.put_secret_value(SecretId='e2e/anthropic', SecretString='{{\"api_key\": \"{SM_V2}\"}}')"
    ),
        &[],
    );
    wait_until(
        Duration::from_secs(15),
        "the rotated secret to be used",
        || {
            let v = swap_through(&px, &up, "/anything/sm", "x-api-key", "pk-proxy-anthropic");
            assert!(v == SM_V1 || v == SM_V2, "unexpected value upstream: {v:?}");
            (v == SM_V2).then_some(())
        },
    );

    // A secret the backend does not have: fail closed, the cause named, nothing forwarded.
    let r = Curl::get("https://httpbin.test/anything/missing")
        .via(&px)
        .run();
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/missing"));
    assert_eq!(rec.str("reason"), Some("secret_unavailable"), "{rec}");
    let error = rec.str("error").unwrap_or_default();
    assert!(
        error.contains("e2e/does-not-exist") && error.contains("ResourceNotFound"),
        "{rec}"
    );
    up.assert_no_request(|r| r.path() == "/anything/missing");

    // The backend goes down: refreshes fail, the last good value stays in service.
    moto.stop();
    px.wait_for_log(|l| {
        l.contains("secret refresh failed; serving the last good value")
            && l.contains("e2e/anthropic")
    });
    assert_eq!(
        swap_through(&px, &up, "/anything/sm", "x-api-key", "pk-proxy-anthropic"),
        SM_V2
    );

    up.assert_no_request(|r| r.0.to_string().contains("pk-proxy-"));
    assert_no_leak(&px, &[SM_V1, SM_V2, SM_OTHER, SSM_VALUE]);
}

const UNICODE: &str = "clé-🔑-секрет-密钥-e2e-7c1d";
const BINARY_TEXT: &str = "bin-ключ-🗝-e2e-4a9f";
const NOT_TEXT: &[u8] = b"\xff\xfe-not-text-e2e-3b2c";

/// 64 KiB, the largest secret Secrets Manager stores.
fn large() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut v = b"large-e2e-".to_vec();
    v.extend((v.len()..65_536).map(|i| alphabet[(i * 7 + i / 36) % alphabet.len()]));
    String::from_utf8(v).expect("ASCII")
}

const SHAPES: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: aws_sm, secret_id: "e2e/unicode"}
          replace: {proxy_value: "pk-unicode", match_headers: [], match_body: true}
          rules: [{host: "httpbin.test", paths: ["/anything/unicode"]}]
        - source: {type: aws_sm, secret_id: "e2e/binary"}
          replace: {proxy_value: "pk-binary", match_headers: [], match_body: true}
          rules: [{host: "httpbin.test", paths: ["/anything/binary"]}]
        - source: {type: aws_sm, secret_id: "e2e/large"}
          replace: {proxy_value: "pk-large", match_headers: [], match_body: true}
          rules: [{host: "httpbin.test", paths: ["/anything/large"]}]
        - source: {type: aws_sm, secret_id: "e2e/not-text"}
          replace: {proxy_value: "pk-not-text", match_headers: [], match_body: true}
          rules: [{host: "httpbin.test", paths: ["/anything/not-text"]}]
"#;

/// The shapes of secret the existing tests do not store: `SecretBinary` (UTF-8 text, and bytes
/// that are not), a `SecretString` of multibyte characters, and one of 64 KiB. What the proxy
/// puts in the request body is what boto3 reads from moto; a binary secret that is not text
/// fails closed, its bytes in no log; and the upstream's echo of each value is masked in the
/// answer the client gets.
#[test]
fn aws_secret_shapes_through_moto() {
    require_root!();
    let moto = Moto::start();
    let scratch = paths::scratch_dir("sm-shapes");
    let large = large();
    let files = [
        ("unicode", UNICODE.as_bytes()),
        ("binary", BINARY_TEXT.as_bytes()),
        ("large", large.as_bytes()),
        ("not-text", NOT_TEXT),
    ];
    for (name, bytes) in files {
        std::fs::write(scratch.path().join(name), bytes).expect("writing a value");
    }
    moto.boto(
        "import os\n\
         d = sys.argv[2]\n\
         val = lambda n: open(os.path.join(d, n), 'rb').read()\n\
         sm.create_secret(Name='e2e/unicode', SecretString=val('unicode').decode())\n\
         sm.create_secret(Name='e2e/binary', SecretBinary=val('binary'))\n\
         sm.create_secret(Name='e2e/large', SecretString=val('large').decode())\n\
         sm.create_secret(Name='e2e/not-text', SecretBinary=val('not-text'))\n\
         got = lambda i: sm.get_secret_value(SecretId=i)\n\
         assert got('e2e/unicode')['SecretString'] == val('unicode').decode()\n\
         assert got('e2e/binary')['SecretBinary'] == val('binary')\n\
         assert got('e2e/large')['SecretString'] == val('large').decode()\n\
         assert got('e2e/not-text')['SecretBinary'] == val('not-text')",
        &[scratch.path().to_str().expect("a UTF-8 path")],
    );
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = proxy(&moto, SHAPES, &net);

    for (path, placeholder, value) in [
        ("/anything/unicode", "pk-unicode", UNICODE),
        ("/anything/binary", "pk-binary", BINARY_TEXT),
        ("/anything/large", "pk-large", large.as_str()),
    ] {
        let r = Curl::get(&format!("https://httpbin.test{path}"))
            .args(["-X", "POST", "--data-binary", placeholder])
            .via(&px)
            .run();
        assert_eq!(r.status, 200, "{path}: {r}");
        let seen = up.wait_for_request(|r| r.path() == path);
        assert_eq!(seen.0["body_len"], json!(value.len()), "{path}");
        assert!(
            seen.body() == value,
            "{path}: the upstream got another value"
        );
        assert!(
            !r.body.contains(value),
            "{path}: the upstream's echo of the value reached the client"
        );
    }

    let r = Curl::get("https://httpbin.test/anything/not-text")
        .args(["-X", "POST", "--data-binary", "pk-not-text"])
        .via(&px)
        .run();
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/not-text"));
    assert_eq!(rec.str("reason"), Some("secret_unavailable"), "{rec}");
    let error = rec.str("error").unwrap_or_default();
    assert!(error.contains("SecretBinary is not UTF-8 text"), "{rec}");
    up.assert_no_request(|r| r.path() == "/anything/not-text");

    assert_no_leak(
        &px,
        &[UNICODE, BINARY_TEXT, &large[..64], "not-text-e2e-3b2c"],
    );
}

/// A reload that changes only a source's `ttl` keeps its cached value: with Secrets Manager
/// down at the moment of the reload, requests after it are still served the value fetched
/// before (before, `ttl` was part of the cache's identity: the reloaded config started from
/// an empty cache and every request failed, 502 `secret_unavailable`).
#[test]
fn a_reload_that_changes_only_the_ttl_keeps_the_secret() {
    require_root!();
    let mut moto = Moto::start();
    moto.boto(
        &format!("sm.create_secret(Name='e2e/ttl', SecretString='{{\"api_key\": \"{SM_V1}\"}}')"),
        &[],
    );
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let config = |ttl: &str, listen: &str| {
        format!(
            r#"
management:{listen}
  api_key_env: IRON_E2E_MGMT_KEY
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source:
            type: aws_sm
            secret_id: "e2e/ttl"
            json_key: "api_key"
            ttl: {ttl}
          replace:
            proxy_value: "pk-proxy-ttl"
            match_headers: ["x-api-key"]
            require: true
          rules:
            - host: "httpbin.test"
"#
        )
    };
    let mut p = Proxy::with(config("1h", "\n  listen: auto").as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", "mgmt-e2e-ttl-key");
    for (k, v) in moto.env() {
        p = p.env(k, &v);
    }
    let mut px = p.start();
    assert_eq!(
        swap_through(&px, &up, "/anything/ttl", "x-api-key", "pk-proxy-ttl"),
        SM_V1
    );

    moto.stop();
    px.rewrite_config(config("2h", ""));
    let r = Curl::get(&format!("http://{}/v1/reload", px.management_addr()))
        .args(["-X", "POST"])
        .header("Authorization", "Bearer mgmt-e2e-ttl-key")
        .run();
    assert_eq!(r.status, 200, "reload: {r}");
    assert_eq!(
        swap_through(&px, &up, "/anything/ttl", "x-api-key", "pk-proxy-ttl"),
        SM_V1,
        "the value fetched before the reload"
    );
    assert_no_leak(&px, &[SM_V1]);
}
