//! A reload re-reads the secret sources it keeps (`aws_sm` on moto, `ttl: 0`): a value rotated
//! in the store is in service after the reload; a re-read that fails keeps the last good value,
//! warns naming the source, and `iron_proxy_secret_stale_seconds` says for how long it has
//! been stale.

use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::json;

use super::assert_no_leak;

const V1: &str = "sk-reread-v1-41d7";
const V2: &str = "sk-reread-v2-8e0c";

const CONFIG: &str = r#"
management:
  listen: auto
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
            secret_id: "e2e/reread"
            json_key: "api_key"
          replace:
            proxy_value: "pk-proxy-reread"
            match_headers: ["x-api-key"]
            require: true
          rules:
            - host: "httpbin.test"
log:
  level: "debug"
  format: "json"
"#;

/// What the upstream saw in `x-api-key` for a fresh request carrying the placeholder.
fn swapped(px: &ProxyProcess, up: &UpstreamHandle) -> String {
    let marker = format!("{}", up.requests().len());
    Curl::get(&format!("https://httpbin.test/anything/reread?n={marker}"))
        .header("x-api-key", "pk-proxy-reread")
        .via(px)
        .run()
        .expect_status(200);
    let seen = up
        .wait_for_request(|r| r.path() == "/anything/reread" && r.0["args"]["n"] == json!(marker));
    seen.header("x-api-key").unwrap_or("").to_string()
}

fn reload(px: &ProxyProcess) -> serde_json::Value {
    let r = Curl::get(&format!("http://{}/v1/reload", px.management_addr()))
        .args(["-X", "POST"])
        .header("Authorization", "Bearer mgmt-e2e-reread-key")
        .run();
    assert_eq!(r.status, 200, "reload: {r}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("reload answer {e}: {r}"))
}

fn stale(px: &ProxyProcess) -> Option<f64> {
    px.metric(
        "iron_proxy_secret_stale_seconds",
        &[("source", "aws_sm"), ("name", "e2e/reread")],
    )
}

/// Before, a `ttl: 0` source was read once at startup and never again: the rotated secret
/// needed a restart, and nothing said so. Now the reload re-reads it (the answer counts the
/// sources re-read) and the new value is swapped in; with the store down, the reload still
/// succeeds, the last good value stays in service, the log names the source (not the value),
/// and the stale gauge (0 until then) grows.
#[test]
fn a_reload_rereads_the_secrets_it_keeps() {
    require_root!();
    let mut moto = Moto::start();
    moto.boto(
        &format!("sm.create_secret(Name='e2e/reread', SecretString='{{\"api_key\": \"{V1}\"}}')"),
        &[],
    );
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut p = Proxy::with(CONFIG)
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", "mgmt-e2e-reread-key");
    for (k, v) in moto.env() {
        p = p.env(k, &v);
    }
    let px = p.start();
    assert_eq!(swapped(&px, &up), V1);
    assert_eq!(stale(&px), Some(0.0), "fresh");

    moto.boto(
        &format!(
            "sm.put_secret_value(SecretId='e2e/reread', SecretString='{{\"api_key\": \"{V2}\"}}')"
        ),
        &[],
    );
    let answer = reload(&px);
    assert_eq!(answer["secrets_reread"], json!(1), "{answer}");
    // The re-read runs in the background; the old value serves until it lands.
    wait_until(
        Duration::from_secs(10),
        "the rotated value after the reload",
        || (swapped(&px, &up) == V2).then_some(()),
    );

    moto.stop();
    reload(&px);
    let warned = px.wait_for_log(|l| {
        l.contains("re-reading the secret after the reload failed") && l.contains("e2e/reread")
    });
    assert!(!warned.contains(V2), "{warned}");
    assert_eq!(
        swapped(&px, &up),
        V2,
        "the last good value stays in service"
    );
    wait_until(Duration::from_secs(10), "the stale gauge to grow", || {
        stale(&px).filter(|s| *s >= 1.0)
    });
    assert_no_leak(&px, &[V1, V2]);
}
